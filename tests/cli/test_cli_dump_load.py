"""dump and load: lossless JSON Lines of every byte and priority, and the
lines load refuses. Real processes on real queues."""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest

from baseplate.message_queue import Message, MessageQueue
from baseplate.message_queue.cli.dump_format import dump_line, parse_dump_line
from helpers import BPMQ, SCRIPT, run, unlink_quietly

MakeQueue = Callable[..., MessageQueue]


# Ten messages that plain lines could not carry: NUL, newlines, bytes that
# are not UTF-8, an empty one, text beyond ASCII, and mixed priorities.
AWKWARD = [
    (b"plain text", 0),
    (b"two\nlines", 3),
    (b"\x00nul\x00", 0),
    (b"\xff\xfe not utf-8 \x80", 7),
    (b"", 0),
    ("naïve café ✓".encode(), 3),
    (b"\r\n\t", 1),
    (b'{"v": 1} looks like JSON', 0),
    (bytes(range(256)), 32767),
    (b"last", 7),
]


def fill(queue: MessageQueue) -> list[tuple[bytes, int]]:
    for payload, priority in AWKWARD:
        queue.put(payload, priority=priority)
    # The order get() gives: by priority, then first in first out.
    return sorted(AWKWARD, key=lambda item: -item[1])


def contents(queue: MessageQueue) -> list[tuple[bytes, int]]:
    return [(bytes(m), m.priority) for m in queue.get_many(100, timeout=0)]


def _message(payload: bytes, priority: int) -> Message:
    message = Message(payload)
    message.priority = priority
    return message


def test_dump_and_load_round_trip_every_byte_and_priority(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    source = make_queue(max_messages=10, max_message_size=512)
    expected = fill(source)
    saved = tmp_path / "saved.jsonl"
    with saved.open("wb") as out:
        dumped = subprocess.run([*BPMQ, "dump", source.name], stdout=out, capture_output=False)
    assert dumped.returncode == 0
    assert source.current_messages == 0  # drained
    lines = saved.read_bytes().splitlines()
    assert len(lines) == 10
    assert json.loads(lines[0]) == {
        "v": 1,
        "priority": 32767,
        "base64": json.loads(lines[0])["base64"],
    }
    assert {"v": 1, "priority": 3, "text": "two\nlines"} in [json.loads(line) for line in lines]
    target_name = f"/bp-test-{uuid.uuid4().hex}"
    try:
        loaded = run(
            [*BPMQ, "load", target_name, "--create", "--max-message-size", "300"],
            saved.read_bytes(),
        )
        assert loaded.returncode == 0, loaded.stderr
        assert b"created queue" in loaded.stderr
        with MessageQueue(target_name, create=False) as target:
            assert target.max_message_size == 300  # other sizes, same content
            assert contents(target) == expected
    finally:
        unlink_quietly(target_name)


def test_load_stops_before_a_message_too_long_for_the_target(
    make_queue: MakeQueue, tmp_path: Path
) -> None:
    lines = b"".join(
        dump_line(_message(payload, 0)) for payload in (b"short", b"x" * 100, b"after")
    )
    target = make_queue(max_messages=10, max_message_size=16)
    result = run([*BPMQ, "load", target.name], lines)
    assert result.returncode == 1
    assert result.stderr == (
        b"baseplate-mq: error: line 2 has 100 bytes, more than the queue's max_message_size "
        b"of 16; the 1 line(s) before it were sent, nothing after it\n"
    )
    assert contents(target) == [(b"short", 0)]


@pytest.mark.parametrize(
    ("bad", "why"),
    [
        (b'{"v": 1, "priority": 0, "text": "cut sh', "not a JSON object"),
        (b"not json at all", "not a JSON object"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"v": 2, "priority": 0, "text": "x"}', "format version 2"),
        (b'{"v": 1, "priority": -1, "text": "x"}', "priority -1"),
        (b'{"v": 1, "priority": true, "text": "x"}', "priority True"),
        (b'{"v": 1, "priority": 0}', 'exactly one of "text" and "base64"'),
        (b'{"v": 1, "priority": 0, "base64": "***"}', "not valid base64"),
        (b'{"v": 1, "priority": 0, "text": "\\ud800"}', "lone surrogate"),
        (b'{"v": 1, "text": "x"}', 'it has no "priority"'),
        (b"[" * 3000 + b"]" * 3000, "not a JSON object"),  # nested deeply: no RecursionError
        (b'{"v": true, "priority": 0, "text": "x"}', "format version True"),
        (b'{"v": 1.0, "priority": 0, "text": "x"}', "format version 1.0"),
    ],
)
def test_a_corrupt_line_is_named_after_the_lines_before_it_were_loaded(
    make_queue: MakeQueue, bad: bytes, why: str
) -> None:
    target = make_queue()
    good = dump_line(_message(b"first", 2)) + dump_line(_message(b"second", 0))
    result = run([*BPMQ, "load", target.name], good + bad + b"\n" + dump_line(_message(b"x", 0)))
    assert result.returncode == 1
    message = result.stderr.decode()
    assert message.startswith("baseplate-mq: error: line 3 is not a message of dump's format")
    assert why in message and "the 2 message(s) before it were loaded" in message
    assert len(message.splitlines()) == 1
    assert contents(target) == [(b"first", 2), (b"second", 0)]


def test_blank_lines_are_skipped_and_line_numbers_count_every_line(make_queue: MakeQueue) -> None:
    target = make_queue()
    good = dump_line(_message(b"first", 2)).replace(b"\n", b"\r\n")  # CRLF, as edited elsewhere
    result = run([*BPMQ, "load", target.name], b"\n" + good + b"  \t\r\n\n" + b"oops\n")
    assert result.returncode == 1
    assert b"line 5 is not a message of dump's format" in result.stderr
    assert b"the 1 message(s) before it were loaded" in result.stderr
    assert contents(target) == [(b"first", 2)]


def test_a_line_longer_than_any_that_fits_is_refused_without_reading_it_all(
    make_queue: MakeQueue,
) -> None:
    target = make_queue(max_messages=10, max_message_size=16)
    good = dump_line(_message(b"first", 0))
    endless = b'{"v": 1, "priority": 0, "text": "' + b"x" * 40_000_000  # no newline, ever
    started = time.monotonic()
    result = run([*BPMQ, "load", target.name], good + endless)
    assert time.monotonic() - started < 10  # not quadratic, not all of it
    assert result.returncode == 1
    message = result.stderr.decode()
    assert "line 2 has more than 160 bytes: longer than any line of dump's format" in message
    assert "the 1 message(s) before it were loaded" in message
    assert contents(target) == [(b"first", 0)]


def test_a_last_line_without_its_newline_still_loads(make_queue: MakeQueue) -> None:
    target = make_queue()
    result = run([*BPMQ, "load", target.name], dump_line(_message(b"end", 4)).rstrip(b"\n"))
    assert result.returncode == 0
    assert contents(target) == [(b"end", 4)]


def test_load_refuses_a_missing_queue_unless_asked_to_create(queue_name: str) -> None:
    result = run([*BPMQ, "load", queue_name], dump_line(_message(b"x", 0)))
    assert result.returncode == 1
    assert b"does not exist" in result.stderr and b"or add --create" in result.stderr


def test_dump_count_takes_that_many(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.put_many([b"1", b"2", b"3"])
    result = run([*BPMQ, "dump", queue.name, "--count", "2"])
    assert [parse_dump_line(line) for line in result.stdout.splitlines()] == [(0, b"1"), (0, b"2")]
    assert contents(queue) == [(b"3", 0)]
    short = run([*BPMQ, "dump", queue.name, "--count", "2"])
    assert short.returncode == 3 and b"got 0 of 2 messages" in short.stderr


def test_dump_follows_reads_rules_when_its_reader_quits(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.put_many([b"%d" % i for i in range(10)])
    result = run(["sh", "-c", f"{SCRIPT} dump {queue.name} | head -1"])
    assert parse_dump_line(result.stdout.rstrip(b"\n")) == (0, b"0")
    assert queue.current_messages >= 8


def test_dump_into_a_full_device_puts_everything_back(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.put(b"kept", priority=5)
    with open("/dev/full", "wb") as full:
        result = subprocess.run([*BPMQ, "dump", queue.name], stdout=full, stderr=subprocess.PIPE)
    assert result.returncode == 74
    assert contents(queue) == [(b"kept", 5)]


def test_the_dump_format_round_trips_any_bytes() -> None:
    for payload, priority in AWKWARD:
        assert parse_dump_line(dump_line(_message(payload, priority)).rstrip(b"\n")) == (
            priority,
            payload,
        )
