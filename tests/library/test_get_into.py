"""get_into: receiving into the caller's buffer, of any writable kind."""

from __future__ import annotations

import array
import mmap
import struct
import threading
import time
from typing import Any, Callable

import pytest

from baseplate.message_queue import (
    InvalidParametersError,
    MessageQueue,
    TimedOutError,
)

MakeQueue = Callable[..., MessageQueue]

# -- get_into: receiving into the caller's buffer ------------------------------------


def buffer_kinds() -> list[Any]:
    """Every kind of writable buffer get_into() takes, each 64 bytes or more
    (NumPy's where it is installed: with .[test] on CPython, not on PyPy)."""
    kinds: list[Any] = [
        bytearray(64),
        memoryview(bytearray(100))[10:90],
        array.array("B", bytes(64)),
        array.array("i", [0] * 16),
        mmap.mmap(-1, 4096),
    ]
    try:
        import numpy

        kinds.append(numpy.zeros(64, dtype=numpy.uint8))
        kinds.append(numpy.zeros((4, 16), dtype=numpy.uint8))
    except ImportError:
        pass
    return kinds


@pytest.mark.parametrize("buffer", buffer_kinds(), ids=lambda b: type(b).__name__)
def test_get_into_fills_any_writable_buffer(make_queue: MakeQueue, buffer: Any) -> None:
    queue = make_queue(max_messages=3, max_message_size=64)
    queue.put(b"plain")
    queue.put(b"\x00urgent\xff", priority=9)
    assert queue.get_into(buffer) == (8, 9)
    assert bytes(memoryview(buffer).cast("B")[:8]) == b"\x00urgent\xff"
    assert queue.get_into(buffer, timeout=0) == (5, 0)
    assert bytes(memoryview(buffer).cast("B")[:5]) == b"plain"
    with pytest.raises(TimedOutError):
        queue.get_into(buffer, timeout=0)


def test_get_into_parses_fixed_size_records_from_one_buffer(queue: MessageQueue) -> None:
    record = struct.Struct("<IQd")
    for i in range(5):
        queue.put(record.pack(i, i * 1000, i / 2))
    buffer = bytearray(queue.max_message_size)
    seen = []
    for _ in range(5):
        size, _priority = queue.get_into(buffer)
        assert size == record.size
        seen.append(record.unpack_from(buffer))
    assert seen == [(i, i * 1000, i / 2) for i in range(5)]


def test_too_small_a_buffer_names_both_sizes_and_takes_nothing(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=3, max_message_size=100)
    queue.put(b"short")  # the kernel wants room for 100 bytes all the same
    with pytest.raises(InvalidParametersError, match=r"max_message_size=100.*has 99") as caught:
        queue.get_into(bytearray(99))
    assert isinstance(caught.value, ValueError)
    assert queue.get(timeout=0) == b"short"


@pytest.mark.parametrize(
    ("buffer", "problem"),
    [
        (bytes(64), "read-only"),
        (memoryview(bytes(64)), "read-only"),
        (memoryview(bytearray(128))[::2], "not C-contiguous"),
        ("a str", "no buffer interface"),
        (64, "no buffer interface"),
        ([0] * 64, "no buffer interface"),
    ],
    ids=lambda value: type(value).__name__ if not isinstance(value, str) else value,
)
def test_get_into_refuses_what_it_cannot_write_into(
    make_queue: MakeQueue, buffer: Any, problem: str
) -> None:
    queue = make_queue(max_messages=3, max_message_size=64)
    queue.put(b"stays queued")
    with pytest.raises(TypeError, match=problem):
        queue.get_into(buffer)
    assert queue.get(timeout=0) == b"stays queued"


def test_get_into_waits_like_get(queue: MessageQueue) -> None:
    buffer = bytearray(queue.max_message_size)
    start = time.monotonic()
    with pytest.raises(TimedOutError, match="waiting for a message"):
        queue.get_into(buffer, timeout=0.2)
    assert 0.2 <= time.monotonic() - start < 2
    threading.Timer(0.1, queue.put, args=(b"late",)).start()
    assert queue.get_into(buffer, timeout=10) == (4, 0)
    assert buffer[:4] == b"late"


def test_threads_get_into_their_own_buffers(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=32)
    total, threads = 4000, 4
    received: list[list[bytes]] = [[] for _ in range(threads)]

    def consume(index: int) -> None:
        buffer = bytearray(32)
        for _ in range(total // threads):
            size, priority = queue.get_into(buffer, timeout=10)
            received[index].append(bytes(buffer[:size]) + b"/%d" % priority)

    consumers = [threading.Thread(target=consume, args=(i,)) for i in range(threads)]
    for consumer in consumers:
        consumer.start()
    for i in range(total):
        queue.put(b"message %d" % i, priority=i % 3)
    for consumer in consumers:
        consumer.join(30)
    everything = sorted(m for part in received for m in part)
    assert everything == sorted(b"message %d/%d" % (i, i % 3) for i in range(total))
