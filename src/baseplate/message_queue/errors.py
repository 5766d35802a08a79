"""The exceptions of :mod:`baseplate.message_queue`, and their wording.

Every exception about a queue carries its name as data (``queue_name``), and
its message as :class:`Wording`: a template whose queue names and arguments
each reader spells its own way. ``str(error)`` spells them as Python does
(``'/q'``, ``max_messages=11``); the command line as a shell does (``/q``,
``--max-messages 11``), without reading anything back out of the text.

Pure data: it touches no system call, stream or other module's state, and
loads no binding. Which exception an ``errno`` becomes is decided in
:mod:`~baseplate.message_queue.diagnoses`.
"""

from __future__ import annotations

import errno
from typing import Any, Dict, Optional, TypeVar

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
    """How a reader writes the fields of :class:`Wording`. This one is Python's:
    names as literals (``'/q'``), arguments as keywords (``max_messages=11``)."""

    def name(self, text: str) -> str:
        return repr(text)

    def word(self, text: str) -> str:
        plain = bool(text) and text.isprintable() and " " not in text
        return text if plain else repr(text)

    def argument(self, key: str, value: Any) -> str:
        return f"{key}={value:#o}" if key == "mode" else f"{key}={value!r}"


PYTHON = Spelling()


class Wording:
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


def _rebuild_words(template: str, fields: Dict[str, Any]) -> Wording:
    """Unpickle a :class:`Wording` (the name pickles made by 2.0 hold)."""
    return Wording(template, **fields)


class MessageQueueError(Exception):
    """Base class of every error raised by this module.

    ``queue_name`` is the name of the queue it is about, as given (None when
    it is about no queue in particular).
    """

    queue_name: Optional[str] = None
    #: The message as :class:`Wording`, for readers that spell names their own way.
    words: Optional[Wording] = None


class TimedOutError(MessageQueueError, TimeoutError):
    """The operation did not complete before its timeout.

    Also a :class:`TimeoutError`, as socket's and asyncio's timeouts are: so
    an :class:`OSError` too, whose ``errno`` is ``ETIMEDOUT`` (``strerror``
    is None, and ``str(error)`` is the message).

    ``sent`` is the number of messages :meth:`MessageQueue.put_many` had sent
    before the timeout ran out (0 for other operations).
    """

    def __init__(self, message: str = "timed out", sent: int = 0) -> None:
        # OSError's own argument parsing would take (message, sent) for
        # (errno, strerror): a subclass that defines __init__ parses here,
        # given the message alone, so args is (message,) as in 2.0, and
        # pickles are the same both ways.
        super().__init__(message)
        self.errno = errno.ETIMEDOUT
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


def worded(error: _Error, words: Wording) -> _Error:
    """``error``, built from ``str(words)``, given its words and its queue's name."""
    error.words = words
    error.queue_name = words.fields.get("queue")
    return error


def invalid(template: str, **fields: Any) -> InvalidParametersError:
    """An :class:`InvalidParametersError` worded by ``template``."""
    words = Wording(template, **fields)
    return worded(InvalidParametersError(str(words)), words)


def os_error(cls: type[_Error], err: int, template: str, **fields: Any) -> _Error:
    """An error of an ``OSError`` class, with ``errno`` ``err``, worded by ``template``."""
    words = Wording(template, **fields)
    return worded(cls(err, str(words)), words)


def closed_error(name: str, sent: int = 0, was: bool = False) -> QueueClosedError:
    """The error for a call on a closed queue (``was``: closed while it waited)."""
    words = Wording("queue {queue} " + ("was closed" if was else "is closed"), queue=name)
    return worded(QueueClosedError(str(words), sent), words)
