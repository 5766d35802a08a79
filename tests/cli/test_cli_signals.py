"""Signals: every command ends as the signal would, and read, write, dump and
load never lose, duplicate or hang when one comes. Real processes, real
signals at random moments, real pipes."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

import pytest

from baseplate.message_queue import MessageQueue
from baseplate.message_queue.cli.signals import ending_signals, signal_name
from helpers import (
    BPMQ,
    Producer,
    drain,
    has_open,
    need_root,
    read_what_is_there,
    run_cli_as_nobody,
    wait_until_it_takes,
)

MakeQueue = Callable[..., MessageQueue]


def ends_like(signum: int) -> int:
    """The returncode of a command that signal ``signum`` ended: by the signal
    itself (a shell sees 128+N), or 128+N without a core for SIGQUIT and SIGXCPU."""
    return 128 + signum if signum in (signal.SIGQUIT, signal.SIGXCPU) else -signum


class SlowReader(threading.Thread):
    """Reads a pipe slowly, to its end: what a consumer of `read` got."""

    def __init__(self, read_end: int) -> None:
        super().__init__(daemon=True)
        self.read_end = read_end
        self.got = b""

    def run(self) -> None:
        while chunk := os.read(self.read_end, 97):
            self.got += chunk
            time.sleep(0.0005)
        os.close(self.read_end)


def signal_a_busy_reader(
    queue: MessageQueue, tmp_path: Path, signum: int, trials: int, output: str
) -> None:
    """``read`` from a queue a producer keeps feeding, into a file or a slow
    pipe; ``signum`` at a random moment once it reads. Whatever it took is
    printed whole or back in the queue: nothing lost, none twice."""
    rng = random.Random(signum * 1000 + trials)
    for trial in range(trials):
        producer = Producer(queue)
        producer.start()
        target = tmp_path / f"out-{signum}-{trial}.txt"
        pipe = os.pipe() if output == "slow pipe" else None
        with target.open("wb") as out:
            reader = subprocess.Popen(
                [*BPMQ, "read", queue.name],
                stdout=out if pipe is None else pipe[1],
                stderr=subprocess.PIPE,
            )
        slow = None
        if pipe is not None:
            os.close(pipe[1])
            slow = SlowReader(pipe[0])
            slow.start()
        started = time.monotonic()
        while not (target.stat().st_size if slow is None else slow.got):
            assert time.monotonic() - started < 30, "read printed nothing"
            time.sleep(0.005)  # reading has begun
        time.sleep(rng.uniform(0.0, 0.3))
        reader.send_signal(signum)
        code = reader.wait(timeout=20)
        sent = producer.stop()
        if slow is not None:
            slow.join(20)
        assert reader.stderr is not None
        stderr = reader.stderr.read()
        assert code == ends_like(signum), (trial, stderr)
        assert b"Traceback" not in stderr
        printed = (target.read_bytes() if slow is None else slow.got).split(b"\n")
        assert printed.pop() == b""  # every line written whole
        left = drain(queue)
        assert sorted(printed + left) == sorted(sent), trial  # nothing lost, none twice
        assert len(set(printed) & set(left)) == 0


@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"]
)
def test_a_signal_at_a_random_moment_loses_and_duplicates_nothing(
    make_queue: MakeQueue, tmp_path: Path, signum: int
) -> None:
    queue = make_queue(max_messages=10, max_message_size=64)
    signal_a_busy_reader(queue, tmp_path, signum, trials=5, output="file")


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
    wait_until_it_takes(reader.pid, queue, len(sent))  # the pipe is full; it waits for room
    reader.send_signal(signal.SIGTERM)
    assert reader.wait(timeout=10) == -signal.SIGTERM
    piped = read_what_is_there(read_end)
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


# -- every signal that would end the process -------------------------------------

# Each named signal whose default ends the process, and three real-time ones.
ENDING = [
    *(signum for signum in ending_signals() if signum < signal.SIGRTMIN),
    signal.SIGRTMIN,
    signal.SIGRTMIN + 5,
    signal.SIGRTMAX,
]


def handlers_installed(pid: int) -> bool:
    """Whether process ``pid`` catches SIGHUP yet: our handlers are in place."""
    try:
        with open(f"/proc/{pid}/status") as status:
            caught = next(line for line in status if line.startswith("SigCgt:"))
    except (OSError, StopIteration):
        return False
    return bool(int(caught.split()[1], 16) & (1 << (signal.SIGHUP - 1)))


def start(args: list[str], **options: object) -> subprocess.Popen[bytes]:
    """Start ``baseplate-mq ARGS``; return once its signal handlers are in place."""
    process = subprocess.Popen([*BPMQ, *args], stderr=subprocess.PIPE, **options)  # type: ignore[call-overload]
    deadline = time.monotonic() + 30
    while not handlers_installed(process.pid):
        assert process.poll() is None and time.monotonic() < deadline, process.stderr
        time.sleep(0.002)
    return process  # type: ignore[no-any-return]


def assert_quiet(stderr: bytes) -> None:
    assert b"Traceback" not in stderr and b"Aborted!" not in stderr, stderr


@pytest.mark.parametrize("signum", ENDING, ids=[signal_name(s) for s in ENDING])
def test_every_ending_signal_ends_a_waiting_read_as_it_would(queue_name: str, signum: int) -> None:
    reader = start(["read", queue_name])
    time.sleep(0.3)  # waiting for a message
    reader.send_signal(signum)
    assert reader.wait(timeout=10) == ends_like(signum)
    assert reader.stderr is not None
    assert_quiet(reader.stderr.read())


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGQUIT, signal.SIGUSR1, signal.SIGRTMIN])
@pytest.mark.parametrize("command", ["write", "load", "dump", "info"])
def test_every_command_ends_as_the_signal_would(
    make_queue: MakeQueue, command: str, signum: int
) -> None:
    queue = make_queue(max_messages=1, max_message_size=64)
    args = {
        "write": ["write", queue.name],  # waits for input
        "load": ["load", queue.name],  # waits for input
        "dump": ["dump", queue.name, "--timeout", "30"],  # waits for messages
        "info": ["info", queue.name],  # ends at once, or the signal ends it
    }[command]
    process = start(args, stdin=subprocess.PIPE)
    if command != "info":
        time.sleep(0.3)
    process.send_signal(signum)
    code = process.wait(timeout=10)
    assert code in ((ends_like(signum),) if command != "info" else (0, ends_like(signum)))
    assert process.stderr is not None
    assert_quiet(process.stderr.read())


def test_a_signal_ignored_at_start_stays_ignored(queue_name: str) -> None:
    def ignore_hangups() -> None:  # as nohup does
        signal.signal(signal.SIGHUP, signal.SIG_IGN)

    reader = subprocess.Popen(
        [*BPMQ, "read", queue_name], stderr=subprocess.PIPE, preexec_fn=ignore_hangups
    )
    time.sleep(0.8)
    reader.send_signal(signal.SIGHUP)
    time.sleep(0.3)
    assert reader.poll() is None  # still reading
    reader.send_signal(signal.SIGTERM)
    assert reader.wait(timeout=10) == -signal.SIGTERM


def test_a_signal_while_it_starts_ends_it_cleanly(queue_name: str) -> None:
    """Sent at random moments in its first 0.15 s once our first line ran
    (while click is imported, while it parses): 128+N, no traceback, no
    "Aborted!". More trials run in `nox -s trials`."""
    rng = random.Random(1)
    for trial in range(8):
        signum = rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT])
        reader = start(["read", queue_name])
        time.sleep(rng.uniform(0, 0.15))
        reader.send_signal(signum)
        assert reader.wait(timeout=10) == ends_like(signum), trial
        assert reader.stderr is not None
        assert_quiet(reader.stderr.read())


def wait_for_a_child_with(parent: int, queue_name: str) -> None:
    """Wait until a child of ``parent`` has ``queue_name`` open: it is past
    Python's own start-up, and the command's handlers are in place."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
        except OSError:
            children = []
        if any(has_open(int(child), queue_name) for child in children):
            return
        time.sleep(0.002)
    raise AssertionError(f"no child of {parent} opened {queue_name} within 10 s")


@pytest.mark.parametrize("round_", range(3))
def test_ctrl_c_stops_a_shell_loop_around_read(queue_name: str, round_: int) -> None:
    """A shell loop stops on Ctrl-C only if the command ended by SIGINT itself.

    The SIGINT comes once the command runs, at a random moment of its wait.
    Before that, during Python's own start-up, Ctrl-C meets Python's handling,
    which this package cannot change (docs/cli.rst, Signals)."""
    subprocess.run([*BPMQ, "create", queue_name], check=True, capture_output=True)
    loop = subprocess.Popen(
        ["bash", "-c", f'while true; do "$0" read {queue_name} --timeout 1; done', BPMQ[0]],
        start_new_session=True,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_a_child_with(loop.pid, queue_name)
        time.sleep(random.Random(round_).uniform(0, 0.5))
        os.killpg(loop.pid, signal.SIGINT)  # what the terminal does on Ctrl-C
        assert loop.wait(timeout=10) == -signal.SIGINT
    finally:
        try:
            os.killpg(loop.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        loop.wait()


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGUSR2, signal.SIGRTMIN + 5])
def test_any_signal_on_a_stalled_pipe_loses_and_duplicates_nothing(
    make_queue: MakeQueue, signum: int
) -> None:
    queue = make_queue(max_messages=10, max_message_size=8192)
    sent = [bytes([65 + i]) * 8000 for i in range(10)]
    queue.put_many(sent)
    read_end, write_end = os.pipe()
    reader = subprocess.Popen(
        [*BPMQ, "read", queue.name, "--in-flight", "100"], stdout=write_end, stderr=subprocess.PIPE
    )
    os.close(write_end)
    wait_until_it_takes(reader.pid, queue, len(sent))  # the pipe is full; it waits for room
    reader.send_signal(signum)
    assert reader.wait(timeout=10) == ends_like(signum)
    piped = read_what_is_there(read_end)
    os.close(read_end)
    whole = piped.split(b"\n")[:-1]
    left = drain(queue)
    assert sorted(whole + left) == sorted(sent)  # nothing lost, none twice
    assert reader.stderr is not None
    said = reader.stderr.read().decode()
    assert f"stopped by {signal_name(signum)}: of the" in said and "put back" in said


def test_load_interrupted_says_exactly_how_many_were_loaded(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=2, max_message_size=64)
    loader = start(["load", queue.name], stdin=subprocess.PIPE)
    assert loader.stdin is not None
    lines = b"".join(b'{"v":1,"priority":0,"text":"%d"}\n' % i for i in range(5))
    loader.stdin.write(lines)
    loader.stdin.flush()
    time.sleep(0.5)  # two are in; the third waits for room
    loader.send_signal(signal.SIGHUP)
    assert loader.wait(timeout=10) == -signal.SIGHUP
    assert loader.stderr is not None
    assert b"interrupted: 2 message(s) were loaded" in loader.stderr.read()
    assert queue.get_many(5, timeout=0) == [b"0", b"1"]
    loader.stdin.close()


# -- heavy trials: nox -s trials -------------------------------------------------


@pytest.mark.trials
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("output", ["file", "slow pipe"])
@pytest.mark.parametrize("signum", ENDING, ids=[signal_name(s) for s in ENDING])
def test_trials_every_signal_at_random_moments_loses_and_duplicates_nothing(
    make_queue: MakeQueue, tmp_path: Path, signum: int, output: str
) -> None:
    queue = make_queue(max_messages=10, max_message_size=64)
    signal_a_busy_reader(queue, tmp_path, signum, trials=12, output=output)


@pytest.mark.trials
@pytest.mark.timeout(1200)
def test_trials_signals_while_it_starts_end_it_cleanly(queue_name: str) -> None:
    rng = random.Random(2)
    for trial in range(200):
        signum = rng.choice(ENDING)
        reader = start(["read", queue_name])
        time.sleep(rng.uniform(0, 0.15))
        reader.send_signal(signum)
        assert reader.wait(timeout=10) == ends_like(signum), (trial, signal_name(signum))
        assert reader.stderr is not None
        assert_quiet(reader.stderr.read())


class Feeder(threading.Thread):
    """Writes numbered lines into a pipe as fast as it takes them, until stopped."""

    def __init__(self, write_end: int, line: Callable[[int], bytes]) -> None:
        super().__init__(daemon=True)
        self.write_end, self.line = write_end, line
        self.stopped = threading.Event()

    def run(self) -> None:
        number = 0
        try:
            while not self.stopped.is_set():
                os.write(self.write_end, self.line(number))
                number += 1
        except OSError:  # the command ended: nobody reads any more
            pass


@pytest.mark.trials
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("command", ["write", "load"])
@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGHUP, signal.SIGUSR1, signal.SIGQUIT, signal.SIGRTMIN]
)
def test_trials_write_and_load_report_exactly_what_they_sent(
    make_queue: MakeQueue, command: str, signum: int
) -> None:
    """A line read from stdin cannot be unread: the count the command reports
    is exactly what reached the queue, in order, whatever the moment."""
    queue = make_queue(max_messages=10, max_message_size=64)

    def line(number: int) -> bytes:
        return (
            b'{"v":1,"priority":0,"text":"%d"}\n' % number
            if command == "load"
            else b"%d\n" % number
        )

    rng = random.Random(signum)
    for trial in range(10):
        read_end, write_end = os.pipe()
        process = start([command, queue.name], stdin=read_end)
        os.close(read_end)
        feeder = Feeder(write_end, line)
        feeder.start()
        taken: list[bytes] = []
        deadline = time.monotonic() + rng.uniform(0.05, 0.4)
        while time.monotonic() < deadline:
            taken += drain(queue)
        process.send_signal(signum)
        code = process.wait(timeout=20)
        feeder.stopped.set()
        os.close(write_end)
        feeder.join(10)
        taken += drain(queue)
        assert process.stderr is not None
        said = process.stderr.read().decode()
        assert code == ends_like(signum), (trial, said)
        # A signal before it began to stream ended it at once: nothing sent.
        reported = int(said.split("interrupted: ")[1].split(" ")[0]) if "interrupted" in said else 0
        assert taken == [b"%d" % n for n in range(reported)], trial  # all, in order, no more


def test_ctrl_c_on_a_blocked_read_ends_by_sigint_quietly(queue_name: str) -> None:
    reader = subprocess.Popen([*BPMQ, "read", queue_name], stderr=subprocess.PIPE)
    time.sleep(0.5)
    reader.send_signal(signal.SIGINT)
    assert reader.wait(timeout=10) == -signal.SIGINT  # a shell sees 130, and a loop stops
    assert reader.stderr is not None
    assert (
        reader.stderr.read()
        == (
            f"baseplate-mq: created queue {queue_name}: max_messages=10 "
            "max_message_size=8192 mode=0600\n"
        ).encode()
    )


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP])
def test_signal_during_a_blocked_write_exits_and_reports(
    make_queue: MakeQueue, signum: int
) -> None:
    queue = make_queue(max_messages=1, max_message_size=8)
    writer = subprocess.Popen(
        [*BPMQ, "write", queue.name], stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert writer.stdin is not None and writer.stderr is not None
    writer.stdin.write(b"a\nb\nc\n")
    writer.stdin.flush()
    time.sleep(0.5)  # "a" is in, "b" waits for room
    writer.send_signal(signum)
    assert writer.wait(timeout=10) == -signum  # a shell sees 128 + signum
    stderr = writer.stderr.read()
    assert b"interrupted: 1 line(s) were sent" in stderr and b"Traceback" not in stderr
    assert queue.get_many(5, timeout=0) == [b"a"]


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
        piped = read_what_is_there(read_end)
    finally:
        os.close(read_end)
        os.close(write_end)
    assert result.returncode == -signal.SIGTERM, result
    assert took < 8  # FINISH_BUDGET + PUT_BACK_BUDGET, and no blocked write()
    whole = piped.split(b"\n")[:-1]
    left: list[bytes] = [*queue.get_many(20, timeout=0)]
    assert sorted(whole + left) == sorted(sent)  # none lost, none twice
