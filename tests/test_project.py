"""The project's own promises: CI runs the README's test command, the
installed distribution says its license as packaging tools now read it, and
a test that fails, or a run that is interrupted, leaves no process and no
queue."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from importlib import metadata
from pathlib import Path

import pytest

from helpers import ROOT, queue_exists

TESTS = Path(__file__).resolve().parent


def readme_block(heading: str) -> str:
    """The first shell block under ``heading`` in the README."""
    text = (ROOT / "README.md").read_text()
    section = text.split(f"## {heading}\n", 1)[1]
    found = re.search(r"```sh\n(.*?)```", section, re.S)
    assert found, heading
    return found.group(1).strip()


def test_ci_runs_the_readme_test_command() -> None:
    command = readme_block("Run every test")
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()
    assert "pip install" not in command.replace(".nox-venv/bin/pip install", "")


def test_the_license_is_an_spdx_expression() -> None:
    """PEP 639's field: setuptools refuses the old table form after 2027-02-18."""
    installed = metadata.metadata("baseplate-mq")
    assert installed["License-Expression"] == "BSD-3-Clause"


# A test that starts a child blocked for good, makes a queue, then fails.
FAILING = """
import os, subprocess, sys, time
from helpers import unique_name
from baseplate.message_queue import MessageQueue

def test_fails_on_purpose(make_queue):
    queue = make_queue(max_messages=2, max_message_size=16)
    print("QUEUE", queue.name, flush=True)
    subprocess.Popen([sys.executable, "-c", "import time; time.sleep(1000)", "MARKER"])
    stray = MessageQueue(unique_name(), 2, 16)  # not even closed
    print("STRAY", stray.name, flush=True)
    time.sleep(float(os.environ["HOLD"]))  # where Ctrl-C comes, if it does
    assert False, "on purpose"
"""


def alive_with(marker: str) -> list[int]:
    """The processes whose command line holds ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as cmdline:
                if marker.encode() in cmdline.read():
                    found.append(int(entry))
        except (OSError, ValueError):
            continue
    return found


@pytest.mark.parametrize("how", ["fails", "SIGINT", "SIGTERM", "SIGHUP"])
def test_a_failing_or_interrupted_test_leaves_nothing_behind(tmp_path: Path, how: str) -> None:
    marker = f"left-behind-{uuid.uuid4().hex}"
    for needed in ("conftest.py", "helpers.py"):
        shutil.copy(TESTS / needed, tmp_path / needed)
    (tmp_path / "test_failing.py").write_text(FAILING.replace("MARKER", marker))
    command = [sys.executable, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider",
               "-o", "addopts=", str(tmp_path / "test_failing.py")]  # fmt: skip
    hold = "0" if how == "fails" else "30"
    run = subprocess.Popen(
        command,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "HOLD": hold},
    )
    assert run.stdout is not None
    names = []
    try:
        for line in run.stdout:
            if line.startswith(("QUEUE ", "STRAY ")):
                names.append(line.split()[1])
            if how != "fails" and len(names) == 2:
                time.sleep(0.5)  # the child is running, and the test in its sleep
                run.send_signal(signal.Signals[how])  # Ctrl-C, kill, a closed terminal
                break
        output = run.communicate(timeout=60)[0]
    finally:
        if run.poll() is None:
            run.kill()
            run.wait()
    assert len(names) == 2, output
    assert run.returncode != 0
    assert alive_with(marker) == []  # the blocked child was killed and reaped
    assert not any(queue_exists(name) for name in names)  # every queue unlinked


def test_the_suite_passes_when_started_with_signals_ignored() -> None:
    """Started from a script's background job (SIGINT and SIGQUIT ignored)
    under nohup (SIGHUP ignored), the commands the tests signal still end by
    those signals: the suite gives them each signal's default action."""

    def as_a_background_job_under_nohup() -> None:
        for signum in (signal.SIGINT, signal.SIGQUIT, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)

    chosen = "ends_a_waiting_read_as_it_would and (SIGINT or SIGQUIT or SIGHUP or SIGTERM)"
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=",
               str(TESTS / "cli" / "test_cli_signals.py"), "-k", chosen]  # fmt: skip
    result = subprocess.run(
        command,
        cwd=TESTS,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=as_a_background_job_under_nohup,
    )
    assert result.returncode == 0, result.stdout[-3000:]
    assert "4 passed" in result.stdout, result.stdout[-3000:]
