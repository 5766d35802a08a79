"""What a receive returns: :class:`Message`, the bytes of a message with its priority.

A value type: it knows nothing of queues, and pickles by value. Also how the
helpers hand a received message back (:func:`message_at`).
"""

from __future__ import annotations

from typing import Any

from baseplate.message_queue.binding import lib
from baseplate.message_queue.checks import check_priority
from baseplate.message_queue.errors import PUBLIC_MODULE

# The helpers pack a received message's priority and length as
# priority << PACK_SHIFT | length (and errno, offsets and counts likewise); a
# result up to LENGTH_MASK is a bare length, of priority 0.
PACK_SHIFT: int = lib.BP_PACK_SHIFT
LENGTH_MASK = (1 << PACK_SHIFT) - 1


class Message(bytes):
    """A received message: its bytes, plus the ``priority`` it was sent with.

    It compares, hashes and slices like the :class:`bytes` it holds, while
    ``str(message)`` gives the UTF-8 text (undecodable bytes shown with
    backslash escapes) so that ``print("Got %s" % message)`` prints the text.
    It is built like bytes, ``Message(b"data")``; set ``priority`` afterwards.

    .. attribute:: priority
       :type: int
       :value: 0

       The priority the message was sent with (0 to ``PRIORITY_MAX - 1``).
    """

    priority: int = 0  # instances store their own only when it is not 0

    def __str__(self) -> str:
        return self.decode("utf-8", "backslashreplace")

    def __repr__(self) -> str:
        return f"Message({bytes.__repr__(self)}, priority={self.priority})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_message, (bytes(self), self.priority))


def _rebuild_message(data: bytes, priority: int) -> Message:
    """Unpickle a :class:`Message`."""
    message = Message(data)
    if priority:
        message.priority = check_priority(priority)
    return message


# Public, and pickled, as baseplate.message_queue.Message: pickles made by
# 1.0.0, where this module was baseplate/message_queue.py, load too.
Message.__module__ = _rebuild_message.__module__ = PUBLIC_MODULE


def message_at(view: Any, start: int, end: int) -> Message:
    """The message in ``view[start:stop]``, where ``end`` packs its priority
    above ``stop`` (the helpers' format)."""
    message = Message(view[start : end & LENGTH_MASK])
    if end > LENGTH_MASK:
        message.priority = end >> PACK_SHIFT
    return message
