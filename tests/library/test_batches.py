"""put_many and get_many: many messages in one call into C."""

from __future__ import annotations

import array
import ctypes
import sys
import threading
import time
from typing import Callable

import pytest

from baseplate.message_queue import (
    InvalidParametersError,
    MessageData,
    MessageQueue,
    MessageTooLargeError,
    QueueClosedError,
    QueueNotFoundError,
    TimedOutError,
    unlink,
)

MakeQueue = Callable[..., MessageQueue]

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
