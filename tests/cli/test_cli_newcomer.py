"""The command line as a newcomer meets it: no silent loss, no silent hang,
honest answers. Real processes, real pipes, real queues."""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from baseplate.message_queue import MessageQueue
from baseplate.message_queue.cli.commands import cli
from baseplate.message_queue.cli.exits import EXIT_SHORT_READ
from helpers import BPMQ, ME, ROOT, SCRIPT, queue_exists, run, run_as_nobody, unlink_quietly

MakeQueue = Callable[..., MessageQueue]
README = ROOT / "README.md"


# -- bounded loss when the reader quits ------------------------------------------


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


# -- saying what was created, and create on an existing queue ---------------------


@pytest.mark.parametrize("command", ["read", "write"])
def test_read_and_write_say_when_they_create_a_queue(queue_name: str, command: str) -> None:
    args = [*BPMQ, command, queue_name, "--max-messages", "3", "--max-message-size", "64"]
    if command == "read":
        args += ["--timeout", "0"]
    result = run(args, b"x\n")
    assert result.returncode == 0
    assert (
        result.stderr
        == (
            f"baseplate-mq: created queue {queue_name}: max_messages=3 max_message_size=64 "
            "mode=0600\n"
        ).encode()
    )
    again = run(args, b"y\n")  # it exists now: nothing to say
    assert again.returncode == 0 and again.stderr == b""


def test_create_on_an_existing_queue_with_the_same_sizes_and_mode_succeeds(
    queue_name: str,
) -> None:
    first = run([*BPMQ, "create", queue_name, "--max-messages", "5", "--mode", "640"])
    again = run([*BPMQ, "create", queue_name, "--max-messages", "5", "--mode", "640"])
    assert (first.returncode, again.returncode) == (0, 0)
    assert (
        first.stdout
        == again.stdout
        == (f"{queue_name}: max_messages=5 max_message_size=8192 mode=0640\n".encode())
    )


@pytest.mark.parametrize(
    ("asked", "differs"),
    [
        (["--mode", "600"], "--mode 644"),
        (["--mode", "644", "--max-messages", "5", "--max-message-size", "100"], "10"),
    ],
)
def test_create_on_a_queue_that_differs_fails_and_names_both(
    queue_name: str, asked: list[str], differs: str
) -> None:
    old_umask = os.umask(0o022)
    try:
        MessageQueue(queue_name, 10, 8192, mode=0o644).close()
        result = run([*BPMQ, "create", queue_name, *asked])
    finally:
        os.umask(old_umask)
    assert result.returncode == 1
    message = result.stderr.decode()
    if len(asked) > 2:  # other sizes: they cannot change
        assert "already exists with --max-messages 10 --max-message-size 8192 --mode 644" in message
        assert f"not --max-messages {asked[3]}" in message
    else:  # another mode: its owner may change it
        assert "already exists with --mode 644, not --mode 600" in message
        assert f"chmod 600 /dev/mqueue/{queue_name[1:]}" in message
    assert f"baseplate-mq unlink {queue_name}" in message
    with MessageQueue(queue_name, create=False) as queue:
        assert (queue.max_messages, queue.mode) == (10, 0o644)  # untouched


def test_info_shows_mode_owner_and_group(queue_name: str) -> None:
    MessageQueue(queue_name, mode=0o640).close()
    text = run([*BPMQ, "info", queue_name]).stdout.decode()
    assert "mode: 0640\n" in text
    assert f"owner: {ME['owner']}\n" in text and f"group: {ME['group']}\n" in text
    facts = json.loads(run([*BPMQ, "info", queue_name, "--json"]).stdout)
    assert (facts["mode"], facts["uid"], facts["gid"]) == ("0640", ME["uid"], ME["gid"])


# -- a full queue is not silent -----------------------------------------------------


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


# -- CLI words ---------------------------------------------------------------------------


def test_errors_name_cli_options_not_library_arguments(queue_name: str) -> None:
    missing = run([*BPMQ, "read", queue_name, "--no-create"]).stderr.decode()
    assert "--no-create" in missing and f"baseplate-mq create {queue_name}" in missing
    assert "create=True" not in missing
    gone = run([*BPMQ, "unlink", queue_name]).stderr.decode()
    assert "does not exist" in gone and "-f" in gone and "create=True" not in gone
    about = run([*BPMQ, "info", queue_name]).stderr.decode()
    assert f"baseplate-mq create {queue_name}" in about and "create=True" not in about
    run([*BPMQ, "create", queue_name])
    exists = run([*BPMQ, "create", queue_name, "--exclusive"]).stderr.decode()
    assert "--exclusive" in exists and "exclusive=True" not in exists
    too_many = run([*BPMQ, "create", "/" + uuid.uuid4().hex, "--max-messages", "11"])
    text = too_many.stderr.decode()
    assert too_many.returncode == 1
    assert "--max-messages 11 exceeds fs.mqueue.msg_max=10" in text, text
    assert "max_messages=" not in text


def test_an_ordinary_user_is_told_open_was_refused_not_create(make_queue: MakeQueue) -> None:
    private = make_queue(mode=0o600)

    def read_as_nobody() -> tuple[int, str]:
        result = CliRunner().invoke(cli, ["read", private.name, "--timeout", "0"])
        return result.exit_code, result.output

    code, output = run_as_nobody(read_as_nobody)
    assert code == 1
    assert "permission denied to open queue" in output, output
    assert "create" not in output.split("permission denied")[1].split(":")[0]


# -- short reads ------------------------------------------------------------------------


def test_read_count_that_stops_early_exits_3_and_says_so(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.put(b"only one")
    result = run([*BPMQ, "read", queue.name, "--count", "3", "--timeout", "1"])
    assert result.returncode == EXIT_SHORT_READ == 3
    assert result.stdout == b"only one\n"
    assert result.stderr == b"baseplate-mq: error: got 1 of 3 messages before the 1 s timeout\n"
    assert run([*BPMQ, "read", queue.name, "--timeout", "0.2"]).returncode == 0


# -- the README's command line section ------------------------------------------------------


def readme_commands() -> str:
    """The sh block of the README's "The command line" section."""
    text = README.read_text()
    section = text.split("## The command line", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return block.group(1)


def test_the_readme_command_line_section_runs_top_to_bottom(tmp_path: Path) -> None:
    name = f"/readme-{uuid.uuid4().hex}"
    script = readme_commands().replace("/events", name)
    scripts = os.path.dirname(SCRIPT or sys.executable)
    env = {**os.environ, "PATH": f"{scripts}:{os.environ['PATH']}"}
    try:
        result = subprocess.run(
            ["bash", "-e", "-c", script],
            capture_output=True,
            timeout=60,
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
        )
    finally:
        unlink_quietly(name)
    assert result.returncode == 0, result.stderr.decode()
    assert b"Traceback" not in result.stderr
    assert list(tmp_path.iterdir()) == []  # it leaves no file behind
    assert not queue_exists(name)


def test_readme_tour_runs_and_times_out_for_real(tmp_path: Path) -> None:
    text = README.read_text().split("## A short tour", 1)[1]
    block = re.search(r"```python\n(.*?)```", text, re.S)
    assert block is not None
    name = f"/tour-{uuid.uuid4().hex}"
    code = block.group(1).replace('"/events"', repr(name))
    code += "\nprint('timed out:', timed_out)\n"
    try:
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path
        )
    finally:
        unlink_quietly(name)
    assert result.returncode == 0, result.stderr
    assert "timed out: True" in result.stdout
