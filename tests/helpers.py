"""Helpers that tests import: queue names, users, namespaces, descriptors.

Every helper holds for any user: what needs root skips, saying so. Children
that a helper forks are killed and reaped whatever happens; conftest.py
reaps any other child a test leaves behind.
"""

from __future__ import annotations

import gc
import grp
import importlib
import os
import pickle
import pwd
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

import pytest

from baseplate.message_queue import MessageQueue, QueueNotFoundError, TimedOutError, unlink

NOBODY = 65534
#: Who runs the tests: the owner of every queue they create.
ME = {
    "owner": pwd.getpwuid(os.geteuid()).pw_name,
    "uid": os.geteuid(),
    "group": grp.getgrgid(os.getegid()).gr_name,
    "gid": os.getegid(),
}
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


class Ran:
    """How a command run by :func:`run_cli_as_nobody` ended."""

    def __init__(self, status: int, stdout: bytes, stderr: bytes) -> None:
        self.returncode = status  # -N when signal N ended it, as subprocess says
        self.stdout = stdout
        self.stderr = stderr

    def __repr__(self) -> str:
        return f"Ran({self.returncode}, stdout={self.stdout[:200]!r}, stderr={self.stderr!r})"


def run_cli_as_nobody(
    args: list[str],
    stdin: Optional[int] = None,
    stdout: Optional[int] = None,
    signal_after: Optional[Tuple[float, int]] = None,
    rlimits: Optional[Dict[int, Tuple[int, int]]] = None,
    timeout: float = 60,
) -> Ran:
    """Run ``baseplate-mq ARGS`` as uid/gid 65534, in a forked child (its
    interpreter may live where that user cannot read: nothing is executed).

    ``stdin``/``stdout``: descriptors to give it (else /dev/null and a pipe
    that is read here); ``signal_after``: (seconds, signal) to send it then;
    ``rlimits``: resource limits to set first.
    Needs root: skips otherwise. The child is killed and reaped whatever happens.
    """
    need_root("the test runs the command as uid/gid 65534, another user")
    import resource

    from baseplate.message_queue.cli import main

    # What the child needs, loaded first (the library loads its modules on use).
    for needed in ("checks", "queue", "cli.commands", "cli.legacy"):
        importlib.import_module(f"baseplate.message_queue.{needed}")

    err_read, err_write = os.pipe()
    out_read, out_write = os.pipe() if stdout is None else (-1, stdout)
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.dup2(os.open(os.devnull, os.O_RDONLY) if stdin is None else stdin, 0)
            os.dup2(out_write, 1)
            os.dup2(err_write, 2)
            for which, limits in (rlimits or {}).items():
                resource.setrlimit(which, limits)
            os.setgroups([])
            os.setgid(NOBODY)
            os.setuid(NOBODY)
            sys.argv = ["baseplate-mq", *args]
            main()
        except SystemExit as ended:
            os._exit(ended.code if isinstance(ended.code, int) else 1)
        except BaseException:
            traceback.print_exc()
            os._exit(99)
        os._exit(0)
    os.close(err_write)
    if stdout is None:
        os.close(out_write)
    try:
        if signal_after is not None:
            time.sleep(signal_after[0])
            os.kill(pid, signal_after[1])
        pipes = [fd for fd in (out_read, err_read) if fd >= 0]
        deadline = time.monotonic() + timeout
        read = _read_all_until_closed(pipes, deadline)
        output, errors = read.get(out_read, b""), read[err_read]
        while True:
            reaped, status = os.waitpid(pid, os.WNOHANG)
            if reaped:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"baseplate-mq {args} did not end in {timeout} s")
            time.sleep(0.01)
    finally:
        for fd in (out_read, err_read):
            if fd >= 0:
                os.close(fd)
        reap(pid)
    code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
    return Ran(code, output, errors)


def _read_until_closed(fd: int, deadline: float) -> bytes:
    """Everything written to pipe ``fd`` until its writer closes it, or the deadline."""
    return _read_all_until_closed([fd], deadline)[fd]


def _read_all_until_closed(fds: list[int], deadline: float) -> Dict[int, bytes]:
    """Everything written to each pipe until its writer closes it (read side
    by side, so that none fills up), or the deadline."""
    chunks: Dict[int, list[bytes]] = {fd: [] for fd in fds}
    open_fds = list(fds)
    while open_fds:
        left = deadline - time.monotonic()
        ready = select.select(open_fds, [], [], max(left, 0))[0] if left > 0 else []
        if not ready:
            break
        for fd in ready:
            chunk = os.read(fd, 65536)
            if chunk:
                chunks[fd].append(chunk)
            else:
                open_fds.remove(fd)
    return {fd: b"".join(parts) for fd, parts in chunks.items()}


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


def has_open(pid: int, queue_name: str) -> bool:
    """Whether process ``pid`` has queue ``queue_name`` open (False once it is gone)."""
    try:
        return any(os.readlink(fd) == queue_name for fd in Path(f"/proc/{pid}/fd").iterdir())
    except OSError:  # it has just ended, or its descriptors changed meanwhile
        return False


def wait_until_open(pid: int, queue_name: str, timeout: float = 10) -> None:
    """Wait until process ``pid`` has queue ``queue_name`` open: past its start-up."""
    deadline = time.monotonic() + timeout
    while not has_open(pid, queue_name):
        if time.monotonic() > deadline:
            raise AssertionError(f"process {pid} did not open {queue_name} within {timeout} s")
        time.sleep(0.002)


def wait_until_it_takes(pid: int, queue: MessageQueue, waiting: int) -> None:
    """Wait until process ``pid`` has taken messages from ``queue``, which held
    ``waiting``, then a moment more: a reader whose output nobody reads has
    filled it by then, and waits for room."""
    wait_until_open(pid, queue.name)  # past its start-up (slow on PyPy, under load)
    deadline = time.monotonic() + 10
    while queue.current_messages == waiting and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.3)


def read_what_is_there(fd: int) -> bytes:
    """What pipe ``fd`` holds now, without waiting for more."""
    os.set_blocking(fd, False)
    held = b""
    try:
        while chunk := os.read(fd, 65536):
            held += chunk
    except BlockingIOError:
        pass
    return held


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


class Producer(threading.Thread):
    """Feeds numbered messages into a queue until stopped; remembers what it sent."""

    def __init__(self, queue: MessageQueue, size: int = 0) -> None:
        super().__init__(daemon=True)
        self.queue = queue
        self.padding = b"." * size
        self.sent: list[bytes] = []
        self.stopped = threading.Event()

    def run(self) -> None:
        number = 0
        while not self.stopped.is_set():
            message = b"%08d" % number + self.padding
            try:
                self.queue.put(message, timeout=0.01)
            except TimedOutError:
                continue
            self.sent.append(message)
            number += 1

    def stop(self) -> list[bytes]:
        self.stopped.set()
        self.join(10)
        return self.sent


def drain(queue: MessageQueue) -> list[bytes]:
    left: list[bytes] = []
    while queue.current_messages:
        left += queue.get_many(100, timeout=0)
    return left


def load_harness() -> Any:
    """The load harness of `nox -s stress` (stress/loadcheck.py), for the CI-sized runs."""
    if str(STRESS) not in sys.path:
        sys.path.insert(0, str(STRESS))
    import loadcheck

    return loadcheck
