"""The command line, end to end: real processes on real queues."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from baseplate.message_queue import MessageQueue
from baseplate.message_queue.cli.commands import cli
from baseplate.message_queue.cli.legacy import legacy
from helpers import BPMQ, ME, SCRIPT, SEED, queue_exists, run

MakeQueue = Callable[..., MessageQueue]

# The same command group, three ways in.
ENTRY_POINTS = {
    "script": BPMQ,
    "python -m baseplate.message_queue.cli": [sys.executable, "-m", "baseplate.message_queue.cli"],
}


def test_console_script_is_installed() -> None:
    assert SCRIPT is not None, "pip install . puts baseplate-mq next to the interpreter"


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_round_trip_through_each_entry_point(entry: str, queue_name: str) -> None:
    command = ENTRY_POINTS[entry]
    assert run([*command, "write", queue_name], b"hello\n").returncode == 0
    result = run([*command, "read", queue_name, "--count", "1"])
    assert (result.returncode, result.stdout) == (0, b"hello\n")


# Runs an entry point as Python would (runpy, as -m and a script do), then
# says at exit which module files were loaded under two names: a second copy
# of the library would bring a second fork hook and notification registry.
LOADED_TWICE = """
import atexit, collections, os, runpy, sys

def loaded_twice():
    files = collections.Counter(
        os.path.realpath(module.__file__)
        for module in list(sys.modules.values())
        if getattr(module, "__file__", None) and "baseplate" in module.__file__
    )
    sys.stderr.write(f"LOADED TWICE: {sorted(f for f, n in files.items() if n > 1)}\\n")
    sys.stderr.write(f"LOADED: {sum(files.values())}\\n")

atexit.register(loaded_twice)
way, target, *sys.argv[1:] = sys.argv[1:]
sys.argv[0] = target
if way == "-m":
    runpy._run_module_as_main(target)
else:
    runpy.run_path(target, run_name="__main__")
"""


@pytest.mark.parametrize(
    "way, target, command",
    [
        ("-m", "baseplate.message_queue", ["--create"]),
        ("-m", "baseplate.message_queue.cli", ["create"]),
        ("script", "baseplate-mq", ["create"]),
    ],
)
def test_the_library_is_imported_once_in_every_way_of_running_it(
    way: str, target: str, command: list[str], queue_name: str
) -> None:
    if way == "script":
        assert SCRIPT is not None
        target = SCRIPT
    result = run([sys.executable, "-c", LOADED_TWICE, way, target, *command, queue_name])
    assert result.returncode == 0, result.stderr
    assert b"LOADED TWICE: []\n" in result.stderr, result.stderr
    assert b"LOADED: 0\n" not in result.stderr  # the probe saw the library


def test_seed_syntax_write_then_read(queue_name: str) -> None:
    """The seed page's two commands: echo hello! | ... --write, then --read."""
    assert run(["sh", "-c", f"echo hello! | {' '.join(SEED)} --write {queue_name}"]).returncode == 0
    reader = subprocess.Popen(
        [*SEED, "--read", queue_name], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert reader.stdout is not None and reader.stderr is not None
    assert reader.stdout.readline() == b"hello!\n"
    reader.send_signal(signal.SIGINT)
    assert reader.wait(timeout=10) == -signal.SIGINT  # ended by SIGINT itself: a shell sees 130
    assert b"Traceback" not in reader.stderr.read()


def test_seed_syntax_create_and_its_rules(queue_name: str) -> None:
    result = run([*SEED, "--create", queue_name, "--max-messages", "3", "--max-message-size", "64"])
    assert result.returncode == 0
    assert result.stdout == f"{queue_name}: max_messages=3 max_message_size=64 mode=0600\n".encode()
    assert run(SEED).returncode == 2
    assert run([*SEED, "--read", queue_name, "--write", queue_name]).returncode == 2
    assert b"Example:" in run([*SEED, "--help"]).stdout


def test_seed_syntax_is_advised_an_unlink_it_has(queue_name: str) -> None:
    """The seed's syntax has no unlink: its users are told baseplate-mq's."""
    assert run([*SEED, "--create", queue_name, "--max-messages", "3"]).returncode == 0
    result = run([*SEED, "--create", queue_name, "--max-messages", "4"])
    assert result.returncode == 1
    stderr = result.stderr.decode()
    assert f"baseplate-mq unlink {queue_name}, then this command again" in stderr
    assert "-m baseplate.message_queue unlink" not in stderr


def test_the_voice_is_changed_in_place() -> None:
    from baseplate.message_queue.cli import queues, words

    before = words.voice
    try:
        words.speak_as("python -m baseplate.message_queue", legacy=True)
        assert words.voice is before and vars(queues)["voice"] is before
        assert before.unlink_command("/q") == "baseplate-mq unlink /q"
    finally:
        words.speak_as("baseplate-mq")
    assert before.unlink_command("/q") == "baseplate-mq unlink /q" and not before.legacy


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


def test_read_count_takes_exactly_that_many(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.put_many([b"1", b"2", b"3", b"4", b"5"])
    result = run([*BPMQ, "read", queue.name, "--count", "3"])
    assert result.stdout == b"1\n2\n3\n"
    assert queue.current_messages == 2
    assert run([*BPMQ, "read", queue.name, "--count", "0"]).stdout == b""
    assert queue.current_messages == 2


def test_read_timeout_exits_zero_once_the_queue_stays_empty(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.put(b"only")
    start = time.monotonic()
    result = run([*BPMQ, "read", queue.name, "--timeout", "0.3"])
    assert (result.returncode, result.stdout) == (0, b"only\n")
    assert 0.3 <= time.monotonic() - start < 30


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


def test_write_priority(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.put(b"normal")
    assert run([*BPMQ, "write", queue.name, "--priority", "9"], b"urgent\n").returncode == 0
    first = queue.get(timeout=0)
    assert (first, first.priority) == (b"urgent", 9)
    assert run([*BPMQ, "write", queue.name, "--priority", "32768"], b"x\n").returncode == 2


def test_sizes_are_used_when_creating(queue_name: str) -> None:
    assert (
        run(
            [*BPMQ, "write", queue_name, "--max-messages", "4", "--max-message-size", "32"], b"x\n"
        ).returncode
        == 0
    )
    info = json.loads(run([*BPMQ, "info", queue_name, "--json"]).stdout)
    assert info == {
        "name": queue_name,
        "max_messages": 4,
        "max_message_size": 32,
        "current_messages": 1,
        "mode": "0600",
        **ME,
    }


def test_no_create_refuses_a_missing_queue(queue_name: str) -> None:
    for command in (["read", queue_name, "--no-create"], ["write", queue_name, "--no-create"]):
        result = run([*BPMQ, *command], b"x\n")
        assert result.returncode == 1
        assert b"does not exist" in result.stderr
    assert not queue_exists(queue_name)


def test_create_with_mode_info_and_unlink(queue_name: str) -> None:
    old_umask = os.umask(0o022)
    try:
        result = run([*BPMQ, "create", queue_name, "--mode", "600", "--max-messages", "5"])
    finally:
        os.umask(old_umask)
    assert result.returncode == 0
    with MessageQueue(queue_name, create=False) as queue:
        assert os.fstat(queue.fileno()).st_mode & 0o777 == 0o600
    assert run([*BPMQ, "create", queue_name, "--exclusive"]).returncode == 1
    text = run([*BPMQ, "info", queue_name]).stdout.decode()
    assert (
        f"name: {queue_name}\n" in text
        and "max_messages: 5\n" in text
        and "current_messages: 0\n" in text
    )
    assert run([*BPMQ, "unlink", queue_name]).returncode == 0
    assert not queue_exists(queue_name)
    missing = run([*BPMQ, "unlink", queue_name])
    assert missing.returncode == 1 and b"does not exist" in missing.stderr
    assert run([*BPMQ, "unlink", queue_name, "--force"]).returncode == 0
    assert run([*BPMQ, "create", queue_name, "--mode", "999"]).returncode == 2


def test_info_never_creates(queue_name: str) -> None:
    result = run([*BPMQ, "info", queue_name])
    assert result.returncode == 1
    assert result.stderr.startswith(b"baseplate-mq: error: queue ")
    assert len(result.stderr.splitlines()) <= 2
    assert not queue_exists(queue_name)


@pytest.mark.parametrize("name", ["no-slash", "/a/b", "/"])
def test_bad_queue_name_is_a_usage_error(name: str) -> None:
    for command in (
        ["read", name],
        ["write", name],
        ["info", name],
        ["create", name],
        ["unlink", name],
    ):
        result = run([*BPMQ, *command])
        assert result.returncode == 2
        assert b"invalid queue name" in result.stderr
    assert run([*SEED, "--read", name]).returncode == 2


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


def test_write_timeout_says_how_many_were_sent(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=2, max_message_size=8)
    result = run([*BPMQ, "write", queue.name, "--timeout", "0.2"], b"a\nb\nc\nd\n")
    assert result.returncode == 1
    assert b"timed out" in result.stderr and b"2 line(s) were sent" in result.stderr


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


def test_version_and_help_on_every_command() -> None:
    version = run([*BPMQ, "--version"])
    assert version.returncode == 0 and b"baseplate-mq, version " in version.stdout
    for command in ([], ["read"], ["write"], ["create"], ["unlink"], ["info"]):
        result = run([*BPMQ, *command, "--help"])
        assert result.returncode == 0
        assert b"Example:" in result.stdout


def test_help_needs_no_queue_library() -> None:
    """--help starts fast: it must not load the cffi extension."""
    code = (
        "import sys; from baseplate.message_queue.cli.commands import cli; "
        "print('baseplate.message_queue._mqueue' in sys.modules)"
    )
    assert run([sys.executable, "-c", code]).stdout == b"False\n"


def test_cli_runner_usage_errors() -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["read"]).exit_code == 2
    assert runner.invoke(cli, ["read", "/q", "--count", "-1"]).exit_code == 2
    assert runner.invoke(cli, ["read", "/q", "--timeout", "-1"]).exit_code == 2
    assert runner.invoke(cli, ["bogus"]).exit_code == 2
    assert runner.invoke(legacy, ["--create"]).exit_code == 2
