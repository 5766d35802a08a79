"""Signals and odd descriptors: read and write never lose, duplicate or hang.
Real processes, real signals at random moments, real pipes."""

from __future__ import annotations

import fcntl
import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from baseplate.message_queue import MessageQueue, TimedOutError
from baseplate.message_queue.cli.stdio import EXIT_IO_ERROR
from helpers import BPMQ, run

MakeQueue = Callable[..., MessageQueue]


class Producer(threading.Thread):
    """Feeds numbered messages into a queue until stopped; remembers what it sent."""

    def __init__(self, queue: MessageQueue, size: int = 0) -> None:
        super().__init__(daemon=True)
        self.queue = queue
        self.padding = b"." * size
        self.sent: list[bytes] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        number = 0
        while not self.stopped.is_set():
            message = b"%08d" % number + self.padding
            try:
                self.queue.put(message, timeout=0.01)
            except TimedOutError:
                continue
            self.sent.append(message)
            number += 1

    def stop(self) -> list[bytes]:
        self.stopped.set()
        self.join(10)
        return self.sent


def drain(queue: MessageQueue) -> list[bytes]:
    left: list[bytes] = []
    while queue.current_messages:
        left += queue.get_many(100, timeout=0)
    return left


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_at_a_random_moment_loses_and_duplicates_nothing(
    make_queue: MakeQueue, tmp_path: Path, signum: int
) -> None:
    queue = make_queue(max_messages=10, max_message_size=64)
    rng = random.Random(signum)
    for trial in range(20):
        producer = Producer(queue)
        producer.start()
        target = tmp_path / f"out-{trial}.txt"
        with target.open("wb") as out:
            reader = subprocess.Popen(
                [*BPMQ, "read", queue.name], stdout=out, stderr=subprocess.PIPE
            )
            started = time.monotonic()
            while target.stat().st_size == 0 and time.monotonic() - started < 30:
                time.sleep(0.005)  # reading has begun (before, a signal just kills it)
            time.sleep(rng.uniform(0.0, 0.3))
            reader.send_signal(signum)
            code = reader.wait(timeout=20)
        sent = producer.stop()
        assert reader.stderr is not None
        stderr = reader.stderr.read()
        assert code == -signum, (trial, stderr)  # by the signal itself: a shell sees 128+N
        assert b"Traceback" not in stderr
        printed = target.read_bytes().split(b"\n")
        assert printed.pop() == b""  # every line written whole
        left = drain(queue)
        assert sorted(printed + left) == sorted(sent), trial  # nothing lost, none twice
        assert len(set(printed) & set(left)) == 0


def test_a_stalled_pipe_never_both_prints_and_puts_back(make_queue: MakeQueue) -> None:
    """10 messages of 8000 bytes, stdout a pipe nobody reads, then SIGTERM:
    the lines that reached the pipe whole are not put back too."""
    queue = make_queue(max_messages=10, max_message_size=8000)
    sent = [bytes([65 + i]) * 8000 for i in range(10)]
    queue.put_many(sent)
    read_end, write_end = os.pipe()
    reader = subprocess.Popen(
        [*BPMQ, "read", queue.name, "--in-flight", "100"], stdout=write_end, stderr=subprocess.PIPE
    )
    os.close(write_end)
    time.sleep(0.7)  # the pipe is full; the reader waits for room
    reader.send_signal(signal.SIGTERM)
    assert reader.wait(timeout=10) == -signal.SIGTERM
    os.set_blocking(read_end, False)
    piped = b""
    try:
        while chunk := os.read(read_end, 65536):
            piped += chunk
    except BlockingIOError:
        pass
    os.close(read_end)
    whole = [line for line in piped.split(b"\n")[:-1]]
    left = drain(queue)
    assert set(whole).isdisjoint(left)
    assert sorted(whole + left) == sorted(sent)
    assert len(whole) >= 7  # about 64 KiB went into the pipe


def stop_a_stalled_reader(queue: MessageQueue, signals: int) -> tuple[int, float, str]:
    """A reader holds many messages it cannot write (its pipe is never read)
    while a producer keeps the queue full, so they cannot go back either;
    SIGTERM it ``signals`` times, 0.3 s apart. Returns its exit status, the
    seconds from the last signal to its exit, and its stderr."""
    read_end, write_end = os.pipe()
    reader = subprocess.Popen(
        [*BPMQ, "read", queue.name, "--in-flight", "100000"],
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    producer = Producer(queue, size=40)
    producer.start()
    try:
        time.sleep(1.0)  # the pipe fills; the reader holds a backlog
        for number in range(signals):
            if number:
                time.sleep(0.3)  # putting back, in vain
            start = time.monotonic()
            reader.send_signal(signal.SIGTERM)
        code = reader.wait(timeout=20)
        took = time.monotonic() - start
    finally:
        producer.stop()
        os.close(read_end)
    assert reader.stderr is not None
    return code, took, reader.stderr.read().decode()


def test_sigterm_with_stalled_output_and_a_full_queue_ends_within_seconds(
    make_queue: MakeQueue,
) -> None:
    code, took, stderr = stop_a_stalled_reader(make_queue(max_messages=10, max_message_size=64), 1)
    assert (code, took < 10) == (-signal.SIGTERM, True)
    assert "lost: the queue had no room for them within 3 s" in stderr
    assert "Traceback" not in stderr


def test_a_second_signal_stops_the_put_back_and_says_what_is_lost(make_queue: MakeQueue) -> None:
    code, took, stderr = stop_a_stalled_reader(make_queue(max_messages=10, max_message_size=64), 2)
    assert (code, took < 2) == (-signal.SIGTERM, True)
    assert "lost: a further signal stopped putting them back" in stderr


@pytest.mark.parametrize("command", ["read", "write"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_seconds_must_be_finite(queue_name: str, command: str, value: str) -> None:
    result = run([*BPMQ, command, queue_name, "--timeout", value], b"x\n")
    assert result.returncode == 2
    assert b"is not a number of seconds" in result.stderr
    assert b"None" not in result.stderr


def test_read_with_stdout_closed(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.put(b"stays")
    result = run(["sh", "-c", f"{BPMQ[0]} read {queue.name} --count 1 >&-"])
    assert result.returncode == EXIT_IO_ERROR == 74
    assert result.stderr == b"baseplate-mq: error: standard output is closed\n"
    assert queue.get(timeout=0) == b"stays"


def test_write_with_stdin_closed(make_queue: MakeQueue) -> None:
    queue = make_queue()
    result = run(["sh", "-c", f"{BPMQ[0]} write {queue.name} <&-"])
    assert result.returncode == EXIT_IO_ERROR
    assert result.stderr == b"baseplate-mq: error: standard input is closed\n"
    assert queue.current_messages == 0


def test_read_into_a_full_device_puts_the_messages_back(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.put_many([b"one", b"two"])
    with open("/dev/full", "wb") as full:
        result = subprocess.run(
            [*BPMQ, "read", queue.name, "--count", "2"],
            stdout=full,
            stderr=subprocess.PIPE,
            timeout=30,
        )
    assert result.returncode == EXIT_IO_ERROR
    assert b"cannot write to standard output: No space left on device" in result.stderr
    assert len(result.stderr.splitlines()) == 1
    assert sorted(queue.get_many(5, timeout=0)) == [b"one", b"two"]


def test_read_into_a_non_blocking_pipe_that_is_momentarily_full(make_queue: MakeQueue) -> None:
    """A parent set O_NONBLOCK on the pipe: writes fail with EAGAIN while it
    is full, and read waits for room instead of failing."""
    queue = make_queue(max_messages=10, max_message_size=8000)
    read_end, write_end = os.pipe()
    fcntl.fcntl(write_end, fcntl.F_SETFL, fcntl.fcntl(write_end, fcntl.F_GETFL) | os.O_NONBLOCK)
    reader = subprocess.Popen(
        [*BPMQ, "read", queue.name, "--count", "30", "--in-flight", "100"],
        stdout=write_end,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    sent = [b"%02d" % i + b"x" * 7000 for i in range(30)]

    def feed() -> None:
        for message in sent:
            queue.put(message, timeout=30)

    feeder = threading.Thread(target=feed)
    feeder.start()
    time.sleep(0.5)  # the pipe is full by now
    received = b""
    with os.fdopen(read_end, "rb") as pipe:
        while chunk := pipe.read(4096):
            received += chunk
            time.sleep(0.001)
    feeder.join(30)
    assert reader.wait(timeout=30) == 0
    assert reader.stderr is not None and b"Traceback" not in reader.stderr.read()
    assert received.split(b"\n")[:-1] == sent


def test_write_interrupted_while_waiting_for_input_reports_the_exact_count(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue()
    writer = subprocess.Popen(
        [*BPMQ, "write", queue.name], stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert writer.stdin is not None and writer.stderr is not None
    writer.stdin.write(b"one\ntwo\n")
    writer.stdin.flush()
    time.sleep(0.5)  # both sent; now it waits for more input
    writer.send_signal(signal.SIGINT)
    assert writer.wait(timeout=10) == -signal.SIGINT
    assert b"interrupted: 2 line(s) were sent" in writer.stderr.read()
    assert queue.get_many(5, timeout=0) == [b"one", b"two"]
    writer.stdin.close()
