"""The queue as an iterable: ``for`` and ``async for`` loops that close()
ends, a draining form, and no ``in`` (issue 29)."""

from __future__ import annotations

import asyncio
import inspect
import os
import signal
import threading
import time
from typing import Callable, List

import pytest

from baseplate.message_queue import InvalidParametersError, Message, MessageQueue, QueueClosedError

MakeQueue = Callable[..., MessageQueue]


def _consume_in_thread(
    queue: MessageQueue,
) -> tuple[threading.Thread, List[Message], List[BaseException]]:
    """A consumer thread's ``for`` loop: (thread, messages it got, errors it raised)."""
    got: List[Message] = []
    errors: List[BaseException] = []

    def consume() -> None:
        try:
            for message in queue:
                got.append(message)
        except BaseException as error:  # the test fails on any
            errors.append(error)

    thread = threading.Thread(target=consume)
    thread.start()
    return thread, got, errors


def _until(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting for the condition"
        time.sleep(0.005)


# -- for ---------------------------------------------------------------------


def test_a_for_loop_yields_each_message_with_its_priority(queue: MessageQueue) -> None:
    queue.put(b"low")
    queue.put(b"high", priority=7)
    queue.put(b"low too")
    taken = []
    for message in queue:
        taken.append((bytes(message), message.priority))
        if len(taken) == 3:
            break
    assert taken == [(b"high", 7), (b"low", 0), (b"low too", 0)]
    assert queue.current_messages == 0


def test_a_consumer_threads_loop_ends_cleanly_on_close_from_another_thread(
    queue: MessageQueue,
) -> None:
    thread, got, errors = _consume_in_thread(queue)
    for i in range(5):
        queue.put(str(i), priority=i % 2)
    _until(lambda: len(got) == 5)
    time.sleep(0.05)  # the loop waits in get() again
    queue.close()
    thread.join(10)
    assert not thread.is_alive()
    assert errors == []
    assert sorted(bytes(m) for m in got) == [b"0", b"1", b"2", b"3", b"4"]


def test_close_from_a_signal_handler_ends_the_iterating_threads_loop(
    queue: MessageQueue,
) -> None:
    queue.put(b"first")
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: queue.close())
    timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGUSR1))
    try:
        timer.start()
        got = [bytes(message) for message in queue]  # in the main thread, signals' thread
    finally:
        timer.cancel()
        signal.signal(signal.SIGUSR1, previous)
    assert got == [b"first"]
    assert queue.closed


def test_iter_of_a_closed_queue_raises_at_once(queue: MessageQueue) -> None:
    queue.close()
    with pytest.raises(QueueClosedError):
        iter(queue)
    with pytest.raises(QueueClosedError):
        queue.drain()
    with pytest.raises(QueueClosedError):
        queue.__aiter__()


def test_a_loop_begun_before_close_and_stepped_after_ends(queue: MessageQueue) -> None:
    messages = iter(queue)
    queue.close()
    assert list(messages) == []


def test_list_of_a_queue_waits_until_it_is_closed(queue: MessageQueue) -> None:
    queue.put(b"a")
    queue.put(b"b")
    timer = threading.Timer(0.2, queue.close)
    timer.start()
    start = time.monotonic()
    assert list(queue) == [b"a", b"b"]
    assert time.monotonic() - start >= 0.15
    timer.join()


def test_in_is_refused_and_takes_nothing(queue: MessageQueue) -> None:
    queue.put(b"x")
    with pytest.raises(TypeError, match="would take"):
        b"x" in queue  # noqa: B015
    assert queue.current_messages == 1


def test_drain_stops_once_nothing_comes_within_its_timeout(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=64)
    for i in range(4):
        queue.put(b"%d" % i, priority=i % 2)
    drained = list(queue.drain())
    assert [(bytes(m), m.priority) for m in drained] == [(b"1", 1), (b"3", 1), (b"0", 0), (b"2", 0)]
    start = time.monotonic()
    assert list(queue.drain(timeout=0.05)) == []
    assert 0.04 <= time.monotonic() - start < 5
    # Messages that come within the timeout of each other are taken.
    timers = [threading.Timer(0.05 * (i + 1), queue.put, (b"late",)) for i in range(3)]
    for timer in timers:
        timer.start()
    assert list(queue.drain(timeout=2)) == [b"late"] * 3
    for timer in timers:
        timer.join()


def test_drain_checks_its_timeout_when_called(queue: MessageQueue) -> None:
    with pytest.raises(InvalidParametersError):
        queue.drain(timeout=-1)
    with pytest.raises(TypeError):
        queue.drain(timeout="1")  # type: ignore[arg-type]


def test_drain_ends_when_the_queue_is_closed(queue: MessageQueue) -> None:
    timer = threading.Timer(0.1, queue.close)
    timer.start()
    assert list(queue.drain(timeout=None)) == []
    timer.join()


def test_put_many_of_another_queues_drain_moves_what_it_holds(make_queue: MakeQueue) -> None:
    source, target = make_queue(), make_queue()
    source.put(b"a")
    source.put(b"b", priority=2)
    assert target.put_many(source.drain()) == 2
    assert list(target.drain()) == [b"b", b"a"]


# -- async for ---------------------------------------------------------------


def test_aiter_is_a_plain_method() -> None:
    assert not inspect.iscoroutinefunction(MessageQueue.__aiter__)


def test_async_for_yields_messages_and_close_in_a_task_ends_it(queue: MessageQueue) -> None:
    async def main() -> List[tuple[bytes, int]]:
        got: List[tuple[bytes, int]] = []

        async def consume() -> None:
            async for message in queue:
                got.append((bytes(message), message.priority))

        task = asyncio.ensure_future(consume())
        await asyncio.sleep(0.05)
        await queue.put_async(b"one", priority=3)
        await queue.put_async(b"two")
        while len(got) < 2:
            await asyncio.sleep(0.01)
        queue.close()
        await asyncio.wait_for(task, 10)
        return got

    assert asyncio.run(main()) == [(b"one", 3), (b"two", 0)]


def test_async_for_ends_on_close_from_another_thread(queue: MessageQueue) -> None:
    async def main() -> List[bytes]:
        queue.put(b"ready")
        got = []
        timer = threading.Timer(0.2, queue.close)
        timer.start()
        async for message in queue:
            got.append(bytes(message))
        timer.join()
        return got

    assert asyncio.run(asyncio.wait_for(main(), 10)) == [b"ready"]
