"""Waiting: the one home of every call that must wait for a queue.

A call first tries once (in :mod:`~baseplate.message_queue.queue` or
:mod:`~baseplate.message_queue.batches`, one call into C that never blocks).
Only if the queue was not ready does it come here, to :func:`retries`, the
loop that owns deadlines, ``EINTR`` and the choice of driver:

- in the kernel (:func:`wait`): the next attempt is a call into C that spins
  for up to 10 µs, then sleeps in ``ppoll`` on the queue and its wake
  descriptor, with the GIL released;
- through a monkey-patched ``select.select`` (gevent, eventlet), so that
  other greenlets run (:func:`wait`, cooperatively);
- on an asyncio event loop (:mod:`~baseplate.message_queue.event_loop`
  drives :func:`retries` there).

It takes a :class:`~baseplate.message_queue.handle.Handle`, and touches the
queue only through the binding: the attempts it makes (``bp_send``,
``bp_receive`` and their batch forms, which may sleep in the kernel), the
wake descriptor (``bp_wake_fd``) and the handle's uses
(:meth:`~baseplate.message_queue.handle.Handle.holding`). It calls
``select.select`` when gevent or eventlet replaced it. It raises
:class:`TimedOutError` and :class:`QueueClosedError` itself (with the sent
count of a batch), and every other error through the handle's
:meth:`~baseplate.message_queue.handle.Handle.error`.
"""

from __future__ import annotations

import errno
import select
import time
from typing import Any, Callable, Generator, List

from baseplate.message_queue.binding import ffi, lib
from baseplate.message_queue.checks import NOW, check_timeout
from baseplate.message_queue.errors import QueueClosedError, TimedOutError, Wording, worded
from baseplate.message_queue.handle import Handle
from baseplate.message_queue.message import LENGTH_MASK, PACK_SHIFT

#: An attempt: ``attempt(may_wait)`` calls into C once more, returning a
#: result ``>= 0`` once done, else ``-errno``. With ``may_wait`` it may also
#: spin and sleep in the kernel until the deadline.
Attempt = Callable[[bool], int]

_WOULD_BLOCK = (errno.EAGAIN, errno.ETIMEDOUT)
# Without a wake descriptor (none could be had), a wait looks again this often.
_BLIND_WAIT = 0.02
_monotonic_ns = time.monotonic_ns


def _native_select(candidate: Any) -> Any:
    """Return ``candidate`` if it is the interpreter's own ``select.select``."""
    return candidate if getattr(candidate, "__module__", None) == "select" else None


# When select.select is still this function, blocking in the kernel is fine;
# when gevent or eventlet has replaced it, waits must go through theirs.
_NATIVE_SELECT = _native_select(select.select)


def deadline_ns(timeout_ns: int) -> int:
    """The bp_* deadline for a checked timeout: forever, now, or a monotonic time."""
    if timeout_ns <= 0:
        return timeout_ns
    return _monotonic_ns() + timeout_ns


def deadline_cell(timeout: Any) -> Any:
    """The deadline for ``timeout`` (checked), in a ``long long[1]`` that C can move."""
    return ffi.new("long long[1]", [deadline_ns(check_timeout(timeout))])


def retries(
    handle: Handle,
    attempt: Attempt,
    writable: bool,
    deadline: Any,
    err: int,
    size: int,
    cooperative: bool,
) -> Generator[int, None, int]:
    """The waiting loop of every call, after its first attempt failed with ``err``.

    ``deadline`` is a ``long long[1]``, which put_many's attempts move on.
    When waiting must happen outside the kernel (``cooperative``: gevent,
    asyncio), this yields the deadline, and the driver waits for the queue
    to be ready (or closed) before the next attempt. Returns the attempt's
    result once it is ``>= 0``; raises :class:`TimedOutError`, or the error
    for ``err``. After ``EINTR`` the loop's back edge runs Python's signal
    handlers (PEP 475): one that raises ends the call.
    """
    while True:
        if err in _WOULD_BLOCK:
            if deadline[0] == NOW or 0 < deadline[0] <= _monotonic_ns():
                what = "room in" if writable else "a message in"
                words = Wording(f"timed out waiting for {what} queue {{queue}}", queue=handle.name)
                raise worded(TimedOutError(str(words)), words)
            if cooperative:
                yield deadline[0]
        elif err != errno.EINTR:
            raise handle.error(err, "send" if writable else "receive", size)
        result = attempt(not cooperative)
        if result >= 0:
            return result
        err = -result


def wait(
    handle: Handle, attempt: Attempt, writable: bool, deadline: Any, err: int, size: int = 0
) -> int:
    """Drive :func:`retries` in this thread: in the kernel, or through gevent's select."""
    cooperative = select.select is not _NATIVE_SELECT
    waits = retries(handle, attempt, writable, deadline, err, size, cooperative)
    try:
        while True:
            _wait_cooperatively(handle, writable, next(waits))
    except StopIteration as done:
        result: int = done.value
        return result


def _wait_cooperatively(handle: Handle, writable: bool, deadline: int) -> None:
    """Wait through the monkey-patched ``select.select`` (gevent, eventlet)
    for the queue to be ready, for close(), or for the deadline."""
    raw = handle.raw
    with handle.holding() as held:
        if not held:
            return  # closed: the next attempt says so
        wake = lib.bp_wake_fd(raw)
        if lib.bp_is_closed(raw):
            return
        timeout = None if deadline < 0 else max(0.0, (deadline - _monotonic_ns()) / 1e9)
        watched = [wake] if wake >= 0 else []
        if wake < 0:  # no wake descriptor to be had: look again soon
            timeout = _BLIND_WAIT if timeout is None else min(timeout, _BLIND_WAIT)
        if writable:
            select.select(watched, [raw.mqd], [], timeout)
        else:
            select.select([raw.mqd, *watched], [], [], timeout)


# --------------------------------------------------------------------------
# The rest of each call, once its first attempt found the queue not ready


def send(handle: Handle, data: Any, timeout: Any, priority: int, err: int) -> None:
    """The rest of :meth:`MessageQueue.put`, once its first attempt failed with ``err``."""
    deadline = deadline_cell(timeout)
    raw, size = handle.raw, len(data)

    def attempt(may_wait: bool) -> int:
        return lib.bp_send(raw, data, size, priority, deadline[0] if may_wait else NOW)  # type: ignore[no-any-return]

    wait(handle, attempt, True, deadline, err, size)


def receive(handle: Handle, data: Any, timeout: Any, err: int) -> int:
    """Wait for a message into ``data``: (priority << shift) | length."""
    deadline = deadline_cell(timeout)
    raw = handle.raw

    def attempt(may_wait: bool) -> int:
        return lib.bp_receive(raw, data, deadline[0] if may_wait else NOW)  # type: ignore[no-any-return]

    return wait(handle, attempt, False, deadline, err)


def send_batch(
    handle: Handle, data: bytes, lengths: List[int], priority: int, timeout: Any, result: int
) -> int:
    """The rest of :meth:`MessageQueue.put_many`, after its first attempt sent some or none."""
    timeout_ns = check_timeout(timeout)
    deadline = ffi.new("long long[1]", [deadline_ns(timeout_ns)])
    raw, total = handle.raw, len(lengths)
    pointer = ffi.from_buffer(data)  # held for the whole loop: it pins `data`
    sent = offset = 0

    def account(result: int) -> int:
        """Count what a call sent; return ``total`` once all went out, else -errno."""
        nonlocal sent, offset
        count = result & LENGTH_MASK
        if count:
            offset += sum(lengths[sent : sent + count])
            sent += count
            if timeout_ns > 0:  # each message may wait that long
                deadline[0] = _monotonic_ns() + timeout_ns
        return total if sent == total else -(result >> PACK_SHIFT)

    def attempt(may_wait: bool) -> int:
        return account(
            lib.bp_send_many(
                raw,
                pointer + offset,
                lengths[sent:],
                total - sent,
                priority,
                timeout_ns,
                deadline,
                may_wait,
            )
        )

    try:
        outcome = account(result)
        if outcome == 0:  # the first attempt stopped at its own limits, not for room
            outcome = attempt(False)
        if outcome < 0:
            wait(handle, attempt, True, deadline, -outcome, lengths[sent])
    except TimedOutError:
        words = Wording(
            "timed out waiting for room in queue {queue} after sending {sent} of {total} messages",
            queue=handle.name,
            sent=sent,
            total=total,
        )
        raise worded(TimedOutError(str(words), sent), words) from None
    except QueueClosedError:
        words = Wording(
            "queue {queue} was closed after {sent} of {total} messages were sent",
            queue=handle.name,
            sent=sent,
            total=total,
        )
        raise worded(QueueClosedError(str(words), sent), words) from None
    return total


def receive_batch(
    handle: Handle, batch: tuple[Any, Any, int, Any, int], max_count: int, timeout: Any, err: int
) -> int:
    """Wait for :meth:`MessageQueue.get_many`'s first message; return the packed batch result."""
    buf, _, capacity, results, slots = batch
    deadline = deadline_cell(timeout)
    raw, want = handle.raw, min(slots, max_count)

    def attempt(may_wait: bool) -> int:
        result: int = lib.bp_receive_many(
            raw, buf, capacity, want, deadline[0] if may_wait else NOW, results
        )
        return result if result & LENGTH_MASK else -(result >> PACK_SHIFT)

    return wait(handle, attempt, False, deadline, err)
