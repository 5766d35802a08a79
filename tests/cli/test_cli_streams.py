"""Every command owns its standard streams: a failed, closed or abandoned
stdout, or a failing stderr, ends it in words and a status, never a traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from typing import Callable, List

import pytest

from baseplate.message_queue import MessageQueue
from baseplate.message_queue.cli.stdio import EXIT_BROKEN_PIPE, EXIT_IO_ERROR
from helpers import BPMQ, SEED, run_in_mount_namespace, unlink_quietly

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
