"""The exceptions of :mod:`baseplate.message_queue`, and :func:`error_for`,
the one place where an ``errno`` becomes one of them.

Every exception about a queue carries its name as data (``queue_name``), and
its message as :class:`Words`: a template whose queue names and arguments
each reader spells its own way. ``str(error)`` spells them as Python does
(``'/q'``, ``max_messages=11``); the command line as a shell does (``/q``,
``--max-messages 11``), without reading anything back out of the text.

To explain a refusal this module may read system facts
(:mod:`~baseplate.message_queue.system`); it never calls into a queue, and
loads no binding.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Dict, Optional, TypeVar

from baseplate.message_queue import system

PUBLIC_MODULE = "baseplate.message_queue"

#: Fields of a template that hold names the system supplies, which anyone may
#: choose: queue names, a suggested name, a path. Spelled as literals.
NAME_FIELDS = frozenset({"queue", "example", "path"})
#: Fields that hold a word the system supplies, such as a user's name: as is
#: when it is plain, else as a literal.
WORD_FIELDS = frozenset({"owner"})
#: Fields that hold an argument the caller gave, by its parameter's name.
ARGUMENT_FIELDS = frozenset(
    {"max_messages", "max_message_size", "mode", "priority", "timeout", "max_count"}
)


class Spelling:
    """How a reader writes the fields of :class:`Words`. This one is Python's:
    names as literals (``'/q'``), arguments as keywords (``max_messages=11``)."""

    def name(self, text: str) -> str:
        return repr(text)

    def word(self, text: str) -> str:
        plain = bool(text) and text.isprintable() and " " not in text
        return text if plain else repr(text)

    def argument(self, key: str, value: Any) -> str:
        return f"{key}={value:#o}" if key == "mode" else f"{key}={value!r}"


PYTHON = Spelling()


class Words:
    """A message whose names and arguments are fields of a ``str.format``
    template (:data:`NAME_FIELDS`, :data:`WORD_FIELDS`, :data:`ARGUMENT_FIELDS`;
    others are plain)."""

    __slots__ = ("fields", "template")

    def __init__(self, template: str, **fields: Any) -> None:
        self.template = template
        self.fields: Dict[str, Any] = fields

    def spelled(self, spelling: Spelling) -> str:
        """The message as ``spelling`` writes its fields."""
        written = {}
        for key, value in self.fields.items():
            if key in NAME_FIELDS:
                written[key] = spelling.name(value)
            elif key in WORD_FIELDS:
                written[key] = spelling.word(value)
            elif key in ARGUMENT_FIELDS:
                written[key] = spelling.argument(key, value)
            else:
                written[key] = value
        return self.template.format(**written)

    def __str__(self) -> str:
        return self.spelled(PYTHON)

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_words, (self.template, self.fields))


def _rebuild_words(template: str, fields: Dict[str, Any]) -> Words:
    return Words(template, **fields)


class MessageQueueError(Exception):
    """Base class of every error raised by this module.

    ``queue_name`` is the name of the queue it is about, as given (None when
    it is about no queue in particular).
    """

    queue_name: Optional[str] = None
    #: The message as :class:`Words`, for readers that spell names their own way.
    words: Optional[Words] = None


class TimedOutError(MessageQueueError):
    """The operation did not complete before its timeout.

    ``sent`` is the number of messages :meth:`MessageQueue.put_many` had sent
    before the timeout ran out (0 for other operations).
    """

    def __init__(self, message: str = "timed out", sent: int = 0) -> None:
        super().__init__(message)
        self.sent = sent


class InvalidParametersError(MessageQueueError, ValueError):
    """A parameter was rejected: by our checks, or by the kernel (``EINVAL``)."""


class QueueClosedError(MessageQueueError, ValueError):
    """The queue object was closed (perhaps by another thread while this call
    waited); its descriptor is no longer used.

    ``sent`` is the number of messages :meth:`MessageQueue.put_many` had sent
    before the close (0 for other operations).
    """

    def __init__(self, message: str = "queue is closed", sent: int = 0) -> None:
        super().__init__(message)
        self.sent = sent


class MessageTooLargeError(MessageQueueError, ValueError):
    """A message is longer than the queue's ``max_message_size``; it was not sent.

    ``size`` and ``max_message_size`` give both lengths in bytes; ``index`` is
    the message's position for :meth:`MessageQueue.put_many`, else ``None``.
    """

    def __init__(
        self, message: str, size: int, max_message_size: int, index: Optional[int] = None
    ) -> None:
        super().__init__(message)
        self.size = size
        self.max_message_size = max_message_size
        self.index = index


class MessageQueueOSError(MessageQueueError, OSError):
    """A system call failed; ``errno`` says why and the message says what to do."""


class QueueNotFoundError(MessageQueueOSError, FileNotFoundError):
    """The named queue does not exist (and was not to be created)."""


class QueueExistsError(MessageQueueOSError, FileExistsError):
    """The named queue already exists (``exclusive=True``)."""


class QueuePermissionError(MessageQueueOSError, PermissionError):
    """The queue's mode does not allow this user the requested access."""


# They are public as baseplate.message_queue.X: in tracebacks, reprs and pickles.
for _public in (
    MessageQueueError,
    TimedOutError,
    InvalidParametersError,
    QueueClosedError,
    MessageTooLargeError,
    MessageQueueOSError,
    QueueNotFoundError,
    QueueExistsError,
    QueuePermissionError,
):
    _public.__module__ = PUBLIC_MODULE


_Error = TypeVar("_Error", bound=MessageQueueError)


def about(error: _Error, words: Words) -> _Error:
    """``error``, built from ``str(words)``, given its words and its queue's name."""
    error.words = words
    error.queue_name = words.fields.get("queue")
    return error


def invalid(template: str, **fields: Any) -> InvalidParametersError:
    """An :class:`InvalidParametersError` worded by ``template``."""
    words = Words(template, **fields)
    return about(InvalidParametersError(str(words)), words)


def _os_error(cls: type[_Error], err: int, template: str, **fields: Any) -> _Error:
    """An error of an ``OSError`` class, with ``errno`` ``err``, worded by ``template``."""
    words = Words(template, **fields)
    return about(cls(err, str(words)), words)


def closed_error(name: str, sent: int = 0, was: bool = False) -> QueueClosedError:
    """The error for a call on a closed queue (``was``: closed while it waited)."""
    words = Words("queue {queue} " + ("was closed" if was else "is closed"), queue=name)
    return about(QueueClosedError(str(words), sent), words)


def error_for(
    err: int,
    name: str,
    operation: str,
    *,
    closed: bool = False,
    opened_for: Optional[str] = None,
    size: int = 0,
    max_messages: int = 0,
    max_message_size: int = 0,
) -> MessageQueueError:
    """Build the exception for ``errno`` ``err`` from ``operation`` on queue ``name``.

    ``closed`` and ``opened_for`` ("reading" or "writing" when the object was
    opened for one direction only) explain an ``EBADF`` from an object;
    ``size`` is the message's, the sizes those of the queue (asked for, when
    creating; else its own ``max_message_size``).
    """
    if err == errno.EBADF and closed:
        return closed_error(name)
    if err == errno.EBADF and opened_for is not None:
        return _os_error(
            QueuePermissionError,
            errno.EACCES,
            "cannot {operation} on queue {queue}: it was opened for {direction} only, "
            "because its mode does not grant this user both read and write access",
            operation=operation,
            queue=name,
            direction=opened_for,
        )
    if err == errno.EMSGSIZE:
        words = Words(
            "message of {size} bytes is longer than queue {queue} allows "
            "(max_message_size={limit}); nothing was sent",
            size=size,
            queue=name,
            limit=max_message_size,
        )
        return about(MessageTooLargeError(str(words), size, max_message_size), words)
    if err == errno.ENOENT:
        advice = "" if operation == "unlink" else ": create it first, or open it with create=True"
        return _os_error(
            QueueNotFoundError, err, "queue {queue} does not exist" + advice, queue=name
        )
    if err == errno.EEXIST:
        return _os_error(
            QueueExistsError, err, "queue {queue} already exists (exclusive=True)", queue=name
        )
    if err in (errno.EACCES, errno.EPERM):
        return _refused(err, name, operation)
    if operation == "create" and err == errno.EINVAL:
        return _invalid_sizes(name, max_messages, max_message_size)
    if operation == "create" and err in (errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.ENOMEM):
        return _no_room(err, name, max_messages, max_message_size)
    return _os_error(
        MessageQueueOSError,
        err,
        "{operation} on queue {queue} failed: {reason}",
        operation=operation,
        queue=name,
        reason=os.strerror(err),
    )


def _refused(err: int, name: str, operation: str) -> QueuePermissionError:
    """Permission denied: say whose queue it is, with what mode, and what to do."""
    owner = system.queue_owner(name)
    if owner is None:
        return _os_error(
            QueuePermissionError,
            err,
            "permission denied to {operation} queue {queue}: its mode does not allow this "
            "user (mount the mqueue file system to see its owner and mode: {mount}). A "
            "queue is shared by creating it with mode=0o660 (--mode 660) and giving it a "
            "group this user is in",
            operation=operation,
            queue=name,
            mount=system.MOUNT_COMMAND,
        )
    if owner.uid == os.geteuid():
        return _os_error(
            QueuePermissionError,
            err,
            "permission denied to {operation} queue {queue}: it is this user's own, but its "
            "mode {queue_mode:04o} does not allow even its owner to read and write it. Its owner "
            "may change that (chmod 600 {path}), or re-create the queue",
            operation=operation,
            queue=name,
            queue_mode=owner.mode,
            path=system.mqueue_path(name),
        )
    return _os_error(
        QueuePermissionError,
        err,
        "permission denied to {operation} queue {queue}: it belongs to {owner} (uid {uid}), "
        "gid {gid}, mode {queue_mode:04o}. To share a queue, its owner creates it with "
        "mode=0o660 (--mode 660) and gives it a group this user is in, or the consumer "
        "runs as {owner} too",
        operation=operation,
        queue=name,
        owner=owner.user or str(owner.uid),
        uid=owner.uid,
        gid=owner.gid,
        queue_mode=owner.mode,
    )


def _invalid_sizes(name: str, max_messages: int, max_message_size: int) -> InvalidParametersError:
    """Say which size the kernel refused on create, and which limit it hit.

    The fs.mqueue sysctls bind every process without CAP_SYS_RESOURCE in the
    initial user namespace, which includes root in most containers.
    """
    problems = []
    fields: Dict[str, Any] = {"queue": name}
    for what, value, sysctl, hard in (
        ("max_messages", max_messages, "msg_max", system.HARD_MSGMAX),
        ("max_message_size", max_message_size, "msgsize_max", system.HARD_MSGSIZEMAX),
    ):
        limit = system.read_sysctl(sysctl)
        fields[what] = value
        if value > hard:
            problems.append(
                f"{{{what}}} exceeds the kernel's hard limit of {hard}, which no setting raises"
            )
        elif limit is not None and value > limit:
            problems.append(
                f"{{{what}}} exceeds fs.mqueue.{sysctl}={limit}: ask for at most {limit}, "
                f"or raise the limit as root (sysctl -w fs.mqueue.{sysctl}={value})"
            )
    if not problems:
        problems.append("the kernel refused {max_messages}, {max_message_size} (EINVAL)")
    return invalid("cannot create queue {queue}: " + "; ".join(problems), **fields)


def _no_room(err: int, name: str, max_messages: int, max_message_size: int) -> MessageQueueOSError:
    """Explain EMFILE / ENFILE / ENOSPC / ENOMEM from mq_open."""
    if err == errno.EMFILE:
        descriptors = system.descriptors_exhausted()
        if descriptors is not None:
            return _os_error(
                MessageQueueOSError,
                err,
                "cannot open queue {queue}: this process has all {descriptors} of its file "
                "descriptors open (ulimit -n); close some or raise the limit",
                queue=name,
                descriptors=descriptors,
            )
        return _allowance_used(err, name, max_messages, max_message_size)
    if err == errno.ENOSPC:
        return _os_error(
            MessageQueueOSError,
            err,
            "cannot create queue {queue}: the system already has the most queues allowed "
            "(fs.mqueue.queues_max={limit}). Unlink unused queues (baseplate-mq ls lists "
            "them, once mqueue is mounted) or raise the limit as root",
            queue=name,
            limit=system.read_sysctl("queues_max"),
        )
    if err == errno.ENFILE:
        return _os_error(
            MessageQueueOSError,
            err,
            "cannot open queue {queue}: the system-wide limit on open files is reached",
            queue=name,
        )
    return _os_error(
        MessageQueueOSError,
        err,
        "cannot create queue {queue}: the kernel is out of memory for it",
        queue=name,
    )


def _allowance_used(
    err: int, name: str, max_messages: int, max_message_size: int
) -> MessageQueueOSError:
    """EMFILE for want of ``ulimit -q``: what this queue needs against the allowance."""
    needed = system.queue_bytes(max_messages, max_message_size)
    allowance = system.msgqueue_rlimit()
    fields = {
        "queue": name,
        "max_messages": max_messages,
        "max_message_size": max_message_size,
        "needed": needed,
        "allowance": allowance,
    }
    if needed > allowance:
        return _os_error(
            MessageQueueOSError,
            err,
            "cannot create queue {queue}: with {max_messages} and {max_message_size} it "
            "needs about {needed} bytes, more than this user's whole message queue allowance "
            "(RLIMIT_MSGQUEUE, ulimit -q = {allowance} bytes). Create a smaller queue, or "
            "raise the limit (ulimit -q, or LimitMSGQUEUE= for a systemd service)",
            **fields,
        )
    return _os_error(
        MessageQueueOSError,
        err,
        "cannot create queue {queue}: it needs about {needed} bytes of this user's message "
        "queue allowance (RLIMIT_MSGQUEUE, ulimit -q = {allowance} bytes), and the user's "
        "other queues (open in any process, unlinked or not) hold the rest. Unlink or close "
        "queues that are no longer needed, create a smaller one, or raise the limit (ulimit "
        "-q, or LimitMSGQUEUE= for a systemd service)",
        **fields,
    )
