"""The library against real kernel queues: API, errors, and life cycle."""

from __future__ import annotations

import array
import asyncio
import ctypes
import errno
import fcntl
import gc
import mmap
import os
import pickle
import select
import selectors
import signal
import struct
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import pytest
from baseplate.message_queue._mqueue import ffi, lib

from baseplate.message_queue import (
    PRIORITY_MAX,
    RLIMIT_MSGQUEUE,
    InvalidParametersError,
    Message,
    MessageData,
    MessageQueue,
    MessageQueueError,
    MessageQueueOSError,
    MessageTooLargeError,
    QueueClosedError,
    QueueExistsError,
    QueueNotFoundError,
    QueuePermissionError,
    TimedOutError,
    unlink,
    validate_name,
)
from helpers import (
    NOBODY,
    need_root,
    open_fds,
    queue_exists,
    run_as_nobody,
    run_in_mount_namespace,
    settled_open_fds,
    unlink_quietly,
)

MakeQueue = Callable[..., MessageQueue]


# -- the seed page's producer and consumer ------------------------------------


def test_seed_producer_and_consumer_run_as_separate_processes(queue_name: str) -> None:
    producer = textwrap.dedent(f"""
        from baseplate.message_queue import MessageQueue
        mq = MessageQueue({queue_name!r}, max_messages=1, max_message_size=1)
        message = "1"
        mq.put(message)
        print("Put Message: %s" % message)
    """)
    consumer = textwrap.dedent(f"""
        from baseplate.message_queue import MessageQueue
        mq = MessageQueue({queue_name!r}, max_messages=1, max_message_size=1)
        message = mq.get()
        print("Get Message: %s" % message)
    """)
    put = subprocess.run([sys.executable, "-c", producer], capture_output=True, text=True)
    assert put.stdout == "Put Message: 1\n", put.stderr
    got = subprocess.run([sys.executable, "-c", consumer], capture_output=True, text=True)
    assert got.stdout == "Get Message: 1\n", got.stderr


# -- opening -------------------------------------------------------------------


def test_attributes_are_the_kernels_values(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=3, max_message_size=100)
    assert (queue.max_messages, queue.max_message_size) == (3, 100)
    assert queue.current_messages == 0
    assert not queue.closed
    assert isinstance(queue.fileno(), int)
    assert queue.name.startswith("/bp-test-")


def test_existing_queue_keeps_its_own_sizes(make_queue: MakeQueue, queue_name: str) -> None:
    bigger = make_queue(queue_name, max_messages=5, max_message_size=4096)
    smaller = make_queue(queue_name, max_messages=2, max_message_size=16)
    assert (smaller.max_messages, smaller.max_message_size) == (5, 4096)
    bigger.put(b"x" * 4096)  # longer than the size asked for by `smaller`
    assert smaller.get() == b"x" * 4096


def test_create_false_needs_an_existing_queue(queue_name: str) -> None:
    with pytest.raises(QueueNotFoundError, match="does not exist") as caught:
        MessageQueue(queue_name, create=False)
    assert isinstance(caught.value, FileNotFoundError)
    assert caught.value.errno == errno.ENOENT
    assert queue_name in str(caught.value)
    assert not queue_exists(queue_name)


def test_exclusive_refuses_an_existing_queue(make_queue: MakeQueue, queue_name: str) -> None:
    make_queue(queue_name, exclusive=True)
    with pytest.raises(QueueExistsError, match="already exists") as caught:
        MessageQueue(queue_name, exclusive=True)
    assert isinstance(caught.value, FileExistsError)
    assert caught.value.errno == errno.EEXIST


def test_exclusive_without_create_is_refused(queue_name: str) -> None:
    with pytest.raises(InvalidParametersError):
        MessageQueue(queue_name, create=False, exclusive=True)


def test_bytes_name_is_accepted(queue_name: str) -> None:
    with MessageQueue(queue_name.encode()) as queue:
        assert queue.name == queue_name
        queue.put(b"x")
    assert queue_exists(queue_name)


@pytest.mark.parametrize(
    "name, problem",
    [
        ("", "must start with '/'"),
        ("queue", "as in '/queue'"),
        ("/", "at least one character"),
        ("/a/b", "no '/'"),
        ("/a\0b", "NUL"),
        ("/" + "x" * 256, "at most 255"),
        ("/..", "reserved"),
        ("/.", "reserved"),
    ],
)
def test_bad_names_are_refused_before_any_system_call(name: str, problem: str) -> None:
    with pytest.raises(InvalidParametersError, match=problem):
        MessageQueue(name)
    with pytest.raises(ValueError, match=problem):
        validate_name(name)


def test_longest_name_is_accepted() -> None:
    name = "/" + "n" * 255
    try:
        with MessageQueue(name) as queue:
            assert queue.name == name
    finally:
        unlink_quietly(name)


@pytest.mark.parametrize("name", [None, 42, ["/q"]])
def test_name_of_wrong_type_is_a_type_error(name: object) -> None:
    with pytest.raises(TypeError, match="queue name must be"):
        MessageQueue(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"max_messages": 0}, "max_messages=0 must be at least 1"),
        ({"max_messages": -1}, "max_messages=-1"),
        ({"max_message_size": 0}, "max_message_size=0"),
        ({"max_message_size": 2**70}, "too large"),
        ({"mode": 0o1777}, "mode="),
    ],
)
def test_bad_sizes_are_refused_and_nothing_is_created(
    queue_name: str, kwargs: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidParametersError, match=problem):
        MessageQueue(queue_name, **kwargs)
    assert not queue_exists(queue_name)


@pytest.mark.parametrize(
    "kwargs", [{"max_messages": 1.5}, {"max_message_size": "8"}, {"max_messages": True}]
)
def test_sizes_of_wrong_type_are_type_errors(queue_name: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError, match="must be an int"):
        MessageQueue(queue_name, **kwargs)  # type: ignore[arg-type]
    assert not queue_exists(queue_name)


# -- sending and receiving -----------------------------------------------------


def test_message_is_bytes_with_a_priority_and_text(queue: MessageQueue) -> None:
    queue.put("héllo")
    message = queue.get()
    assert isinstance(message, bytes) and isinstance(message, Message)
    assert message == "héllo".encode()
    assert message.decode() == "héllo"
    assert str(message) == "héllo"
    # The seed's form, which mypy warns about for bytes: a Message prints its text.
    assert "Get Message: %s" % message == "Get Message: héllo"  # type: ignore[str-bytes-safe]  # noqa: UP031
    assert f"{message}" == "héllo"
    assert message.priority == 0
    assert repr(message) == "Message(b'h\\xc3\\xa9llo', priority=0)"


def test_binary_payloads_survive_exactly(queue: MessageQueue) -> None:
    payloads = [b"", b"\0", b"a\0b\0", b"\xff\xfe\x80", bytes(range(256)), b"\n\r\n"]
    for payload in payloads:
        queue.put(payload)
    received = [queue.get(timeout=0) for _ in payloads]
    assert received == payloads
    assert str(received[3]) == "\\xff\\xfe\\x80"


def test_messages_of_the_largest_size(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=2, max_message_size=8192)
    payload = os.urandom(8192)
    queue.put(payload)
    assert queue.get() == payload


@pytest.mark.parametrize(
    "message, expected",
    [
        (b"bytes", b"bytes"),
        (bytearray(b"bytearray"), b"bytearray"),
        (memoryview(b"memoryview"), b"memoryview"),
        (memoryview(b"xsliced")[1:], b"sliced"),
        (array.array("i", [1, 2]), array.array("i", [1, 2]).tobytes()),
        ("text ✓", "text ✓".encode()),
        (Message(b"a message"), b"a message"),
    ],
)
def test_put_accepts_bytes_like_and_text(
    queue: MessageQueue, message: object, expected: bytes
) -> None:
    queue.put(message)  # type: ignore[arg-type]
    assert queue.get() == expected


def test_put_accepts_non_contiguous_buffers(queue: MessageQueue) -> None:
    queue.put(memoryview(b"abcdef")[::2])
    assert queue.get() == b"ace"


@pytest.mark.parametrize("message", [None, 42, ["list"], object()])
def test_put_refuses_other_types_and_sends_nothing(queue: MessageQueue, message: object) -> None:
    with pytest.raises(TypeError, match="a message must be str, bytes or another buffer"):
        queue.put(message)  # type: ignore[arg-type]
    assert queue.current_messages == 0


def test_too_large_message_names_both_sizes_and_sends_nothing(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=2, max_message_size=10)
    with pytest.raises(MessageTooLargeError, match=r"11 bytes.*max_message_size=10") as caught:
        queue.put(b"x" * 11)
    assert (caught.value.size, caught.value.max_message_size) == (11, 10)
    assert isinstance(caught.value, ValueError)
    assert queue.current_messages == 0


def test_priorities_order_delivery_fifo_within_a_priority(queue: MessageQueue) -> None:
    sent = [
        (b"low-1", 0),
        (b"high-1", 7),
        (b"mid", 3),
        (b"high-2", 7),
        (b"low-2", 0),
        (b"top", PRIORITY_MAX - 1),
    ]
    for message, priority in sent:
        queue.put(message, priority=priority)
    received = [queue.get() for _ in sent]
    assert received == [b"top", b"high-1", b"high-2", b"mid", b"low-1", b"low-2"]
    assert [m.priority for m in received] == [PRIORITY_MAX - 1, 7, 7, 3, 0, 0]


@pytest.mark.parametrize("priority", [-1, PRIORITY_MAX, 2**40])
def test_priority_out_of_range_is_refused(queue: MessageQueue, priority: int) -> None:
    with pytest.raises(InvalidParametersError, match=f"priority={priority} is out of range"):
        queue.put(b"x", priority=priority)
    with pytest.raises(InvalidParametersError):
        queue.put_many([b"x"], priority=priority)
    assert queue.current_messages == 0


@pytest.mark.parametrize("priority", [1.0, "1", None, True])
def test_priority_of_wrong_type_is_a_type_error(queue: MessageQueue, priority: object) -> None:
    with pytest.raises(TypeError, match="priority must be an int"):
        queue.put(b"x", priority=priority)  # type: ignore[arg-type]
    assert queue.current_messages == 0


def test_message_pickles_with_its_priority(queue: MessageQueue) -> None:
    queue.put(b"data", priority=4)
    message = pickle.loads(pickle.dumps(queue.get()))
    assert isinstance(message, Message)
    assert (message, message.priority) == (b"data", 4)


def test_queue_objects_do_not_pickle(queue: MessageQueue) -> None:
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(queue)


# -- timeouts --------------------------------------------------------------------


def test_timeout_zero_tries_once(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=1, max_message_size=8)
    with pytest.raises(TimedOutError):
        queue.get(timeout=0)
    queue.put(b"a", timeout=0)
    with pytest.raises(TimedOutError, match="waiting for room"):
        queue.put(b"b", timeout=0)
    assert queue.get(timeout=0) == b"a"


def test_positive_timeout_waits_at_least_that_long(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=1, max_message_size=8)
    start = time.monotonic()
    with pytest.raises(TimedOutError):
        queue.get(timeout=0.2)
    waited = time.monotonic() - start
    assert 0.2 <= waited < 2.0
    queue.put(b"full")
    start = time.monotonic()
    with pytest.raises(TimedOutError):
        queue.put(b"more", timeout=0.2)
    assert 0.2 <= time.monotonic() - start < 2.0


def test_timeout_returns_as_soon_as_a_message_arrives(queue: MessageQueue) -> None:
    threading.Timer(0.1, queue.put, args=(b"late",)).start()
    start = time.monotonic()
    assert queue.get(timeout=10) == b"late"
    assert time.monotonic() - start < 5


def ready_calls(queue: MessageQueue, timeout: Any) -> dict[str, Callable[[], Any]]:
    """Every call, with ``timeout``, on a queue that can take and give a message at once."""
    into = bytearray(queue.max_message_size)
    return {
        "put": lambda: queue.put(b"sent", timeout=timeout),
        "put_many": lambda: queue.put_many([b"sent"], timeout=timeout),
        "get": lambda: queue.get(timeout=timeout),
        "get_into": lambda: queue.get_into(into, timeout=timeout),
        "get_many": lambda: queue.get_many(3, timeout=timeout),
        "put_async": lambda: asyncio.run(queue.put_async(b"sent", timeout=timeout)),
        "get_async": lambda: asyncio.run(queue.get_async(timeout=timeout)),
    }


GOOD_TIMEOUTS = [None, 0, 0.0, 0.2, 1, 30, 1e-9, Decimal("0.5"), Fraction(1, 4), 2**31]


@pytest.mark.parametrize("timeout", GOOD_TIMEOUTS, ids=repr)
@pytest.mark.parametrize(
    "call", ["put", "put_many", "get", "get_into", "get_many", "put_async", "get_async"]
)
def test_every_timeout_works_when_the_queue_is_ready(
    make_queue: MakeQueue, call: str, timeout: Any
) -> None:
    queue = make_queue(max_messages=3, max_message_size=16)
    queue.put(b"waiting")
    start = time.monotonic()
    ready_calls(queue, timeout)[call]()
    assert time.monotonic() - start < 0.15  # no wait: the first attempt did it
    moved = 1 if call.startswith("put") else -1
    assert queue.current_messages == 1 + moved


BAD_TIMEOUTS: list[tuple[Any, type[Exception]]] = [
    (-1, InvalidParametersError),
    (-0.001, InvalidParametersError),
    (float("nan"), InvalidParametersError),
    (float("inf"), InvalidParametersError),
    (1e300, InvalidParametersError),
    (2**63, InvalidParametersError),
    (Decimal("-1"), InvalidParametersError),
    (True, TypeError),
    (False, TypeError),
    ("1", TypeError),
    (b"1", TypeError),
    ([1], TypeError),
    (object(), TypeError),
]


@pytest.mark.parametrize(("timeout", "error"), BAD_TIMEOUTS, ids=repr)
@pytest.mark.parametrize(
    "call", ["put", "put_many", "get", "get_into", "get_many", "put_async", "get_async"]
)
def test_bad_timeouts_raise_before_anything_moves(
    make_queue: MakeQueue, call: str, timeout: Any, error: type[Exception]
) -> None:
    """Even when the queue could take or give a message at once."""
    queue = make_queue(max_messages=3, max_message_size=16)
    queue.put(b"waiting")
    with pytest.raises(error, match="timeout"):
        ready_calls(queue, timeout)[call]()
    assert queue.get_many(10, timeout=0) == [b"waiting"]  # nothing sent, nothing taken


@pytest.mark.parametrize("priority", [-1, PRIORITY_MAX, True, 1.0, "1", None])
@pytest.mark.parametrize("call", ["put", "put_many", "put_async"])
def test_bad_priorities_raise_before_anything_is_sent(
    queue: MessageQueue, call: str, priority: Any
) -> None:
    calls: dict[str, Callable[[], Any]] = {
        "put": lambda: queue.put(b"x", timeout=0, priority=priority),
        "put_many": lambda: queue.put_many([b"x"], timeout=0, priority=priority),
        "put_async": lambda: asyncio.run(queue.put_async(b"x", timeout=0, priority=priority)),
    }
    with pytest.raises((InvalidParametersError, TypeError), match="priority"):
        calls[call]()
    assert queue.current_messages == 0


@pytest.mark.parametrize("timeout", ["1", [1], object()])
def test_timeout_of_wrong_type_is_a_type_error(queue: MessageQueue, timeout: object) -> None:
    with pytest.raises(TypeError, match="timeout must be"):
        queue.get(timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize("call", ["put", "put_many", "get", "get_into", "get_many"])
def test_timeout_zero_on_a_blocked_queue_raises_at_once(make_queue: MakeQueue, call: str) -> None:
    queue = make_queue(max_messages=1, max_message_size=16)
    if call.startswith("put"):
        queue.put(b"fills it")
    start = time.monotonic()
    with pytest.raises(TimedOutError):
        ready_calls(queue, 0)[call]()
    assert time.monotonic() - start < 0.1
    assert queue.current_messages == (1 if call.startswith("put") else 0)


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


def test_a_signal_handler_that_raises_interrupts_a_blocked_get_into(queue: MessageQueue) -> None:
    class Interrupted(Exception):
        pass

    def raise_interrupted(signum: int, frame: Any) -> None:
        raise Interrupted()

    buffer = bytearray(queue.max_message_size)
    previous = signal.signal(signal.SIGALRM, raise_interrupted)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    start = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            queue.get_into(buffer)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - start < 3
    queue.put(b"not lost")
    assert queue.get_into(buffer, timeout=0) == (8, 0)


def test_a_signal_handler_that_returns_lets_get_into_go_on(queue: MessageQueue) -> None:
    calls: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: calls.append(signum))
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    buffer = bytearray(queue.max_message_size)
    try:
        threading.Timer(0.3, queue.put, args=(b"after the storm",)).start()
        assert queue.get_into(buffer) == (15, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
    assert len(calls) > 10
    assert buffer[:15] == b"after the storm"


# -- batches ---------------------------------------------------------------------


def test_put_many_and_get_many_round_trip_in_order(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=64)
    sent = [f"message {i}".encode() for i in range(10)]
    assert queue.put_many(sent) == 10
    assert queue.get_many(4) == sent[:4]
    assert queue.get_many(100) == sent[4:]
    with pytest.raises(TimedOutError):
        queue.get_many(5, timeout=0)


def test_put_many_takes_any_iterable_and_mixed_types(queue: MessageQueue) -> None:
    mixed: list[MessageData] = ["text", b"bytes", bytearray(b"ba"), memoryview(b"mv")]
    assert queue.put_many(iter(mixed)) == 4
    assert queue.put_many([]) == 0
    assert queue.get_many(10) == [b"text", b"bytes", b"ba", b"mv"]


@pytest.mark.parametrize("single", ["hello", b"hello", bytearray(b"hello"), memoryview(b"hello")])
def test_put_many_refuses_a_single_message(queue: MessageQueue, single: object) -> None:
    with pytest.raises(TypeError, match=r"iterable of messages.*use put"):
        queue.put_many(single)  # type: ignore[arg-type]
    assert queue.current_messages == 0


def test_put_many_with_wide_items_counts_bytes(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=12)
    wide = array.array("i", [1, 2, 3])
    queue.put_many([wide, b"x"])
    assert queue.get_many(2) == [wide.tobytes(), b"x"]
    too_wide = array.array("i", [1, 2, 3, 4])  # 4 items, but 16 bytes
    with pytest.raises(MessageTooLargeError, match="message 1 of the batch has 16 bytes"):
        queue.put_many([b"x", too_wide])
    assert queue.current_messages == 0


def test_put_many_takes_every_buffer_put_takes_with_its_size_in_bytes(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue(max_messages=10, max_message_size=16)
    number = ctypes.c_int(5)  # no len() at all
    wide = array.array("h", [1, 2, 3])  # len() 3, 6 bytes
    assert queue.put_many([number, wide, memoryview(b"abcd")[1:3]]) == 3
    assert queue.get_many(5) == [bytes(number), wide.tobytes(), b"bc"]
    for item in (number, wide):
        queue.put(item)
    assert queue.get_many(5) == [bytes(number), wide.tobytes()]


@pytest.mark.skipif(
    sys.implementation.name == "pypy",
    reason="PyPy's own ctypes dies (SIGFPE) reading the buffer of an array of empty arrays",
)
def test_put_many_is_not_fooled_when_wrong_lengths_add_up(make_queue: MakeQueue) -> None:
    """array('h') of 3 items (6 bytes) and an array of 3 empty arrays (0
    bytes): len() says 3 and 3, which add up to the 6 bytes all the same."""
    queue = make_queue(max_messages=10, max_message_size=16)
    fooled: list[MessageData] = [array.array("h", [1, 2, 3]), ((ctypes.c_char * 0) * 3)()]
    assert queue.put_many(fooled) == 2
    assert queue.get_many(5) == [array.array("h", [1, 2, 3]).tobytes(), b""]


def test_put_many_of_nothing_on_a_closed_queue_raises(queue: MessageQueue) -> None:
    queue.close()
    with pytest.raises(QueueClosedError):
        queue.put_many([])


def test_unlinking_a_missing_queue_gives_no_advice_about_create(queue_name: str) -> None:
    with pytest.raises(QueueNotFoundError) as caught:
        unlink(queue_name)
    assert str(caught.value).endswith(f"queue {queue_name!r} does not exist")
    assert "create" not in str(caught.value)


def test_put_many_sends_nothing_when_one_message_is_bad(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=4)
    with pytest.raises(MessageTooLargeError, match="message 2 of the batch has 5 bytes") as caught:
        queue.put_many([b"ok", b"fine", b"large", b"x"])
    assert caught.value.index == 2
    with pytest.raises(TypeError, match=r"\(message 1\)"):
        queue.put_many([b"ok", 5])  # type: ignore[list-item]
    assert queue.current_messages == 0


def test_put_many_timeout_reports_how_many_were_sent(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=3, max_message_size=8)
    with pytest.raises(TimedOutError) as caught:
        queue.put_many([b"a", b"b", b"c", b"d", b"e"], timeout=0.05)
    assert caught.value.sent == 3
    with pytest.raises(TimedOutError) as caught:
        queue.put_many([b"f"], timeout=0)
    assert caught.value.sent == 0
    assert queue.get_many(10) == [b"a", b"b", b"c"]


def test_put_many_timeout_is_per_message(make_queue: MakeQueue) -> None:
    """A slow consumer that keeps making room lets a long batch through."""
    queue = make_queue(max_messages=1, max_message_size=8)
    received: list[bytes] = []

    def slow_consumer() -> None:
        for _ in range(5):
            time.sleep(0.1)
            received.append(queue.get(timeout=5))

    consumer = threading.Thread(target=slow_consumer)
    consumer.start()
    assert queue.put_many([b"1", b"2", b"3", b"4", b"5"], timeout=2) == 5
    consumer.join()
    assert received == [b"1", b"2", b"3", b"4", b"5"]


def test_get_many_keeps_priorities(queue: MessageQueue) -> None:
    queue.put(b"low")
    queue.put_many([b"high-1", b"high-2"], priority=9)
    messages = queue.get_many(10)
    assert messages == [b"high-1", b"high-2", b"low"]
    assert [m.priority for m in messages] == [9, 9, 0]


def test_get_many_waits_for_the_first_message_only(queue: MessageQueue) -> None:
    threading.Timer(0.1, queue.put_many, args=([b"a", b"b"],)).start()
    messages = queue.get_many(10, timeout=10)
    assert messages[0] == b"a"
    messages += queue.get_many(10, timeout=5) if len(messages) == 1 else []
    assert messages == [b"a", b"b"]


def test_get_many_takes_more_than_one_buffer(
    make_queue: MakeQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    import baseplate.message_queue.batches as module

    monkeypatch.setattr(module, "_BATCH_BUFFER_MAX", 3 * 8)  # buffers of 3 messages
    queue = make_queue(max_messages=10, max_message_size=8)
    queue.put_many([b"%d" % i for i in range(10)])
    assert queue.get_many(8) == [b"%d" % i for i in range(8)]
    assert queue.get_many(8) == [b"8", b"9"]


@pytest.mark.parametrize("count", [0, -3])
def test_get_many_needs_a_positive_count(queue: MessageQueue, count: int) -> None:
    with pytest.raises(InvalidParametersError, match="max_count"):
        queue.get_many(count)


# -- closing, unlinking, descriptors -------------------------------------------


def test_context_manager_closes(queue_name: str) -> None:
    with MessageQueue(queue_name) as queue:
        queue.put(b"x")
    assert queue.closed
    with pytest.raises(QueueClosedError, match="is closed"):
        queue.fileno()


def test_close_is_idempotent_and_every_use_then_fails(queue: MessageQueue) -> None:
    queue.close()
    queue.close()
    for call in (
        lambda: queue.put(b"x"),
        lambda: queue.put(b"x", timeout=1),
        lambda: queue.get(),
        lambda: queue.get(timeout=0),
        lambda: queue.put_many([b"x"]),
        lambda: queue.get_many(2),
        lambda: queue.current_messages,
        queue.fileno,
    ):
        with pytest.raises(QueueClosedError):
            call()
    assert isinstance(QueueClosedError("x"), MessageQueueError)


def test_closed_queue_never_touches_a_recycled_descriptor(make_queue: MakeQueue) -> None:
    first = make_queue()
    old_fd = first.fileno()
    first.close()
    second = make_queue()
    assert second.fileno() == old_fd  # the OS handed the number on
    with pytest.raises(QueueClosedError):
        first.put(b"intruder")
    with pytest.raises(QueueClosedError):
        first.get(timeout=0)
    assert second.current_messages == 0


def test_unlink_removes_the_name_but_the_object_keeps_working(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.unlink()
    assert not queue_exists(queue.name)
    queue.put(b"still here")
    assert queue.get() == b"still here"
    with pytest.raises(QueueNotFoundError):
        unlink(queue.name)


def test_dropped_queue_releases_its_descriptor_with_a_resource_warning(queue_name: str) -> None:
    before = settled_open_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        queue = MessageQueue(queue_name)
        assert open_fds() == before + 1  # the queue's descriptor
        with pytest.raises(TimedOutError):
            queue.get(timeout=0.001)
        assert open_fds() == before + 2  # and the wake descriptor, once a call has waited
        del queue
        gc.collect()
    assert open_fds() == before
    assert any(issubclass(w.category, ResourceWarning) for w in caught)


def test_no_descriptor_leak_over_many_cycles(queue_name: str) -> None:
    before = settled_open_fds()
    for i in range(10000):
        queue = MessageQueue(queue_name, max_messages=2, max_message_size=8)
        if i % 3 == 0:
            queue.close()
        elif i % 3 == 1:
            with queue:
                queue.put(b"x")
                queue.get()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                del queue
                if i % 300 == 2:  # PyPy closes a dropped object when it collects it:
                    gc.collect()  # keep within an ordinary user's 1024 descriptors
        with pytest.raises(QueueExistsError):
            MessageQueue(queue_name, exclusive=True)
        with pytest.raises(InvalidParametersError):
            MessageQueue("bad name")
    gc.collect()
    assert open_fds() == before


def eventfds() -> set[int]:
    """The eventfd descriptors this process has open."""
    found = set()
    for entry in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{entry}") == "anon_inode:[eventfd]":
                found.add(int(entry))
        except FileNotFoundError:  # the listing's own descriptor, closed since
            pass
    return found


def test_descriptors_are_non_blocking_and_close_on_exec(queue: MessageQueue) -> None:
    """The queue's descriptor never blocks (waits sleep in ppoll), and neither it
    nor the wake descriptor (an eventfd, made once a call waits) outlives exec."""
    before = eventfds()
    with pytest.raises(TimedOutError):
        queue.get(timeout=0.001)
    (wake,) = eventfds() - before
    for fd in (queue.fileno(), wake):
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    attr = ffi.new("struct mq_attr *")
    assert lib.mq_getattr(queue.fileno(), attr) == 0
    assert attr.mq_flags & lib.O_NONBLOCK


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


def test_queue_opened_before_fork_works_in_the_child(queue: MessageQueue) -> None:
    queue.put(b"from parent")
    pid = os.fork()
    if pid == 0:
        try:
            ok = queue.get(timeout=5) == b"from parent"
            queue.put(b"from child")
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert queue.get(timeout=5) == b"from child"


# -- as an ordinary user (fork, then drop to uid 65534) --------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_queues_are_private_by_default_whatever_the_umask(queue_name: str, umask: int) -> None:
    old = os.umask(umask)
    try:
        queue = MessageQueue(queue_name)
    finally:
        os.umask(old)
    with queue:
        assert queue.mode == 0o600
        assert (queue.uid, queue.gid) == (os.geteuid(), os.getegid())


# A child that drops to uid 65534 and opens the queue named by argv[1]; it
# prints what it was told. Run in a mount namespace of its own.
OPEN_AS_NOBODY = """
import os, sys
from baseplate.message_queue import MessageQueue, QueuePermissionError
pid = os.fork()
if pid == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    try:
        MessageQueue(sys.argv[1], create=False).close()
        print("opened")
    except QueuePermissionError as error:
        print(error)
    sys.stdout.flush()  # os._exit() flushes nothing
    os._exit(0)
os.waitpid(pid, 0)
"""


@pytest.mark.parametrize("mounted", [True, False], ids=["mqueue mounted", "not mounted"])
def test_another_user_is_refused_and_told_whose_queue_it_is(queue_name: str, mounted: bool) -> None:
    MessageQueue(queue_name).close()  # root's, 0o600 by default
    result = run_in_mount_namespace(OPEN_AS_NOBODY, mounted, (queue_name,))
    message = result.stdout
    assert "permission denied to open queue" in message, result.stderr
    if mounted:
        assert "it belongs to root (uid 0), gid 0, mode 0600." in message
    else:
        assert "mount -t mqueue none /dev/mqueue" in message
    assert "mode=0o660" in message  # how to share it


def test_a_group_shared_queue_opens_for_its_group(queue_name: str) -> None:
    need_root("the test gives the queue to group 65534, and uid 65534 opens it")
    with MessageQueue(queue_name, mode=0o660) as queue:
        os.fchown(queue.fileno(), -1, NOBODY)  # as `chgrp` on the mqueue file system does
        assert queue.gid == NOBODY
        queue.put(b"for the group")

    def take_as_group_member() -> bytes:
        with MessageQueue(queue_name, create=False) as shared:
            return bytes(shared.get(timeout=0))

    assert run_as_nobody(take_as_group_member) == b"for the group"


def test_mode_is_honoured_for_other_users(make_queue: MakeQueue) -> None:
    private = make_queue(mode=0o600)

    def open_private() -> str:
        try:
            MessageQueue(private.name)
        except QueuePermissionError as error:
            return f"{type(error).__name__} {error.errno} {error}"
        return "opened"

    outcome = run_as_nobody(open_private)
    assert outcome.startswith(f"QueuePermissionError {errno.EACCES}")
    assert private.name in outcome


def test_read_only_access_opens_for_reading_only(make_queue: MakeQueue) -> None:
    shared = make_queue(mode=0o644)
    shared.put(b"for everyone")

    def read_then_write() -> tuple[bytes, str]:
        queue = MessageQueue(shared.name)
        message = bytes(queue.get(timeout=5))
        try:
            queue.put(b"intruder")
        except QueuePermissionError as error:
            return message, str(error)
        return message, "sent"

    message, outcome = run_as_nobody(read_then_write)
    assert message == b"for everyone"
    assert "opened for reading only" in outcome
    assert shared.current_messages == 0


def test_sysctl_limits_give_a_precise_error_for_ordinary_users(queue_name: str) -> None:
    msg_max = int(Path("/proc/sys/fs/mqueue/msg_max").read_text())
    msgsize_max = int(Path("/proc/sys/fs/mqueue/msgsize_max").read_text())

    def over_the_limit() -> str:
        try:
            MessageQueue(queue_name, max_messages=msg_max + 1, max_message_size=msgsize_max + 1)
        except InvalidParametersError as error:
            assert isinstance(error, ValueError)
            return str(error)
        return "created"

    message = run_as_nobody(over_the_limit)
    assert f"max_messages={msg_max + 1} exceeds fs.mqueue.msg_max={msg_max}" in message
    assert (
        f"max_message_size={msgsize_max + 1} exceeds fs.mqueue.msgsize_max={msgsize_max}" in message
    )
    assert "sysctl -w fs.mqueue.msg_max=" in message
    assert not queue_exists(queue_name)


def test_exhausted_rlimit_msgqueue_explains_ulimit_q(queue_name: str) -> None:

    def create_too_big() -> tuple[int, str]:
        try:
            MessageQueue(queue_name, max_messages=10, max_message_size=8192)
        except MessageQueueOSError as error:
            return error.errno or 0, str(error.strerror)
        return 0, "created"

    code, message = run_as_nobody(create_too_big, {RLIMIT_MSGQUEUE: (1000, 1000)})
    assert code == errno.EMFILE
    assert "ulimit -q = 1000 bytes" in message and "RLIMIT_MSGQUEUE" in message
    assert not queue_exists(queue_name)


def test_errors_form_one_hierarchy() -> None:
    assert issubclass(TimedOutError, MessageQueueError)
    assert issubclass(InvalidParametersError, ValueError)
    assert issubclass(MessageTooLargeError, ValueError)
    for cls, base in (
        (QueueNotFoundError, FileNotFoundError),
        (QueueExistsError, FileExistsError),
        (QueuePermissionError, PermissionError),
    ):
        assert issubclass(cls, MessageQueueOSError) and issubclass(cls, base)
    assert issubclass(MessageQueueOSError, OSError) and issubclass(
        MessageQueueOSError, MessageQueueError
    )


def test_raw_binding_exposes_the_c_surface() -> None:
    assert lib.MQ_PRIO_MAX == PRIORITY_MAX == 32768
    for name in (
        "mq_open",
        "mq_close",
        "mq_unlink",
        "mq_send",
        "mq_receive",
        "mq_getattr",
        "mq_timedsend",
        "mq_timedreceive",
    ):
        assert callable(getattr(lib, name))
