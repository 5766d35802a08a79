"""The library against real kernel queues: the seed's producer and consumer, and
what put and get send and receive (types, sizes, priorities, pickling)."""

from __future__ import annotations

import array
import os
import pickle
import subprocess
import sys
import textwrap
from typing import Callable

import pytest

from baseplate.message_queue import (
    PRIORITY_MAX,
    InvalidParametersError,
    Message,
    MessageQueue,
    MessageTooLargeError,
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
