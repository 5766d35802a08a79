"""Other users, other outputs: a consumer that may not write to its queue, a
pipe of another user, a TCP socket, modes, and the words each user is told."""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
from typing import Callable

import pytest

from baseplate.message_queue import RLIMIT_MSGQUEUE, MessageQueue
from baseplate.message_queue.cli.stdio import EXIT_IO_ERROR
from helpers import (
    BPMQ,
    NOBODY,
    SEED,
    need_root,
    run,
    run_cli_as_nobody,
    run_in_mount_namespace,
    unlink_quietly,
)

MakeQueue = Callable[..., MessageQueue]


def shared_read_only(make_queue: MakeQueue, messages: list[bytes]) -> MessageQueue:
    """A queue of root's that others may read (0604) but not write."""
    need_root("the queue belongs to root, and uid 65534 reads it")
    queue = make_queue(max_messages=10, max_message_size=64)
    os.fchmod(queue.fileno(), 0o604)
    queue.put_many(messages)
    return queue


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


def test_a_signal_ends_read_within_seconds_on_a_pipe_it_cannot_reopen(
    make_queue: MakeQueue,
) -> None:
    """root's pipe, which uid 65534 cannot reopen non-blocking through /proc
    (sudo -u app baseplate-mq read /q | less): full, and never read."""
    need_root("the pipe belongs to root, and uid 65534 writes to it")
    queue = make_queue(max_messages=10, max_message_size=8192)
    os.fchmod(queue.fileno(), 0o606)
    sent = [bytes([65 + i]) * 8000 for i in range(10)]
    queue.put_many(sent)
    read_end, write_end = os.pipe()
    try:
        started = time.monotonic()
        result = run_cli_as_nobody(
            ["read", queue.name, "--in-flight", "100"],
            stdout=write_end,
            signal_after=(1.5, signal.SIGTERM),
        )
        took = time.monotonic() - started - 1.5
        os.set_blocking(read_end, False)
        piped = b""
        try:
            while chunk := os.read(read_end, 65536):
                piped += chunk
        except BlockingIOError:
            pass
    finally:
        os.close(read_end)
        os.close(write_end)
    assert result.returncode == -signal.SIGTERM, result
    assert took < 8  # FINISH_BUDGET + PUT_BACK_BUDGET, and no blocked write()
    whole = piped.split(b"\n")[:-1]
    left: list[bytes] = [*queue.get_many(20, timeout=0)]
    assert sorted(whole + left) == sorted(sent)  # none lost, none twice


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


# -- modes -----------------------------------------------------------------------


@pytest.mark.parametrize("command", ["create", "read", "write", "load"])
def test_mode_means_the_mode_whatever_the_umask(queue_name: str, command: str) -> None:
    args = {
        "create": ["create", queue_name],
        "read": ["read", queue_name, "--timeout", "0"],
        "write": ["write", queue_name],
        "load": ["load", queue_name, "--create"],
    }[command]
    old = os.umask(0o027)
    try:
        result = run([*BPMQ, *args, "--mode", "660"])
    finally:
        os.umask(old)
    assert result.returncode == 0, result.stderr
    with MessageQueue(queue_name, create=False) as queue:
        assert queue.mode == 0o660  # the group may write, as --mode 660 says


def test_create_on_a_queue_of_another_mode_names_both_and_the_fix(queue_name: str) -> None:
    old = os.umask(0o022)
    try:
        MessageQueue(queue_name, mode=0o660).close()  # 0640: as 1.0's --mode 660 made it
    finally:
        os.umask(old)
    result = run([*BPMQ, "create", queue_name, "--mode", "660"])
    assert result.returncode == 1
    said = result.stderr.decode()
    assert "already exists with --mode 640, not --mode 660" in said
    assert f"chmod 660 /dev/mqueue/{queue_name[1:]}" in said


def test_the_library_keeps_the_posix_meaning_of_mode(queue_name: str) -> None:
    old = os.umask(0o022)
    try:
        with MessageQueue(queue_name, mode=0o660) as queue:
            assert queue.mode == 0o640  # filtered by the umask, as os.open does
            os.fchmod(queue.fileno(), 0o660)  # what the docs say to do to share it
            assert queue.mode == 0o660
    finally:
        os.umask(old)


# -- words -----------------------------------------------------------------------


def test_the_queue_allowance_error_says_what_this_queue_needs(queue_name: str) -> None:
    """ulimit -q of 50,000 bytes: a queue of 10 x 8192 needs more than all of it."""
    limits = {RLIMIT_MSGQUEUE: (50_000, resource.getrlimit(RLIMIT_MSGQUEUE)[1])}
    too_big = run_cli_as_nobody(["create", queue_name], rlimits=limits)
    assert too_big.returncode == 1
    said = too_big.stderr.decode()
    assert "needs about 82880 bytes, more than this user's whole message queue allowance" in said
    assert "other queues" not in said
    assert "with --max-messages 10 and --max-message-size 8192" in said


def test_the_queue_allowance_error_speaks_of_other_queues_when_they_hold_it(
    queue_name: str,
) -> None:
    """ulimit -q of 100,000 bytes, 5 x 8192 already held by another queue of
    this user: a queue of 10 x 8192 fits the allowance, not what is left."""
    need_root("uid 65534 gets an allowance of its own")
    limits = {RLIMIT_MSGQUEUE: (100_000, resource.getrlimit(RLIMIT_MSGQUEUE)[1])}
    first, second = queue_name, queue_name + "-second"
    try:
        made = run_cli_as_nobody(
            ["create", first, "--max-messages", "5", "--max-message-size", "8192"], rlimits=limits
        )
        assert made.returncode == 0, made
        holder = MessageQueue(first, create=False)  # open: its bytes stay counted
        try:
            refused = run_cli_as_nobody(
                ["create", second, "--max-messages", "10", "--max-message-size", "8192"],
                rlimits=limits,
            )
        finally:
            holder.close()
        said = refused.stderr.decode()
        assert refused.returncode == 1, refused
        assert "it needs about 82880 bytes of this user's message queue allowance" in said
        assert "the user's other queues" in said
    finally:
        unlink_quietly(first)
        unlink_quietly(second)


# As uid 65534, forked (and imported) first: create a queue of mode 000, then info it.
OWN_QUEUE_REFUSED = """
import os, sys
import baseplate.message_queue.queue, baseplate.message_queue.cli.commands
from baseplate.message_queue.cli import main
pid = os.fork()
if pid == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    if os.fork() == 0:
        sys.argv = ["baseplate-mq", "create", sys.argv[1], "--mode", "000"]
        main()
    os.wait()
    sys.argv = ["baseplate-mq", "info", sys.argv[1]]
    main()
os.waitpid(pid, 0)
"""


@pytest.mark.parametrize("mounted", [True, False], ids=["mqueue mounted", "not mounted"])
def test_an_owner_refused_by_its_own_mode_is_not_told_to_be_itself(
    queue_name: str, mounted: bool
) -> None:
    try:
        result = run_in_mount_namespace(OWN_QUEUE_REFUSED, mounted, (queue_name,))
    finally:
        unlink_quietly(queue_name)
    said = result.stderr
    assert "permission denied to open queue" in said, result
    assert "same user" not in said and "runs as" not in said
    if mounted:
        assert "it is this user's own, but its mode 0000 does not allow even its owner" in said
        assert f"chmod 600 /dev/mqueue/{queue_name[1:]}" in said


def test_lengths_are_exact_or_more_than(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=10, max_message_size=16)
    exact = run([*BPMQ, "write", queue.name], b"x" * 20 + b"\n")
    assert b"line 1 has 20 bytes, more than the queue's max_message_size of 16" in exact.stderr
    endless = run([*BPMQ, "write", queue.name], b"y" * 200_000)
    assert b"line 1 has more than 16 bytes" in endless.stderr
    assert b"+ bytes" not in endless.stderr


def test_the_seed_command_speaks_as_itself(queue_name: str) -> None:
    result = run([*SEED, "--read", queue_name, "--max-messages", "11"])
    said = result.stderr.decode()
    assert said.startswith("python -m baseplate.message_queue: error: cannot create queue")
    assert "--max-messages 11 exceeds fs.mqueue.msg_max" in said


def test_option_errors_are_in_our_words(queue_name: str) -> None:
    for args, words in (
        (["--count", "abc"], "abc is not a whole number"),
        (["--count", "-1"], "-1 is out of range: give 0 or more"),
        (["--max-messages", "0"], "0 is out of range: give 1 or more"),
        (["--in-flight", "1.5"], "1.5 is not a whole number"),
    ):
        result = run([*BPMQ, "read", queue_name, *args])
        assert result.returncode == 2
        assert words.encode() in result.stderr
        assert b"valid integer range" not in result.stderr


def test_nobody_is_who_the_tests_think(queue_name: str) -> None:
    """The helper really runs as another user: the queue it makes is not root's."""
    need_root("the test changes user")
    made = run_cli_as_nobody(["create", queue_name])
    assert made.returncode == 0, made
    with MessageQueue(queue_name, create=False) as queue:
        assert queue.uid == NOBODY
