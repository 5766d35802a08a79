"""Batches: :meth:`~MessageQueue.put_many` and :meth:`~MessageQueue.get_many`,
many messages in one call into C.

A mixin of :class:`~baseplate.message_queue.MessageQueue`. It reads the
queue's :class:`~baseplate.message_queue.handle.Handle` (the ``struct
bp_queue *``, name, sizes, closed flag), which the queue object gives it as
``_handle``, and owns one piece of state: its pool of batch buffers. Like
the single-message calls, each first attempt keeps the GIL and never blocks
(``bp_try_put_many``, ``bp_try_get_many``: at most 64 messages, and none
more once 64 KiB have moved); the rest calls ``bp_receive_many`` without
waiting, or waits in :mod:`~baseplate.message_queue.waiting`. It raises
:class:`MessageTooLargeError` for a batch itself.
"""

from __future__ import annotations

import errno
from collections import deque
from typing import Any, Iterable, List, Optional

from baseplate.message_queue import waiting
from baseplate.message_queue.binding import ffi, lib
from baseplate.message_queue.checks import (
    NOW,
    PRIORITY_MAX,
    TIMEOUT_MAX,
    TIMEOUT_MAX_INT,
    MessageData,
    as_buffer,
    check_count,
    check_priority,
    check_timeout,
    nbytes,
)
from baseplate.message_queue.errors import MessageTooLargeError, Wording, closed_error, worded
from baseplate.message_queue.handle import Handle
from baseplate.message_queue.message import LENGTH_MASK, PACK_SHIFT, Message, message_at

# put_many()'s default priority: a fast path tests `priority is _LOWEST` first.
_LOWEST = 0
# Largest receive buffer get_many() allocates per call (it loops for more).
_BATCH_BUFFER_MAX = 1 << 20
# Receive buffers are filled by the kernel: zeroing them first is wasted work.
_alloc = ffi.new_allocator(should_clear_after_alloc=False)
_unpack = ffi.unpack
# The first attempts, bound once: looking them up on `lib` costs on every call.
_bp_try_put_many = lib.bp_try_put_many
_bp_try_get_many = lib.bp_try_get_many

#: A batch buffer: (data buffer, a cffi buffer over it, its capacity, results
#: array, how many results it holds).
BatchBuffer = tuple[Any, Any, int, Any, int]


class BatchCalls:
    """The batch calls of :class:`~baseplate.message_queue.MessageQueue`."""

    #: The queue's handle, which the class mixing this in sets.
    _handle: Handle
    #: Batch buffers not in use, this mixin's own (set up by
    #: :meth:`_set_up_batches`): each call takes its own, so threads never
    #: share one, and puts it back, so none is allocated per call.
    _batch_buffers: deque[BatchBuffer]

    def _set_up_batches(self) -> None:
        """An empty pool of batch buffers."""
        self._batch_buffers = deque()

    def put_many(
        self, messages: Iterable[MessageData], timeout: Optional[float] = None, priority: int = 0
    ) -> int:
        """Send ``messages`` in order, with one call into C for the lot.

        Every message is checked first: if one has the wrong type or is too
        long, nothing is sent (the error's ``index`` says which). A single
        str or bytes is refused with :class:`TypeError`: use :meth:`put`. ``timeout``
        bounds the wait for room *for each message*, as it bounds the wait
        for the first message in :meth:`get_many`; when it runs out,
        :class:`TimedOutError` says in ``sent`` how many went out (and so
        does :class:`QueueClosedError` if the queue is closed meanwhile).

        :returns: the number of messages sent, i.e. all of them.
        """
        if type(messages) is list:
            batch: List[Any] = messages
        elif isinstance(messages, (str, bytes, bytearray, memoryview)):
            raise TypeError(
                f"put_many takes an iterable of messages, not one {type(messages).__name__}: "
                "use put() for a single message"
            )
        else:
            batch = list(messages)
        if priority is not _LOWEST and (
            type(priority) is not int or not 0 <= priority < PRIORITY_MAX
        ):
            priority = check_priority(priority)
        if timeout is not None and not (
            (type(timeout) is float and 0.0 <= timeout <= TIMEOUT_MAX)
            or (type(timeout) is int and 0 <= timeout <= TIMEOUT_MAX_INT)
        ):
            check_timeout(timeout)
        handle = self._handle
        if not batch:
            if handle.closed:
                raise closed_error(handle.name)
            return 0
        try:
            data = b"".join(batch)
        except TypeError:
            batch = [as_buffer(m, i) for i, m in enumerate(batch)]
            data = b"".join(batch)
        # len() counts bytes only for bytes and bytearray; any other buffer
        # (array('h'), ctypes...) says its size in bytes through memoryview.
        lengths = [len(m) if type(m) is bytes else nbytes(m) for m in batch]
        count = len(lengths)
        result = _bp_try_put_many(handle.raw, data, lengths, count, priority)
        if result == count:  # all sent, no errno
            return count
        if result >> PACK_SHIFT == errno.EMSGSIZE:  # checked in C before sending any
            index = result & LENGTH_MASK
            words = Wording(
                "message {index} of the batch has {size} bytes, more than queue {queue} "
                "allows (max_message_size={limit}); nothing was sent",
                index=index,
                size=lengths[index],
                queue=handle.name,
                limit=handle.msgsize,
            )
            raise worded(
                MessageTooLargeError(str(words), lengths[index], handle.msgsize, index), words
            )
        return waiting.send_batch(handle, data, lengths, priority, timeout, result)

    def get_many(self, max_count: int, timeout: Optional[float] = None) -> List[Message]:
        """Wait per ``timeout`` for one message, then take every message already
        waiting, up to ``max_count`` in all, in the order :meth:`get` would.

        Raises :class:`TimedOutError` only if no message came in time. An
        error after some messages were taken returns those; the next call
        raises it.
        """
        if type(max_count) is not int or max_count < 1:
            max_count = check_count(max_count, "max_count")
        if timeout is not None and not (
            (type(timeout) is float and 0.0 <= timeout <= TIMEOUT_MAX)
            or (type(timeout) is int and 0 <= timeout <= TIMEOUT_MAX_INT)
        ):
            check_timeout(timeout)
        batches = self._batch_buffers
        handle = self._handle
        try:
            batch = batches.pop()
        except IndexError:
            batch = _new_batch_buffer(handle)
        buf, view, capacity, results, slots = batch
        queue = handle.raw
        messages: List[Message] = []
        try:
            result = _bp_try_get_many(queue, buf, capacity, min(slots, max_count), results)
            while True:
                count = result & LENGTH_MASK
                if count:
                    start = 0
                    for end in _unpack(results, count):
                        if end <= LENGTH_MASK:  # priority 0, the common case
                            messages.append(Message(view[start:end]))
                            start = end
                        else:
                            messages.append(message_at(view, start, end))
                            start = end & LENGTH_MASK
                    if len(messages) == max_count:
                        return messages
                    if result >> PACK_SHIFT:
                        return messages  # drained, or an error for the next call
                    # The first attempt stopped at its own limits: take the
                    # rest with the GIL released (still without waiting).
                    want = min(slots, max_count - len(messages))
                    result = lib.bp_receive_many(queue, buf, capacity, want, NOW, results)
                elif messages:
                    return messages  # drained, or an error for the next call
                else:
                    result = waiting.receive_batch(
                        handle, batch, max_count, timeout, result >> PACK_SHIFT
                    )
        finally:
            batches.append(batch)


def _new_batch_buffer(handle: Handle) -> BatchBuffer:
    """Room for as many messages as the queue holds (at most about 1 MiB):
    (data buffer, a cffi buffer over it, its capacity, results array, how
    many results it holds).
    """
    slots = min(handle.maxmsg, max(1, _BATCH_BUFFER_MAX // handle.msgsize))
    capacity = slots * handle.msgsize
    data = _alloc("char[]", capacity)
    return (data, ffi.buffer(data), capacity, _alloc("long long[]", slots), slots)
