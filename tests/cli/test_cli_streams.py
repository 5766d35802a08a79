"""Standard streams: every command owns its own (a failed, closed or abandoned
stdout, or a failing stderr, ends it in words and a status, never a
traceback), and read and write move messages through them exactly: lines,
NULs and binary, pipes, files, sockets, slow and quitting readers, a
consumer that may not put back, a full queue."""

from __future__ import annotations

import fcntl
import os
import pty
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, List

import pytest

from baseplate.message_queue import MessageQueue
from baseplate.message_queue.cli.stdio import EXIT_BROKEN_PIPE, EXIT_IO_ERROR
from helpers import (
    BPMQ,
    SCRIPT,
    SEED,
    need_root,
    run,
    run_cli_as_nobody,
    run_in_mount_namespace,
    unlink_quietly,
)

MakeQueue = Callable[..., MessageQueue]

# Every command that prints, as argument lists; QUEUE is the test's queue.
PRINTING = {
    "info": ["info", "QUEUE"],
    "info --json": ["info", "QUEUE", "--json"],
    "create": ["create", "QUEUE", "--max-messages", "10", "--max-message-size", "64"],
    "--help": ["--help"],
    "read --help": ["read", "--help"],
    "--version": ["--version"],
    "seed --create": ["SEED", "--create", "QUEUE", "--max-message-size", "64"],
    "read": ["read", "QUEUE", "--count", "1", "--timeout", "1"],
    "dump": ["dump", "QUEUE"],
}


def command(name: str, queue: str) -> List[str]:
    words = PRINTING[name]
    prefix = SEED if words[0] == "SEED" else BPMQ
    return [*prefix, *(queue if word == "QUEUE" else word for word in words if word != "SEED")]


def shell(line: str) -> subprocess.CompletedProcess[bytes]:
    """Run ``line`` in sh: redirections such as ``>&-`` need a shell."""
    return subprocess.run(["sh", "-c", line], capture_output=True, timeout=60)


def quoted(words: List[str]) -> str:
    return " ".join(f"'{word}'" for word in words)


@pytest.fixture
def ready_queue(make_queue: MakeQueue) -> MessageQueue:
    queue = make_queue(max_messages=10, max_message_size=64)
    queue.put(b"a message")
    return queue


@pytest.mark.parametrize("name", list(PRINTING))
def test_a_full_device_exits_74_in_one_line(name: str, ready_queue: MessageQueue) -> None:
    result = shell(f"{quoted(command(name, ready_queue.name))} > /dev/full")
    assert result.returncode == EXIT_IO_ERROR, result
    lines = result.stderr.decode().splitlines()
    assert lines[-1].endswith("cannot write to standard output: No space left on device") or (
        "cannot write to standard output: No space left on device" in lines[-1]
    ), result.stderr
    assert b"Traceback" not in result.stderr and len(lines) <= 2  # a "created" note at most


@pytest.mark.parametrize("name", list(PRINTING))
def test_a_closed_stdout_exits_74(name: str, ready_queue: MessageQueue) -> None:
    result = shell(f"{quoted(command(name, ready_queue.name))} >&-")
    assert result.returncode == EXIT_IO_ERROR, result
    assert result.stderr.decode().splitlines()[-1].endswith("standard output is closed")
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("name", list(PRINTING))
def test_a_reader_that_went_away_exits_141(name: str, ready_queue: MessageQueue) -> None:
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read
    try:
        result = subprocess.run(
            command(name, ready_queue.name), stdout=write_end, stderr=subprocess.PIPE, timeout=60
        )
    finally:
        os.close(write_end)
    assert result.returncode == EXIT_BROKEN_PIPE, result
    assert b"Traceback" not in result.stderr


@pytest.mark.parametrize("stderr", ["2>&-", "2>/dev/full"])
@pytest.mark.parametrize("name", ["info", "--help", "create"])
def test_a_closed_or_failing_stderr_changes_no_status(
    name: str, stderr: str, ready_queue: MessageQueue
) -> None:
    ok = shell(f"{quoted(command(name, ready_queue.name))} {stderr} > /dev/null")
    assert ok.returncode == 0, ok
    failing = shell(f"{quoted(command(name, ready_queue.name))} {stderr} > /dev/full")
    assert failing.returncode == EXIT_IO_ERROR, failing
    missing = shell(f"{quoted([*BPMQ, 'info', ready_queue.name + '-missing'])} {stderr}")
    assert missing.returncode == 1, missing
    for result in (ok, failing, missing):
        assert b"Traceback" not in result.stdout + result.stderr


def test_create_says_the_queue_was_created_when_its_output_failed(queue_name: str) -> None:
    result = shell(f"{quoted([*BPMQ, 'create', queue_name])} > /dev/full")
    assert result.returncode == EXIT_IO_ERROR
    assert f"queue {queue_name} was created, but cannot write to standard output".encode() in (
        result.stderr
    )
    MessageQueue(queue_name, create=False).close()  # it was


@pytest.mark.parametrize("limit", [6, 8, 10, 12])
def test_no_descriptor_left_is_said_in_words(limit: int, ready_queue: MessageQueue) -> None:
    """ulimit -n that leaves the command few descriptors, with a socket for
    stdout (which 1.0 dup'ed): a status and words, never a traceback."""
    ours, theirs = socket.socketpair()
    with ours, theirs:
        result = subprocess.run(
            [
                "sh",
                "-c",
                f'ulimit -n {limit}; exec "$@"',
                "sh",
                *BPMQ,
                "read",
                ready_queue.name,
                "--count",
                "1",
                "--timeout",
                "1",
            ],
            stdout=theirs.fileno(),
            stderr=subprocess.PIPE,
            timeout=60,
        )
    assert b"Traceback" not in result.stderr, result.stderr
    assert result.returncode in (0, 1), result  # done, or "no file descriptor left"
    if result.returncode == 1:
        assert b"ulimit -n" in result.stderr


# ls needs the mqueue file system: it runs in a mount namespace of its own.
LS_INTO = """
import os, subprocess, sys
target = sys.argv[1]
command = [sys.executable, "-c", "from baseplate.message_queue.cli import main; main()", "ls"]
command += sys.argv[2:]
if target == "closed":
    result = subprocess.run(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            preexec_fn=lambda: os.close(1))
elif target == "gone":
    read_end, write_end = os.pipe()
    os.close(read_end)
    result = subprocess.run(command, stdout=write_end, stderr=subprocess.PIPE)
else:
    with open(target, "wb") as out:
        result = subprocess.run(command, stdout=out, stderr=subprocess.PIPE)
print(result.returncode)
sys.stdout.write(result.stderr.decode())
"""


@pytest.mark.parametrize("json", [False, True], ids=["ls", "ls --json"])
@pytest.mark.parametrize(
    "target, status, said",
    [
        ("/dev/full", EXIT_IO_ERROR, "cannot write to standard output: No space left on device"),
        ("closed", EXIT_IO_ERROR, "standard output is closed"),
        ("gone", EXIT_BROKEN_PIPE, ""),
    ],
)
def test_ls_owns_its_stdout_too(
    target: str, status: int, said: str, json: bool, ready_queue: MessageQueue
) -> None:
    args = (target, "--json") if json else (target,)
    result = run_in_mount_namespace(LS_INTO, mounted=True, args=args)
    code, *stderr = result.stdout.splitlines()
    assert int(code) == status, result
    assert stderr == ([f"baseplate-mq: error: {said}"] if said else [])


def test_the_help_of_a_queue_named_like_an_option_is_not_help(queue_name: str) -> None:
    """A queue name never reaches click as an option: it is checked as a name."""
    try:
        result = subprocess.run(
            [*BPMQ, "create", "--", f"{queue_name}--help"], capture_output=True, timeout=60
        )
        assert result.returncode == 0, result
        assert result.stdout.startswith(f"{queue_name}--help: ".encode())
    finally:
        unlink_quietly(f"{queue_name}--help")


def test_python_m_runs_the_same_checks(queue_name: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "baseplate.message_queue.cli", "info", queue_name],
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert result.stderr.startswith(b"baseplate-mq: error: queue ")


def shared_read_only(make_queue: MakeQueue, messages: list[bytes]) -> MessageQueue:
    """A queue of root's that others may read (0604) but not write."""
    need_root("the queue belongs to root, and uid 65534 reads it")
    queue = make_queue(max_messages=10, max_message_size=64)
    os.fchmod(queue.fileno(), 0o604)
    queue.put_many(messages)
    return queue


def test_twenty_thousand_utf8_lines_arrive_identical_and_in_order(
    queue_name: str, tmp_path: Path
) -> None:
    lines = [f"line {i} ✓ — naïve café {'x' * (i % 90)}" for i in range(20000)]
    source = tmp_path / "input.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    target = tmp_path / "output.txt"
    with target.open("wb") as stdout:  # a file, so the reader never waits on us
        reader = subprocess.Popen([*BPMQ, "read", queue_name, "--count", "20000"], stdout=stdout)
        with source.open("rb") as stdin:
            writer = subprocess.run(
                [*BPMQ, "write", queue_name], stdin=stdin, capture_output=True, timeout=120
            )
        assert reader.wait(timeout=120) == 0
    assert writer.returncode == 0, writer.stderr
    assert target.read_bytes() == source.read_bytes()


def test_output_is_prompt_when_messages_trickle_in(make_queue: MakeQueue) -> None:
    queue = make_queue()
    reader = subprocess.Popen([*BPMQ, "read", queue.name], stdout=subprocess.PIPE)
    assert reader.stdout is not None
    try:
        for word in (b"first", b"second"):
            queue.put(word)
            assert reader.stdout.readline() == word + b"\n"  # without waiting for a buffer to fill
    finally:
        reader.send_signal(signal.SIGINT)
        assert reader.wait(timeout=10) == -signal.SIGINT


def test_null_delimited_messages_may_hold_newlines(queue_name: str) -> None:
    assert run([*BPMQ, "write", queue_name, "-0"], b"multi\nline\0second\0").returncode == 0
    result = run([*BPMQ, "read", queue_name, "--null", "--count", "2"])
    assert result.stdout == b"multi\nline\0second\0"


def test_write_strips_line_endings_keeps_empty_lines_and_a_last_unterminated_line(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue()
    assert run([*BPMQ, "write", queue.name], b"a\n\nb\nlast").returncode == 0
    assert queue.get_many(10) == [b"a", b"", b"b", b"last"]


def test_binary_lines_pass_through_unchanged(make_queue: MakeQueue) -> None:
    queue = make_queue()
    payload = b"\xff\xfe\x00\x80 bytes"
    assert run([*BPMQ, "write", queue.name], payload + b"\n").returncode == 0
    assert queue.get(timeout=0) == payload
    queue.put(payload)
    assert run([*BPMQ, "read", queue.name, "--count", "1"]).stdout == payload + b"\n"


def test_line_too_long_sends_the_lines_before_it_only(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=8)
    result = run([*BPMQ, "write", queue.name], b"one\ntwo\nthis line is too long\nfour\n")
    assert result.returncode == 1
    assert b"line 3 has 21 bytes" in result.stderr and b"max_message_size of 8" in result.stderr
    assert queue.get_many(10) == [b"one", b"two"]


def test_endless_line_is_refused_without_reading_it_all(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=8)
    writer = subprocess.Popen(
        [*BPMQ, "write", queue.name], stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert writer.stdin is not None
    writer.stdin.write(b"ok\n" + b"x" * 100_000)
    writer.stdin.flush()  # never closed: the writer must give up on its own
    assert writer.wait(timeout=30) == 1
    assert writer.stderr is not None and b"line 2 has" in writer.stderr.read()
    writer.stdin.close()
    assert queue.get_many(10) == [b"ok"]


def test_read_into_a_closed_pipe_is_quiet_and_puts_messages_back(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.put_many([b"%d" % i for i in range(6)])
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will ever read
    with os.fdopen(write_end, "wb") as broken:
        reader = subprocess.run(
            [*BPMQ, "read", queue.name, "--count", "6"],
            stdout=broken,
            stderr=subprocess.PIPE,
            timeout=30,
        )
    assert reader.returncode == 141
    assert reader.stderr == b""
    assert sorted(queue.get_many(10, timeout=5)) == [b"%d" % i for i in range(6)]


def test_read_piped_into_head(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.put_many([b"first", b"second"])
    result = run(["sh", "-c", f"{SCRIPT} read {queue.name} | head -1"])
    assert result.stdout == b"first\n"
    assert result.stderr == b""


def test_read_into_head_loses_at_most_one_message(make_queue: MakeQueue) -> None:
    """seq 5 | write; read | head -1: head prints 1, and of the other four at
    least three stay queued (one at most was taken and never read)."""
    queue = make_queue()
    for trial in range(10):
        assert run([*BPMQ, "write", queue.name], b"1\n2\n3\n4\n5\n").returncode == 0
        result = run(["sh", "-c", f"{SCRIPT} read {queue.name} | head -1"])
        assert result.stdout == b"1\n", trial
        left = sorted(queue.get_many(10, timeout=0)) if queue.current_messages else []
        assert len(left) >= 3, (trial, left)
        assert set(left) <= {b"2", b"3", b"4", b"5"}


def test_in_flight_bounds_what_a_quitting_reader_loses(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=16)
    queue.put_many([b"%d" % i for i in range(10)])
    result = run(["sh", "-c", f"{SCRIPT} read {queue.name} --in-flight 3 | head -2"])
    assert result.stdout == b"0\n1\n"
    left = queue.get_many(10, timeout=0)
    # head took 2; at most 3 were in the pipe unread when it quit, and it may
    # have read 3 at once and dropped the third (a reader's own read-ahead).
    assert len(left) >= 10 - 2 - (3 + 2)


def test_a_file_gets_everything_at_once(make_queue: MakeQueue, tmp_path: Path) -> None:
    queue = make_queue()
    queue.put_many([b"%d" % i for i in range(10)])
    target = tmp_path / "out"
    with target.open("wb") as out:
        result = subprocess.run(
            [*BPMQ, "read", queue.name, "--timeout", "0.2"], stdout=out, timeout=30
        )
    assert result.returncode == 0
    assert target.read_bytes() == b"".join(b"%d\n" % i for i in range(10))


def test_a_slow_reader_on_a_pipe_gets_everything_in_order(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=16)
    sent = [b"%03d" % i for i in range(200)]
    reader = subprocess.Popen([*BPMQ, "read", queue.name, "--count", "200"], stdout=subprocess.PIPE)
    assert reader.stdout is not None

    def feed() -> None:
        for message in sent:
            queue.put(message, timeout=30)

    feeder = threading.Thread(target=feed)
    feeder.start()
    got = []
    for _ in sent:
        got.append(reader.stdout.readline().rstrip(b"\n"))
        if len(got) % 50 == 0:
            time.sleep(0.05)
    feeder.join(30)
    assert reader.wait(timeout=30) == 0
    assert got == sent


def test_write_on_a_terminal_says_when_the_queue_stays_full(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=2, max_message_size=8)
    controller, terminal = pty.openpty()
    writer = subprocess.Popen([*BPMQ, "write", queue.name], stdin=subprocess.PIPE, stderr=terminal)
    os.close(terminal)
    assert writer.stdin is not None
    writer.stdin.write(b"a\nb\nc\n")
    writer.stdin.close()
    try:
        seen = b""
        deadline = time.monotonic() + 10
        while b"\n" not in seen and time.monotonic() < deadline:
            seen += os.read(controller, 1024)
        assert b"is full (2 of 2 messages): waiting for a reader" in seen
        assert writer.poll() is None  # still waiting, as it said
        queue.get()
        assert writer.wait(timeout=10) == 0
    finally:
        writer.kill()
        os.close(controller)
    assert queue.get_many(5, timeout=0) == [b"b", b"c"]


def test_write_to_a_full_queue_says_nothing_when_stderr_is_not_a_terminal(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue(max_messages=1, max_message_size=8)
    result = run([*BPMQ, "write", queue.name, "--timeout", "1.5"], b"a\nb\n")
    assert result.returncode == 1
    assert b"is full" not in result.stderr and b"timed out after 1.5 s" in result.stderr


def test_a_read_only_consumer_takes_one_at_a_time_and_says_what_is_lost(
    make_queue: MakeQueue,
) -> None:
    queue = shared_read_only(make_queue, [b"one", b"two", b"three"])
    full = os.open("/dev/full", os.O_WRONLY)
    try:
        result = run_cli_as_nobody(["read", queue.name, "--timeout", "1"], stdout=full)
    finally:
        os.close(full)
    assert result.returncode == EXIT_IO_ERROR, result
    said = result.stderr.decode()
    assert "cannot write to standard output: No space left on device" in said
    assert "of the 1 message it held, 1 lost: the queue is read-only for this user" in said
    assert "put back" not in said
    assert queue.get_many(10, timeout=0) == [b"two", b"three"]  # it took one only


def test_a_read_only_consumer_reads_everything_in_order(make_queue: MakeQueue) -> None:
    sent = [b"%d" % i for i in range(10)]
    queue = shared_read_only(make_queue, sent)
    result = run_cli_as_nobody(["read", queue.name, "--count", "10"])
    assert result.returncode == 0, result
    assert result.stdout.splitlines() == sent


def test_a_tcp_socket_is_said_to_have_no_bound(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=64)
    queue.put_many([b"%d" % i for i in range(5)])
    with socket.create_server(("127.0.0.1", 0)) as server:
        client = socket.create_connection(server.getsockname())
        peer, _ = server.accept()
        with client, peer:
            result = subprocess.run(
                [*BPMQ, "read", queue.name, "--count", "5"],
                stdout=client.fileno(),
                stderr=subprocess.PIPE,
                timeout=60,
            )
            client.shutdown(socket.SHUT_WR)
            received = b""
            while chunk := peer.recv(65536):
                received += chunk
    assert result.returncode == 0
    assert received.splitlines() == [b"%d" % i for i in range(5)]
    said = result.stderr.decode()
    assert said.count("standard output is a TCP socket") == 1  # said once
    assert "cannot learn what the reader there has read" in said
    assert "--in-flight bounds that only on a pipe or a Unix socket" in said


def test_a_unix_socket_keeps_the_bound_and_says_nothing(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=64)
    queue.put_many([b"a", b"b"])
    ours, theirs = socket.socketpair()
    with ours, theirs:
        reader = subprocess.Popen(
            [*BPMQ, "read", queue.name, "--count", "2"],
            stdout=theirs.fileno(),
            stderr=subprocess.PIPE,
        )
        received = b""
        while len(received) < 4:  # it sends the second once the first is read
            received += ours.recv(100)
        assert reader.wait(timeout=30) == 0
    assert received == b"a\nb\n"
    assert reader.stderr is not None and reader.stderr.read() == b""


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
