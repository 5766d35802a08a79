"""The commands of docs/operating.rst paste and run: each ``code-block::
shell`` block runs as a bash script (on a queue of its own, writing into a
temporary directory); the cron and systemd lines, which write where only
root may, have their options checked against ``--help``."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import uuid
from pathlib import Path
from typing import List

import pytest

from helpers import BPMQ, ROOT, run, unlink_quietly

PAGE = ROOT / "docs" / "operating.rst"


def shell_blocks() -> List[str]:
    """Each ``.. code-block:: shell`` of the page, unindented."""
    text = PAGE.read_text()
    blocks = re.findall(r"\.\. code-block:: shell\n\n((?:    .*\n|\n)+)", text)
    return [re.sub(r"^    ", "", block, flags=re.M).strip() + "\n" for block in blocks]


def literal_commands() -> List[str]:
    """The baseplate-mq command lines of the page's literal blocks (cron, systemd)."""
    text = PAGE.read_text()
    found = re.findall(r"(?:\* \* \* \* \* |ExecStart=\S*?)(baseplate-mq [^\n]*)", text)
    assert len(found) == 2, found
    return list(found)


def test_the_page_has_its_commands() -> None:
    blocks = shell_blocks()
    assert len(blocks) >= 7
    assert any("--format prometheus" in block for block in blocks)
    assert any("--watch" in block for block in blocks)


@pytest.mark.parametrize("command", literal_commands())
def test_the_cron_and_systemd_lines_use_options_that_exist(command: str) -> None:
    words = shlex.split(command)
    assert words[0] == "baseplate-mq"
    usage = run([*BPMQ, words[1], "--help"]).stdout.decode()
    for word in words[2:]:
        if word.startswith("--"):
            assert word in usage, word
    assert words[-1].endswith(".prom")


def unshare_works() -> bool:
    probe = ["unshare", "--user", "--map-root-user", "--ipc", "--mount", "true"]
    try:
        return subprocess.run(probe, capture_output=True).returncode == 0
    except OSError:
        return False


def test_the_pages_shell_blocks_run_in_order(tmp_path: Path) -> None:
    name = f"/events-{uuid.uuid4().hex[:8]}"
    scripts = os.path.dirname(BPMQ[0])
    env = {**os.environ, "PATH": f"{scripts}:{os.environ['PATH']}"}
    ran = 0
    try:
        for block in shell_blocks():
            script = block.replace("/events", name).replace("/tmp/", f"{tmp_path}/")
            if script.startswith("sudo "):
                if os.geteuid() != 0:
                    continue  # sudo would ask for a password: the same runs below as root
                script = script[len("sudo ") :]
            if script.startswith("unshare ") and not unshare_works():
                continue
            result = subprocess.run(
                ["bash", "-c", script], capture_output=True, timeout=60, cwd=tmp_path, env=env
            )
            assert b"Traceback" not in result.stderr, result
            if script.startswith("timeout "):
                assert result.returncode in (0, 124), result  # timeout ended the watch
            else:
                assert result.returncode == 0, result
            if "--format prometheus" in script:
                assert f'queue="{name}"'.encode() in result.stdout
            if "--textfile" in script:
                assert f'posix_mqueue_messages{{queue="{name}"}} 3'.encode() in result.stdout
            if script.startswith("unshare "):
                assert b"exit 1" in result.stdout and b"another IPC namespace" in result.stderr
            ran += 1
    finally:
        unlink_quietly(name)
    assert ran >= 6
