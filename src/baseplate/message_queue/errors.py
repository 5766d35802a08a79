"""The exceptions of :mod:`baseplate.message_queue`, and :func:`error_for`,
the one place where an ``errno`` becomes one of them.

Every exception about a queue carries its name as data (``queue_name``), so
that a caller (the command line among them) never reads it back out of the
message. To explain a refusal this module may read system facts
(:mod:`~baseplate.message_queue.system`); it never calls into a queue, and
loads no binding.
"""

from __future__ import annotations

import errno
import os
from typing import Optional, TypeVar

from baseplate.message_queue import system

PUBLIC_MODULE = "baseplate.message_queue"


class MessageQueueError(Exception):
    """Base class of every error raised by this module.

    ``queue_name`` is the name of the queue it is about, as given (None when
    it is about no queue in particular).
    """

    queue_name: Optional[str] = None


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


def about(error: _Error, queue_name: Optional[str]) -> _Error:
    """``error``, marked as being about queue ``queue_name``."""
    error.queue_name = queue_name
    return error


def closed_error(name: str, sent: int = 0, was: bool = False) -> QueueClosedError:
    """The error for a call on a closed queue (``was``: closed while it waited)."""
    return about(QueueClosedError(f"queue {name!r} {'was' if was else 'is'} closed", sent), name)


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
    return about(
        _error_for(err, name, operation, closed, opened_for, size, max_messages, max_message_size),
        name,
    )


def _error_for(
    err: int,
    name: str,
    operation: str,
    closed: bool,
    opened_for: Optional[str],
    size: int,
    max_messages: int,
    max_message_size: int,
) -> MessageQueueError:
    if err == errno.EBADF:
        if closed:
            return QueueClosedError(f"queue {name!r} is closed")
        if opened_for is not None:
            return QueuePermissionError(
                errno.EACCES,
                f"cannot {operation} on queue {name!r}: it was opened for {opened_for} only, "
                "because its mode does not grant this user both read and write access",
            )
    if err == errno.EMSGSIZE:
        return MessageTooLargeError(
            f"message of {size} bytes is longer than queue {name!r} allows "
            f"(max_message_size={max_message_size}); nothing was sent",
            size,
            max_message_size,
        )
    if err == errno.ENOENT:
        advice = "" if operation == "unlink" else ": create it first, or open it with create=True"
        return QueueNotFoundError(err, f"queue {name!r} does not exist{advice}")
    if err == errno.EEXIST:
        return QueueExistsError(err, f"queue {name!r} already exists (exclusive=True)")
    if err in (errno.EACCES, errno.EPERM):
        return QueuePermissionError(
            err,
            f"permission denied to {operation} queue {name!r}: {system.owner_and_mode(name)} "
            "To share a queue, its owner creates it with mode=0o660 (--mode 660) and gives "
            "it a group this user is in, or runs the consumer as the same user",
        )
    if operation == "create" and err == errno.EINVAL:
        return InvalidParametersError(
            f"cannot create queue {name!r}: "
            + _explain_invalid_sizes(max_messages, max_message_size)
        )
    if operation == "create" and err in (errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.ENOMEM):
        return MessageQueueOSError(err, _explain_no_room(err, name, max_messages, max_message_size))
    return MessageQueueOSError(err, f"{operation} on queue {name!r} failed: {os.strerror(err)}")


def _explain_invalid_sizes(max_messages: int, max_message_size: int) -> str:
    """Say which size the kernel refused on create, and which limit it hit.

    The fs.mqueue sysctls bind every process without CAP_SYS_RESOURCE in the
    initial user namespace, which includes root in most containers.
    """
    problems = []
    for what, value, sysctl, hard in (
        ("max_messages", max_messages, "msg_max", system.HARD_MSGMAX),
        ("max_message_size", max_message_size, "msgsize_max", system.HARD_MSGSIZEMAX),
    ):
        limit = system.read_sysctl(sysctl)
        if value > hard:
            problems.append(
                f"{what}={value} exceeds the kernel's hard limit of {hard}, which no setting raises"
            )
        elif limit is not None and value > limit:
            problems.append(
                f"{what}={value} exceeds fs.mqueue.{sysctl}={limit}: ask for at most {limit}, "
                f"or raise the limit as root (sysctl -w fs.mqueue.{sysctl}={value})"
            )
    if not problems:
        problems.append(
            f"the kernel refused max_messages={max_messages}, "
            f"max_message_size={max_message_size} (EINVAL)"
        )
    return "; ".join(problems)


def _explain_no_room(err: int, name: str, max_messages: int, max_message_size: int) -> str:
    """Explain EMFILE / ENFILE / ENOSPC / ENOMEM from mq_open."""
    if err == errno.EMFILE:
        descriptors = system.descriptors_exhausted()
        if descriptors is not None:
            return (
                f"cannot open queue {name!r}: this process has all {descriptors} of its file "
                "descriptors open (ulimit -n); close some or raise the limit"
            )
        needed = system.queue_bytes(max_messages, max_message_size)
        return (
            f"cannot create queue {name!r}: it needs about {needed} bytes of this user's "
            f"message queue allowance (RLIMIT_MSGQUEUE, ulimit -q = {system.msgqueue_rlimit()} "
            "bytes), which the user's other queues have used up. Unlink queues that are no "
            "longer needed, create smaller ones, or raise the limit (ulimit -q, or "
            "LimitMSGQUEUE= for a systemd service)"
        )
    if err == errno.ENOSPC:
        queues_max = system.read_sysctl("queues_max")
        return (
            f"cannot create queue {name!r}: the system already has the most queues allowed "
            f"(fs.mqueue.queues_max={queues_max}). Unlink unused queues (see ls /dev/mqueue "
            "once mqueue is mounted there) or raise the limit as root"
        )
    if err == errno.ENFILE:
        return f"cannot open queue {name!r}: the system-wide limit on open files is reached"
    return f"cannot create queue {name!r}: the kernel is out of memory for it"
