"""Names the system supplies are never printed raw: a queue's name (any bytes,
which any user may choose) comes out as a shell word that reads back as
that name, in errors, ``info``, ``create`` and ``ls``; ``--json`` stays exact.
And the words around them: errors speak of the command's options, not the
library's arguments, and say whose queue it is and what it needs."""

from __future__ import annotations

import base64
import json
import os
import resource
import subprocess
import uuid
from typing import Callable, Iterator

import pytest
from click.testing import CliRunner

from baseplate.message_queue import RLIMIT_MSGQUEUE, MessageQueue
from baseplate.message_queue.cli.commands import cli
from baseplate.message_queue.cli.words import shell_word
from helpers import (
    BPMQ,
    SEED,
    need_root,
    run,
    run_as_nobody,
    run_cli_as_nobody,
    run_in_mount_namespace,
    unlink_quietly,
)

# Names that 1.0 printed as '?', forged a line with, or let a terminal obey.
HOSTILE = {
    "quote": "/it's",
    "backslash": "/back\\slash",
    "tab": "/tab\there",
    "newline": "/new\nline",
    "escape": "/red\x1b[31mtext\x1b]0;title\x07",
    "not UTF-8": os.fsdecode(b"/caf\xe9\xff"),
    "option text": "/max_messages=5",
    "space": "/two words",
    "accent": "/café",
}


@pytest.fixture(params=list(HOSTILE), ids=list(HOSTILE))
def hostile(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"{HOSTILE[request.param]}-{uuid.uuid4().hex[:8]}"
    yield name
    unlink_quietly(name)


def shell_reads_back(word: str) -> bytes:
    """The bytes bash makes of ``word`` (a shell word as we print it)."""
    return subprocess.run(
        ["bash", "-c", f"printf %s {word}"], capture_output=True, check=True
    ).stdout


def no_control_bytes(output: bytes) -> bool:
    """Nothing a terminal could obey: no C0 control byte but newlines ending lines."""
    return not any(byte < 0x20 and byte != 0x0A for byte in output) and b"\x7f" not in output


def test_literals_read_back_as_the_bytes_they_stand_for(hostile: str) -> None:
    word = shell_word(hostile)
    assert shell_reads_back(word) == os.fsencode(hostile)
    assert "\n" not in word and no_control_bytes(word.encode("utf-8"))


def test_an_error_names_the_queue_so_that_its_hint_can_be_pasted(hostile: str) -> None:
    missing = run([*BPMQ, "info", hostile])
    assert missing.returncode == 1
    line = missing.stderr.decode("utf-8")
    assert line.count("\n") == 1 and no_control_bytes(missing.stderr)
    hint = line.split("create it with ", 1)[1].rstrip("\n")
    assert hint.startswith("baseplate-mq create ")
    pasted = subprocess.run(["bash", "-c", hint.replace("baseplate-mq", BPMQ[0], 1)])
    assert pasted.returncode == 0
    MessageQueue(hostile, create=False).close()  # the very queue it named


def test_info_and_create_write_the_name_as_a_shell_word(hostile: str) -> None:
    created = run([*BPMQ, "create", hostile], timeout=60)
    assert created.returncode == 0, created.stderr
    assert created.stdout.startswith(shell_word(hostile).encode() + b": max_messages=10")
    info = run([*BPMQ, "info", hostile])
    assert info.returncode == 0
    assert info.stdout.splitlines()[0] == b"name: " + shell_word(hostile).encode()
    for output in (created.stdout, info.stdout):
        assert no_control_bytes(output)
        output.decode("utf-8")  # strict UTF-8: no error on any name


def test_info_json_is_exact_and_carries_bytes_that_are_not_utf8(hostile: str) -> None:
    MessageQueue(hostile).close()
    result = run([*BPMQ, "info", hostile, "--json"])
    assert result.returncode == 0
    facts = json.loads(result.stdout.decode("utf-8"))  # strict: valid Unicode only
    raw = os.fsencode(hostile)
    if "name_base64" in facts:
        assert base64.b64decode(facts["name_base64"]) == raw
        assert facts["name"] == raw.decode("utf-8", "replace")
    else:
        assert facts["name"] == hostile
    assert no_control_bytes(result.stdout)


def test_a_bad_name_is_refused_in_words_that_name_it(hostile: str) -> None:
    bad = hostile + "/sub"
    result = run([*BPMQ, "info", bad])
    assert result.returncode == 2
    assert f"invalid queue name {shell_word(bad)}".encode() in result.stderr
    assert no_control_bytes(result.stderr.replace(b"\n", b""))


def test_names_that_look_like_options_are_not_rewritten() -> None:
    name = f"/max_messages=5-{uuid.uuid4().hex[:8]}"
    try:
        MessageQueue(name, mode=0o600).close()
        result = run([*SEED, "--read", name + "/x"])
        assert b"max_messages=5" in result.stderr and b"--max-messages 5" not in result.stderr
    finally:
        unlink_quietly(name)


LS = """
import sys
from baseplate.message_queue.cli import main
sys.argv = ["baseplate-mq", "ls", *sys.argv[1:]]
main()
"""


def test_ls_gives_each_queue_one_row_and_no_control_bytes() -> None:
    tag = uuid.uuid4().hex[:8]
    names = [f"{name}-{tag}" for name in HOSTILE.values()]
    try:
        for name in names:
            MessageQueue(name, 1, 64).close()
        text = run_in_mount_namespace(LS, mounted=True)
        assert text.returncode == 0, text.stderr
        rows = [row for row in text.stdout.splitlines() if tag in row]
        assert sorted(row.split("  ")[-1].strip() for row in rows) == sorted(
            shell_word(name) for name in names
        )
        assert no_control_bytes(text.stdout.encode("utf-8"))
        as_json = run_in_mount_namespace(LS, mounted=True, args=("--json",))
        listed = [q for q in json.loads(as_json.stdout) if tag in q["name"]]
        got = [
            base64.b64decode(q["name_base64"]) if "name_base64" in q else os.fsencode(q["name"])
            for q in listed
        ]
        assert sorted(got) == sorted(os.fsencode(name) for name in names)
    finally:
        for name in names:
            unlink_quietly(name)


MakeQueue = Callable[..., MessageQueue]


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
        assert "it is this user's own (" in said
        assert "but its mode 0000 does not allow even its owner" in said
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
