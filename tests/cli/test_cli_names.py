"""Names the system supplies are never printed raw: a queue's name (any bytes,
which any user may choose) comes out as a shell word that reads back as
that name, in errors, ``info``, ``create`` and ``ls``; ``--json`` stays exact."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import uuid
from typing import Iterator

import pytest

from baseplate.message_queue import MessageQueue
from baseplate.message_queue.cli.words import shell_word
from helpers import BPMQ, SEED, run, run_in_mount_namespace, unlink_quietly

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
