"""The commands, end to end: entry points (baseplate-mq, python -m, the seed's
syntax), what each command does with its options, create/info/unlink/ls, and
the README's command line run as written. Real processes on real queues."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from baseplate.message_queue import MessageQueue
from baseplate.message_queue.cli.commands import cli
from baseplate.message_queue.cli.exits import EXIT_SHORT_READ
from baseplate.message_queue.cli.legacy import legacy
from helpers import (
    BPMQ,
    ME,
    NOBODY,
    ROOT,
    SCRIPT,
    SEED,
    need_root,
    queue_exists,
    run,
    run_cli_as_nobody,
    run_in_mount_namespace,
    unlink_quietly,
)

# The same command group, three ways in.
ENTRY_POINTS = {
    "script": BPMQ,
    "python -m baseplate.message_queue.cli": [sys.executable, "-m", "baseplate.message_queue.cli"],
}


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


MakeQueue = Callable[..., MessageQueue]


README = ROOT / "README.md"


def readme_commands() -> str:
    """The sh block of the README's "The command line" section."""
    text = README.read_text()
    section = text.split("## The command line", 1)[1]
    block = re.search(r"```sh\n(.*?)```", section, re.S)
    assert block is not None
    return block.group(1)


LS = """
import sys
from baseplate.message_queue.cli import main
sys.argv = ["baseplate-mq", "ls", *sys.argv[1:]]
main()
"""


# ls as uid 65534, forked (and imported) first: no new interpreter as that user.
LS_AS_NOBODY = """
import os, sys
from click.testing import CliRunner
import baseplate.message_queue.queue
from baseplate.message_queue.cli.commands import cli
pid = os.fork()
if pid == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    result = CliRunner().invoke(cli, ["ls"])
    print(result.exit_code)
    print(result.output, end="")
    sys.stdout.flush()  # os._exit() flushes nothing
    os._exit(0)
os.waitpid(pid, 0)
"""


def test_console_script_is_installed() -> None:
    assert SCRIPT is not None, "pip install . puts baseplate-mq next to the interpreter"


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
def test_round_trip_through_each_entry_point(entry: str, queue_name: str) -> None:
    command = ENTRY_POINTS[entry]
    assert run([*command, "write", queue_name], b"hello\n").returncode == 0
    result = run([*command, "read", queue_name, "--count", "1"])
    assert (result.returncode, result.stdout) == (0, b"hello\n")


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
        "fill_percent": 25.0,
        "notify_pid": 0,
        "holders": [],
        "uninspected_processes": info["uninspected_processes"],
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


def test_write_timeout_says_how_many_were_sent(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=2, max_message_size=8)
    result = run([*BPMQ, "write", queue.name, "--timeout", "0.2"], b"a\nb\nc\nd\n")
    assert result.returncode == 1
    assert b"timed out" in result.stderr and b"2 line(s) were sent" in result.stderr


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


def test_read_count_that_stops_early_exits_3_and_says_so(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.put(b"only one")
    result = run([*BPMQ, "read", queue.name, "--count", "3", "--timeout", "1"])
    assert result.returncode == EXIT_SHORT_READ == 3
    assert result.stdout == b"only one\n"
    assert result.stderr == b"baseplate-mq: error: got 1 of 3 messages before the 1 s timeout\n"
    assert run([*BPMQ, "read", queue.name, "--timeout", "0.2"]).returncode == 0


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


def test_nobody_is_who_the_tests_think(queue_name: str) -> None:
    """The helper really runs as another user: the queue it makes is not root's."""
    need_root("the test changes user")
    made = run_cli_as_nobody(["create", queue_name])
    assert made.returncode == 0, made
    with MessageQueue(queue_name, create=False) as queue:
        assert queue.uid == NOBODY


def test_ls_lists_queues_sorted_with_their_facts(make_queue: MakeQueue) -> None:
    tag = uuid.uuid4().hex
    second = make_queue(f"/ls-{tag}-b", max_messages=3, max_message_size=64, mode=0o640)
    first = make_queue(f"/ls-{tag}-a", max_messages=5, max_message_size=32)
    first.put(b"waiting")
    as_json = run_in_mount_namespace(LS, mounted=True, args=("--json",))
    assert as_json.returncode == 0, as_json.stderr
    listed = json.loads(as_json.stdout)
    ours = [q for q in listed if tag in q["name"]]
    assert [q["name"] for q in ours] == [first.name, second.name]
    facts = dict(ours[0])
    # This test's process holds it (ls's own process, which opens it too, is left out).
    assert [holder["pid"] for holder in facts.pop("holders")] == [os.getpid()]
    assert isinstance(facts.pop("uninspected_processes"), int)
    assert facts == {
        "name": first.name,
        "max_messages": 5,
        "max_message_size": 32,
        "current_messages": 1,
        "mode": "0600",
        "owner": "root",
        "uid": 0,
        "group": "root",
        "gid": 0,
        "fill_percent": 20.0,
        "notify_pid": 0,
    }
    names = [q["name"] for q in listed]
    assert names == sorted(names)
    text = run_in_mount_namespace(LS, mounted=True).stdout.splitlines()
    assert text[0].split() == [
        "MESSAGES", "MAX", "FILL", "SIZE", "MODE", "OWNER", "HOLDERS", "NAME"
    ]  # fmt: skip
    row = next(line for line in text if first.name in line)
    assert row.split() == ["1", "5", "20%", "32", "0600", "root", "1", first.name]


def test_ls_shows_what_it_can_of_a_queue_this_user_may_not_open(make_queue: MakeQueue) -> None:
    private = make_queue(mode=0o600)  # root's
    result = run_in_mount_namespace(LS_AS_NOBODY, mounted=True)
    code, *output = result.stdout.splitlines()
    assert code == "0", result
    row = next(line for line in output if private.name in line)
    assert row.split() == ["?", "?", "?", "?", "0600", "root", "0", private.name]


def test_ls_without_the_mqueue_file_system_says_how_to_mount_it() -> None:
    result = run_in_mount_namespace(LS, mounted=False)
    assert result.returncode == 1
    assert result.stderr == (
        "baseplate-mq: error: the mqueue file system is not mounted, so the queues cannot be "
        "listed; mount it as root: mkdir -p /dev/mqueue && mount -t mqueue none /dev/mqueue\n"
    )


@pytest.mark.parametrize("command", ["read", "write"])
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1"])
def test_seconds_must_be_finite(queue_name: str, command: str, value: str) -> None:
    result = run([*BPMQ, command, queue_name, "--timeout", value], b"x\n")
    assert result.returncode == 2
    assert b"is not a number of seconds" in result.stderr
    assert b"None" not in result.stderr
