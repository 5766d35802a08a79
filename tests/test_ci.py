"""CI's own machinery on Debian 12: the Debian unstable root that brings the
interpreters Debian 12 lacks (.ci/python-root), and the way into it
(.ci/in-root). A failure says which step failed, in one line, within
bounded time, and leaves no mount behind."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from helpers import ROOT, need_root

PYTHON_ROOT = ROOT / ".ci" / "python-root"
IN_ROOT = ROOT / ".ci" / "in-root"


def mounts() -> str:
    with open("/proc/self/mountinfo") as info:
        return info.read()


def can_unshare() -> None:
    need_root("it makes a mount namespace (unshare --mount), as CI does")
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs CAP_SYS_ADMIN: this machine cannot make a mount namespace")


# A debootstrap that fails half way, as one without network or disk does,
# after mounting something in the root it was building.
FAILING_DEBOOTSTRAP = """#!/bin/sh
target=$(echo "$@" | awk '{print $(NF-1)}')
mkdir -p "$target/proc" && mount -t tmpfs none "$target/proc"
echo "E: Failed getting release file" >&2
exit 1
"""


@pytest.mark.parametrize("kept", [False, True], ids=["no-root-yet", "an-older-root"])
def test_a_root_that_cannot_be_built_fails_in_one_line_and_leaves_no_mount(
    tmp_path: Path, kept: bool
) -> None:
    can_unshare()
    stub = tmp_path / "debootstrap"
    stub.write_text(FAILING_DEBOOTSTRAP)
    stub.chmod(0o755)
    root = tmp_path / "root"
    if kept:  # a root of the same packages, more than a week old: a refresh is due
        root.mkdir()
        (root / "usr" / "bin").mkdir(parents=True)
        wanted = subprocess.run(
            ["bash", "-c", f"source <(sed -n '/^packages=(/,/^)/p' {PYTHON_ROOT}); "
             'echo "${packages[*]}"'],
            capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip
        stamp = root / ".baseplate-mq-packages"
        stamp.write_text(wanted + "\n")
        old = time.time() - 9 * 86400
        os.utime(stamp, (old, old))
    before = mounts()
    started = time.monotonic()
    result = subprocess.run(
        ["bash", str(PYTHON_ROOT), str(root)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "BASEPLATE_MQ_DEBOOTSTRAP": str(stub)},
    )
    assert time.monotonic() - started < 60
    lines = [line for line in result.stderr.splitlines() if not line.endswith("(a few minutes)")]
    assert len(lines) == 1, result.stderr
    if kept:  # the older root serves, and a line says so
        assert result.returncode == 0
        assert "refreshing the Debian unstable root failed" in lines[0]
        assert (root / ".baseplate-mq-packages").exists()
    else:
        assert result.returncode == 1
        assert lines[0].startswith("ci: building the Debian unstable root (debootstrap")
        assert lines[0].endswith(f"failed (log: {root}.log)")
        assert not root.exists()
    assert not (tmp_path / "root.new").exists()
    assert mounts() == before  # debootstrap's mount died with its namespace
    assert "Failed getting release file" in Path(f"{root}.log").read_text()


def test_in_root_runs_the_command_in_the_same_directory_and_leaves_no_mount(
    tmp_path: Path,
) -> None:
    can_unshare()
    before = mounts()
    result = subprocess.run(
        ["bash", str(IN_ROOT), "/", "sh", "-c",
         'pwd; echo "CI=$CI"; grep -c " /proc " /proc/self/mountinfo'],
        capture_output=True, text=True, timeout=60, cwd=tmp_path,
        env={**os.environ, "CI": "yes"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    where, ci, _ = result.stdout.splitlines()
    assert where == str(tmp_path.resolve())
    assert ci == "CI=yes"
    assert mounts() == before


def test_in_root_without_a_root_says_so_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        ["bash", str(IN_ROOT), str(tmp_path / "nowhere"), "true"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"ci: no root at {tmp_path / 'nowhere'} (.ci/python-root builds it)"
    ]
