"""Waiting on an asyncio event loop: the driver of :func:`~baseplate.message_queue.waiting.retries`
for :meth:`MessageQueue.get_async` and :meth:`MessageQueue.put_async`.

The loop watches the queue's descriptor through one reader (or writer) per
queue, loop and direction, shared by every task waiting there; each holds a
use of the queue, so the descriptor stays open while a loop watches it. This
module touches loops and the use-counting helpers; it never sends or
receives (the attempts it is handed do).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any, Optional

from baseplate.message_queue._mqueue import lib

from baseplate.message_queue.checks import NOW
from baseplate.message_queue.waiting import Attempt, retries

if TYPE_CHECKING:  # pragma: no cover
    import asyncio  # imported when first needed: most programs never are

    from baseplate.message_queue.waiting import Waitable

_monotonic_ns = time.monotonic_ns


async def receive(queue: Waitable, waits: AsyncWaits, data: Any, deadline: Any, err: int) -> int:
    """The rest of :meth:`MessageQueue.get_async`, once its first attempt failed
    with ``err``: (priority << shift) | length."""
    handle = queue._queue

    def attempt(may_wait: bool) -> int:
        return lib.bp_receive(handle, data, NOW)  # type: ignore[no-any-return]

    return await _wait(queue, waits, attempt, False, deadline, err)


async def send(
    queue: Waitable, waits: AsyncWaits, data: Any, priority: int, deadline: Any, err: int
) -> None:
    """The rest of :meth:`MessageQueue.put_async`, once its first attempt failed with ``err``."""
    handle, size = queue._queue, len(data)

    def attempt(may_wait: bool) -> int:
        return lib.bp_send(handle, data, size, priority, NOW)  # type: ignore[no-any-return]

    await _wait(queue, waits, attempt, True, deadline, err, size)


async def _wait(
    queue: Waitable,
    waits: AsyncWaits,
    attempt: Attempt,
    writable: bool,
    deadline: Any,
    err: int,
    size: int = 0,
) -> int:
    """Drive :func:`~baseplate.message_queue.waiting.retries` on the running event loop."""
    steps = retries(queue, attempt, writable, deadline, err, size, True)
    try:
        while True:
            await waits.until_ready(writable, next(steps))
    except StopIteration as done:
        result: int = done.value
        return result


class _AsyncReadiness:
    """One event-loop reader (or writer) per queue and loop, shared by all waiting tasks.

    ``loop.add_reader`` keeps a single callback per descriptor, so two tasks
    waiting on the same queue must share it: each wake-up resolves every
    waiting future, and the losers of the race simply wait again. It holds a
    use of the queue (``bp_hold``), so the descriptor the loop watches stays
    open until the loop's thread has stopped watching it.
    """

    __slots__ = ("fd", "loop", "queue", "waiters", "writable")

    def __init__(
        self, queue: Any, loop: asyncio.AbstractEventLoop, fd: int, writable: bool
    ) -> None:
        self.queue = queue
        self.loop = loop
        self.fd = fd
        self.writable = writable
        self.waiters: list[asyncio.Future[None]] = []
        if writable:
            loop.add_writer(fd, self.wake)
        else:
            loop.add_reader(fd, self.wake)

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def stop(self) -> None:
        """Stop watching (in the loop's thread) and give the use back; once."""
        if self.queue is None:
            return
        if self.writable:
            self.loop.remove_writer(self.fd)
        else:
            self.loop.remove_reader(self.fd)
        queue, self.queue = self.queue, None
        lib.bp_unhold(queue)

    def shut(self, error: BaseException) -> None:
        """The queue was closed: fail every waiting task, and stop."""
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self.stop()

    def shut_from_any_thread(self, error: BaseException) -> None:
        """:meth:`shut`, in the loop's own thread: at once if this is it, else handed over."""
        import asyncio

        try:
            running: Optional[asyncio.AbstractEventLoop] = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop or self.loop.is_closed():
            self.shut(error)  # a closed loop watches nothing any more
            return
        try:
            self.loop.call_soon_threadsafe(self.shut, error)
        except RuntimeError:  # the loop was closed meanwhile
            self.shut(error)


class AsyncWaits:
    """The event-loop registrations of one queue: one per loop and direction."""

    def __init__(self, handle: Any, lock: threading.Lock) -> None:
        self._handle = handle
        self._lock = lock  # the queue's close lock: close() takes the registrations under it
        self._closed = False
        self._registered: dict[tuple[Any, bool], _AsyncReadiness] = {}

    async def until_ready(self, writable: bool, deadline: int) -> None:
        """Wait until the event loop sees the queue ready, the deadline, or close()."""
        import asyncio

        loop = asyncio.get_running_loop()
        key = (loop, writable)
        handle = self._handle
        with self._lock:
            if self._closed or not lib.bp_hold(handle):
                return  # the next attempt raises QueueClosedError
            readiness = self._registered.get(key)
            if readiness is None:
                readiness = self._registered[key] = _AsyncReadiness(
                    handle, loop, handle.mqd, writable
                )
            else:
                lib.bp_unhold(handle)  # the registration holds one already
        waiter = loop.create_future()
        readiness.waiters.append(waiter)
        try:
            if deadline < 0:
                await waiter
            else:
                timeout = max(0.0, (deadline - _monotonic_ns()) / 1e9)
                try:
                    await asyncio.wait_for(waiter, timeout)
                except asyncio.TimeoutError:
                    pass  # the caller tries once more, then reports the timeout
        finally:
            if waiter in readiness.waiters:
                readiness.waiters.remove(waiter)
            with self._lock:
                registered, last = self._registered, False
                if not readiness.waiters and registered.get(key) is readiness:
                    del registered[key]
                    last = True
            if last:
                readiness.stop()

    def take_all(self) -> list[_AsyncReadiness]:
        """Mark closed and take every registration (the caller holds the lock)."""
        self._closed = True
        taken, self._registered = list(self._registered.values()), {}
        return taken


def shut(readinesses: list[_AsyncReadiness], error: BaseException) -> None:
    """Fail the tasks waiting through ``readinesses``, each in its loop's thread."""
    for readiness in readinesses:
        readiness.shut_from_any_thread(error)
