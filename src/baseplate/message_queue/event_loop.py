"""Waiting on an asyncio event loop: the driver of :func:`~baseplate.message_queue.waiting.retries`
for :meth:`MessageQueue.get_async` and :meth:`MessageQueue.put_async`.

The loop watches the queue's descriptor through one reader (or writer) per
queue, loop and direction, shared by every task waiting there; each holds a
use of the queue (``bp_hold``), so the descriptor stays open while a loop
watches it. It takes a :class:`~baseplate.message_queue.handle.Handle`,
whose event-loop waits (:class:`AsyncWaits`) it alone drives. It touches
event loops (readers, writers, futures; across threads through
``call_soon_threadsafe``) and the use-counting helpers; its attempts try
once more with ``bp_send``/``bp_receive``, never waiting in the kernel.
Errors, :class:`TimedOutError` included, come from
:func:`~baseplate.message_queue.waiting.retries`.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Optional, cast

from baseplate.message_queue.binding import lib
from baseplate.message_queue.checks import NOW
from baseplate.message_queue.handle import AsyncWaiting, Handle
from baseplate.message_queue.waiting import Attempt, retries

if TYPE_CHECKING:  # pragma: no cover
    import asyncio  # imported when first needed: most programs never are

_monotonic_ns = time.monotonic_ns


def set_up(handle: Handle) -> None:
    """Give a newly opened ``handle`` its event-loop waits (before any close()
    can run, so that close() always finds the ones in use)."""
    handle.async_waits = AsyncWaits(handle.raw)


async def receive(handle: Handle, data: Any, deadline: Any, err: int) -> int:
    """The rest of :meth:`MessageQueue.get_async`, once its first attempt failed
    with ``err``: (priority << shift) | length."""
    raw = handle.raw

    def attempt(may_wait: bool) -> int:
        return lib.bp_receive(raw, data, NOW)  # type: ignore[no-any-return]

    return await _wait(handle, attempt, False, deadline, err)


async def send(handle: Handle, data: Any, priority: int, deadline: Any, err: int) -> None:
    """The rest of :meth:`MessageQueue.put_async`, once its first attempt failed with ``err``."""
    raw, size = handle.raw, len(data)

    def attempt(may_wait: bool) -> int:
        return lib.bp_send(raw, data, size, priority, NOW)  # type: ignore[no-any-return]

    await _wait(handle, attempt, True, deadline, err, size)


async def _wait(
    handle: Handle,
    attempt: Attempt,
    writable: bool,
    deadline: Any,
    err: int,
    size: int = 0,
) -> int:
    """Drive :func:`~baseplate.message_queue.waiting.retries` on the running event loop."""
    steps = retries(handle, attempt, writable, deadline, err, size, True)
    waits = cast(AsyncWaits, handle.async_waits)  # as set_up() made them
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
    open until the loop has stopped watching it.
    """

    __slots__ = ("fd", "hold", "loop", "waiters", "writable")

    def __init__(
        self, handle: Any, loop: asyncio.AbstractEventLoop, fd: int, writable: bool
    ) -> None:
        self.hold = [handle]  # the use it holds: popped once, atomically
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
        """Stop watching and give the use back; once. In the loop's thread,
        or in any thread while the loop does not run."""
        try:
            handle = self.hold.pop()
        except IndexError:
            return
        if self.writable:
            self.loop.remove_writer(self.fd)
        else:
            self.loop.remove_reader(self.fd)
        lib.bp_unhold(handle)

    def forget(self) -> None:
        """In a child after fork(): let go without touching the loop, whose
        epoll instance the parent still uses, or giving the use back."""
        self.hold.clear()

    def shut(self, error: BaseException) -> None:
        """The queue was closed: fail every waiting task (unless its loop is
        closed: then none can run again), and stop."""
        waiters, self.waiters = self.waiters, []
        if not self.loop.is_closed():
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(error)
        self.stop()

    def shut_from_any_thread(self, error: BaseException) -> None:
        """:meth:`shut`, in the loop's own thread: at once if this is it, or if
        the loop does not run (it is closed, or stopped and may never run
        again), else handed over to it."""
        import asyncio

        try:
            running: Optional[asyncio.AbstractEventLoop] = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop or self.loop.is_closed() or not self.loop.is_running():
            self.shut(error)
            return
        try:
            self.loop.call_soon_threadsafe(self.shut, error)
        except RuntimeError:  # the loop was closed meanwhile
            self.shut(error)


class AsyncWaits(AsyncWaiting):
    """The event-loop registrations of one queue: one per loop and direction.

    Lock-free, so that :meth:`shut` may run anywhere (a signal handler
    included): :meth:`until_ready` looks again, once it has registered,
    whether the queue was closed meanwhile.
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self._closed: Optional[BaseException] = None  # the error, once closed
        self._registered: dict[tuple[Any, bool], _AsyncReadiness] = {}

    async def until_ready(self, writable: bool, deadline: int) -> None:
        """Wait until the event loop sees the queue ready, the deadline, or close()."""
        import asyncio

        loop = asyncio.get_running_loop()
        key = (loop, writable)
        handle = self._handle
        if self._closed is not None or not lib.bp_hold(handle):
            return  # the next attempt raises QueueClosedError
        readiness = self._registered.get(key)
        if readiness is None:
            readiness = self._registered[key] = _AsyncReadiness(handle, loop, handle.mqd, writable)
        else:
            lib.bp_unhold(handle)  # the registration holds one already
        waiter = loop.create_future()
        readiness.waiters.append(waiter)
        if self._closed is not None:  # while registering: shut() may not have seen it
            readiness.shut(self._closed)
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
            if not readiness.waiters and self._registered.get(key) is readiness:
                self._registered.pop(key, None)
                readiness.stop()

    def shut(self, error: BaseException) -> None:
        """The queue was closed: fail every waiting task with ``error``, each
        in its loop's thread, and give back the uses the loops held."""
        self._closed = error
        taken, self._registered = list(self._registered.values()), {}
        for readiness in taken:
            readiness.shut_from_any_thread(error)

    def after_fork_in_child(self) -> None:
        """Forget every registration, touching no loop (the uses they held are
        not the child's: see bp_after_fork); wake the tasks of the forking
        thread's running loop, which try again."""
        taken, self._registered = list(self._registered.values()), {}
        if not taken:
            return
        import asyncio

        try:
            running: Optional[asyncio.AbstractEventLoop] = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        for readiness in taken:
            readiness.forget()
            if readiness.loop is running:
                readiness.wake()
