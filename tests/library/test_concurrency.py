"""Waiting without blocking others: asyncio, gevent, and signals (PEP 475)."""

from __future__ import annotations

import asyncio
import os
import select
import selectors
import signal
import subprocess
import sys
import textwrap
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from baseplate.message_queue import (
    MessageQueue,
    QueueClosedError,
    TimedOutError,
)

MakeQueue = Callable[..., MessageQueue]


# -- asyncio ---------------------------------------------------------------------


def test_get_async_waits_without_blocking_the_loop(queue: MessageQueue) -> None:
    async def main() -> tuple[bytes, int]:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.01)

        tick_task = asyncio.ensure_future(ticker())
        asyncio.get_running_loop().call_later(0.2, queue.put, b"async hello")
        message = await queue.get_async(timeout=10)
        tick_task.cancel()
        return message, ticks

    message, ticks = asyncio.run(main())
    assert message == b"async hello"
    assert ticks >= 5  # the loop kept running while get_async waited


def test_put_async_waits_for_room(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=1, max_message_size=16)

    async def main() -> list[bytes]:
        await queue.put_async(b"first")
        pending = asyncio.ensure_future(queue.put_async(b"second", priority=2))
        await asyncio.sleep(0.05)
        assert not pending.done()
        first = await queue.get_async()
        await asyncio.wait_for(pending, 10)
        second = await queue.get_async(timeout=0)
        return [first, second]

    assert asyncio.run(main()) == [b"first", b"second"]


def test_async_timeouts(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=1, max_message_size=16)

    async def main() -> None:
        start = time.monotonic()
        with pytest.raises(TimedOutError):
            await queue.get_async(timeout=0.1)
        assert time.monotonic() - start >= 0.1
        with pytest.raises(TimedOutError):
            await queue.get_async(timeout=0)
        await queue.put_async("x", timeout=0)
        with pytest.raises(TimedOutError):
            await queue.put_async("y", timeout=0.1)

    asyncio.run(main())


def test_many_tasks_wait_on_one_queue(queue: MessageQueue) -> None:
    async def main() -> list[bytes]:
        waiters = [asyncio.ensure_future(queue.get_async(timeout=10)) for _ in range(5)]
        await asyncio.sleep(0.05)
        for i in range(5):
            await queue.put_async(b"%d" % i)
        return sorted(await asyncio.gather(*waiters))

    assert asyncio.run(main()) == [b"0", b"1", b"2", b"3", b"4"]


def test_closing_wakes_async_waiters_with_an_error(queue: MessageQueue) -> None:
    async def main() -> None:
        waiter = asyncio.ensure_future(queue.get_async())
        await asyncio.sleep(0.05)
        queue.close()
        with pytest.raises(QueueClosedError):
            await asyncio.wait_for(waiter, 5)

    asyncio.run(main())


def test_cancelled_get_async_leaves_no_reader_behind(queue: MessageQueue) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        waiter = asyncio.ensure_future(queue.get_async())
        await asyncio.sleep(0.05)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert not loop.remove_reader(queue.fileno())  # nothing was registered any more
        queue.put(b"not taken")

    asyncio.run(main())
    assert queue.get(timeout=0) == b"not taken"


# -- gevent (in a fresh interpreter, since monkey-patching is process-wide) --------


def test_gevent_blocked_get_and_put_yield_to_other_greenlets(queue_name: str) -> None:
    pytest.importorskip("gevent")
    script = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import gevent
        from baseplate.message_queue import MessageQueue

        queue = MessageQueue({queue_name!r}, max_messages=1, max_message_size=16)
        ticks = []

        def ticker():
            for i in range(50):
                ticks.append(i)
                gevent.sleep(0.01)

        def producer():
            gevent.sleep(0.1)
            queue.put(b"one")
            queue.put(b"two")  # the queue is full until the consumer takes "one"

        tick = gevent.spawn(ticker)
        produce = gevent.spawn(producer)
        first = queue.get()            # blocks: other greenlets must run meanwhile
        ticks_while_blocked = len(ticks)
        buffer = bytearray(16)
        size, _ = queue.get_into(buffer, timeout=5)
        second = bytes(buffer[:size])
        gevent.spawn_later(0.1, queue.put, b"three")
        ticks_before = len(ticks)
        size, _ = queue.get_into(buffer)  # blocks too, and yields
        third = bytes(buffer[:size])
        gevent.joinall([tick, produce], timeout=5)
        print(first.decode(), second.decode(), third.decode(), ticks_while_blocked >= 5,
              len(ticks) > ticks_before, produce.successful())
        queue.close()
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.split() == ["one", "two", "three", "True", "True", "True"], result.stderr


def test_gevent_timeouts_are_honoured(queue_name: str) -> None:
    pytest.importorskip("gevent")
    script = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import time
        from baseplate.message_queue import MessageQueue, TimedOutError

        queue = MessageQueue({queue_name!r}, max_messages=1, max_message_size=16)
        start = time.monotonic()
        try:
            queue.get(timeout=0.2)
        except TimedOutError:
            print("timed out", 0.2 <= time.monotonic() - start < 3)
        queue.put(b"a")
        try:
            queue.put_many([b"b"], timeout=0.1)
        except TimedOutError as error:
            print("put_many", error.sent)
        print(queue.get_many(5, timeout=1))
        queue.close()
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.splitlines() == [
        "timed out True",
        "put_many 0",
        "[Message(b'a', priority=0)]",
    ], result.stderr


# -- signals (PEP 475) -------------------------------------------------------------


@pytest.fixture
def alarm_storm() -> Iterator[list[int]]:
    """SIGALRM every millisecond, with a handler that returns."""
    calls: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: calls.append(signum))
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    try:
        yield calls
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)


def test_handler_that_returns_lets_a_timed_get_go_on(
    queue: MessageQueue, alarm_storm: list[int]
) -> None:
    start = time.monotonic()
    with pytest.raises(TimedOutError):
        queue.get(timeout=0.3)
    waited = time.monotonic() - start
    assert len(alarm_storm) > 10  # the wait really was interrupted, many times
    assert 0.3 <= waited < 3


def test_handler_that_returns_lets_a_blocking_get_go_on(
    queue: MessageQueue, alarm_storm: list[int]
) -> None:
    threading.Timer(0.3, queue.put, args=(b"after the storm",)).start()
    assert queue.get() == b"after the storm"
    assert len(alarm_storm) > 10


def test_blocking_batches_survive_a_signal_storm(
    make_queue: MakeQueue, alarm_storm: list[int]
) -> None:
    queue = make_queue(max_messages=2, max_message_size=16)
    sent = [b"%d" % i for i in range(30)]

    def consume() -> None:
        for _ in sent:
            time.sleep(0.005)
            received.append(queue.get(timeout=10))

    received: list[bytes] = []
    consumer = threading.Thread(target=consume)
    consumer.start()
    assert queue.put_many(sent) == 30
    consumer.join(timeout=30)
    assert received == sent


def test_handler_that_raises_interrupts_a_blocked_get(queue: MessageQueue) -> None:
    class Interrupted(Exception):
        pass

    def raise_interrupted(signum: int, frame: Any) -> None:
        raise Interrupted()

    previous = signal.signal(signal.SIGALRM, raise_interrupted)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    start = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            queue.get()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - start < 3
    queue.put(b"nothing was lost")
    assert queue.get(timeout=0) == b"nothing was lost"


def test_ctrl_c_interrupts_a_blocked_get_promptly(queue_name: str) -> None:
    script = textwrap.dedent(f"""
        import sys
        from baseplate.message_queue import MessageQueue
        queue = MessageQueue({queue_name!r})
        print("waiting", flush=True)
        try:
            queue.get()
        except KeyboardInterrupt:
            print("interrupted", flush=True)
            sys.exit(7)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    assert child.stdout.readline() == "waiting\n"
    time.sleep(0.1)
    os.kill(child.pid, signal.SIGINT)
    assert child.wait(timeout=10) == 7
    assert child.stdout.read() == "interrupted\n"


# -- waiting with select, and across threads and processes -----------------------


def test_fileno_works_with_select_and_selectors(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=1, max_message_size=8)
    assert select.select([queue], [], [], 0)[0] == []
    assert select.select([], [queue], [], 0)[1] == [queue]
    queue.put(b"x")
    assert select.select([queue], [], [], 0)[0] == [queue]
    assert select.select([], [queue], [], 0)[1] == []
    with selectors.DefaultSelector() as selector:
        selector.register(queue, selectors.EVENT_READ)
        assert [key.fileobj for key, _ in selector.select(timeout=1)] == [queue]


@pytest.mark.parametrize("call", ["get", "put", "get_many", "put_many"])
def test_blocked_calls_release_the_gil(make_queue: MakeQueue, call: str) -> None:
    """Only the attempts that never block keep the GIL (build_ffi.KEEPS_GIL)."""
    queue = make_queue(max_messages=1, max_message_size=64)
    sending = call.startswith("put")
    if sending:
        queue.put(b"fills the queue")
    # A timeout, so that a call wrongly holding the GIL stalls this thread
    # for that long (and fails below) instead of hanging the test forever.
    calls: dict[str, Callable[[], object]] = {
        "get": lambda: [queue.get(timeout=10)],
        "put": lambda: queue.put(b"blocked", timeout=10),
        "get_many": lambda: queue.get_many(5, timeout=10),
        "put_many": lambda: queue.put_many([b"blocked"], timeout=10),
    }
    blocked = calls[call]
    result: list[object] = []
    worker = threading.Thread(target=lambda: result.append(blocked()))
    worker.start()
    # This thread keeps running Python code while the worker is blocked.
    start = previous = time.monotonic()
    longest_stall = 0.0
    while previous - start < 0.3:
        now = time.monotonic()
        longest_stall = max(longest_stall, now - previous)
        previous = now
    assert longest_stall < 2  # a held GIL stalls it for the whole 10 s timeout
    assert worker.is_alive()
    if sending:
        assert queue.get() == b"fills the queue"
    else:
        queue.put(b"wake up")
    worker.join(timeout=10)
    assert not worker.is_alive()
    if sending:
        assert queue.get(timeout=0) == b"blocked"
    else:
        assert result == [[b"wake up"]]


def test_many_threads_share_one_queue_without_losing_or_mixing(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=64)
    producers, consumers, per_producer = 3, 4, 2000
    total = producers * per_producer
    received: list[list[bytes]] = [[] for _ in range(consumers)]

    def produce(p: int) -> None:
        for i in range(per_producer):
            payload = f"{p}:{i}:".encode() + bytes([i % 251]) * (i % 40)
            if i % 2:
                queue.put(payload)
            else:
                queue.put_many([payload])

    def consume(c: int) -> None:
        while True:
            try:
                batch = queue.get_many(5, timeout=2) if c % 2 else [queue.get(timeout=2)]
            except TimedOutError:
                return
            received[c].extend(batch)

    threads = [threading.Thread(target=consume, args=(c,)) for c in range(consumers)]
    threads += [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    everything = [m for part in received for m in part]
    assert len(everything) == total
    expected = {
        f"{p}:{i}:".encode() + bytes([i % 251]) * (i % 40)
        for p in range(producers)
        for i in range(per_producer)
    }
    assert set(everything) == expected
    # Each consumer saw each producer's messages in the order they were sent.
    for part in received:
        for p in range(producers):
            sequence = [int(m.split(b":")[1]) for m in part if m.startswith(f"{p}:".encode())]
            assert sequence == sorted(sequence)
