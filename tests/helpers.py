"""Helpers that tests import: queue names, users, namespaces, descriptors.

Every helper holds for any user: what needs root skips, saying so. Children
that a helper forks are killed and reaped whatever happens; conftest.py
reaps any other child a test leaves behind.
"""

from __future__ import annotations

import gc
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import pytest

from baseplate.message_queue import MessageQueue, QueueNotFoundError, unlink

NOBODY = 65534
ROOT = Path(__file__).resolve().parent.parent
#: The load harness that `nox -s stress` runs too, beside the tests.
STRESS = ROOT / "stress"

#: The console script beside this interpreter (or on PATH), and the ways to run it.
SCRIPT = shutil.which("baseplate-mq", path=os.path.dirname(sys.executable)) or shutil.which(
    "baseplate-mq"
)
BPMQ = [SCRIPT or "baseplate-mq"]
SEED = [sys.executable, "-m", "baseplate.message_queue"]

#: Every queue name handed out in this run, unlinked at its end (conftest.py).
handed_out: set[str] = set()


def unique_name(prefix: str = "bp-test") -> str:
    name = f"/{prefix}-{uuid.uuid4().hex}"
    handed_out.add(name)
    return name


def queue_exists(name: str) -> bool:
    """Ask the kernel with a separate mq_open that never creates."""
    try:
        MessageQueue(name, create=False).close()
    except QueueNotFoundError:
        return False
    return True


def unlink_quietly(name: str) -> None:
    try:
        unlink(name)
    except QueueNotFoundError:
        pass


def need_root(what: str) -> None:
    """Skip the calling test unless it runs as root, saying what needs root."""
    if os.geteuid() != 0:
        pytest.skip(f"needs root: {what}")


def run_as_nobody(
    function: Callable[[], Any],
    rlimits: Optional[Dict[int, Tuple[int, int]]] = None,
    timeout: float = 60,
) -> Any:
    """Run ``function`` in a forked child with uid/gid 65534, as an ordinary user
    would; return its result, or re-raise its exception here.

    Needs root (to change user): skips otherwise. No new interpreter is
    executed: it lives where that user cannot read, so everything the child
    needs is imported before the fork. The child is killed and reaped if it
    has not answered within ``timeout`` seconds, or if this side fails.
    """
    import resource

    need_root("the test drops to uid/gid 65534 to act as another user")
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        try:
            for which, limits in (rlimits or {}).items():
                resource.setrlimit(which, limits)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            outcome: Any = ("ok", function())
        except BaseException as error:
            outcome = ("error", error, traceback.format_exc())
        try:
            payload = pickle.dumps(outcome)
        except Exception:
            payload = pickle.dumps(("error", RuntimeError(repr(outcome)), ""))
        with os.fdopen(write_end, "wb") as pipe:
            pipe.write(payload)
        os._exit(0)
    os.close(write_end)
    try:
        payload = _read_until_closed(read_end, time.monotonic() + timeout)
    finally:
        os.close(read_end)
        reap(pid)
    if not payload:
        raise AssertionError(f"the child running as uid {NOBODY} gave no answer in {timeout} s")
    outcome = pickle.loads(payload)
    if outcome[0] == "error":
        sys.stderr.write(outcome[2])
        raise outcome[1]
    return outcome[1]


def _read_until_closed(fd: int, deadline: float) -> bytes:
    """Everything written to pipe ``fd`` until its writer closes it, or the deadline."""
    chunks: list[bytes] = []
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            return b""
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def reap(pid: int) -> None:
    """Kill child ``pid`` unless it has exited, and reap it."""
    try:
        if os.waitpid(pid, os.WNOHANG) == (0, 0):
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def run(
    args: list[str], input: bytes = b"", timeout: float = 60
) -> subprocess.CompletedProcess[bytes]:
    """Run a command to its end; no Python traceback may reach its stderr."""
    result = subprocess.run(args, input=input, capture_output=True, timeout=timeout)
    assert b"Traceback" not in result.stderr, result.stderr.decode()
    return result


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def settled_open_fds() -> int:
    """open_fds() once garbage from earlier tests is gone: PyPy runs the
    finalizers of dropped queues over several collections, so collect until
    the count stops changing."""
    count = -1
    for _ in range(20):
        gc.collect()
        if open_fds() == count:
            break
        count = open_fds()
    return count


def run_in_mount_namespace(
    script: str, mounted: bool, args: tuple[str, ...] = ()
) -> subprocess.CompletedProcess[str]:
    """Run Python ``script`` (with ``args``) as root in a mount namespace of its
    own, where the mqueue file system is mounted at /dev/mqueue, or nowhere.

    Skips when not root, or where no mount namespace can be made (a
    container without CAP_SYS_ADMIN, as cibuildwheel's are); CI's machine can.
    """
    need_root("the test makes a mount namespace of its own (unshare --mount)")
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("needs CAP_SYS_ADMIN: this machine cannot make a mount namespace")
    if mounted:
        setup = (
            "mkdir -p /dev/mqueue && "
            "{ mountpoint -q /dev/mqueue || mount -t mqueue none /dev/mqueue; }"
        )
    else:
        setup = (
            "for i in 1 2 3; do umount /dev/mqueue 2>/dev/null; done; "
            "! grep -q ' mqueue ' /proc/self/mounts"
        )
    return subprocess.run(
        [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            f'{setup} && exec "$0" -c "$@"',
            sys.executable,
            script,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def load_harness() -> Any:
    """The load harness of `nox -s stress` (stress/loadcheck.py), for the CI-sized runs."""
    if str(STRESS) not in sys.path:
        sys.path.insert(0, str(STRESS))
    import loadcheck

    return loadcheck
