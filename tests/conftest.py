"""Shared fixtures: real kernel queues with unique names, always unlinked."""

from __future__ import annotations

import gc
import os
import pickle
import subprocess
import sys
import traceback
import uuid
from typing import Any, Callable, Iterator

import pytest

from baseplate.message_queue import MessageQueue, QueueNotFoundError, unlink

NOBODY = 65534


def unique_name(prefix: str = "bp-test") -> str:
    return f"/{prefix}-{uuid.uuid4().hex}"


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


@pytest.fixture
def queue_name() -> Iterator[str]:
    name = unique_name()
    yield name
    unlink_quietly(name)


@pytest.fixture
def make_queue() -> Iterator[Callable[..., MessageQueue]]:
    """Open queues with unique names; close and unlink them all afterwards."""
    opened: list[MessageQueue] = []

    def make(*args: Any, **kwargs: Any) -> MessageQueue:
        if not args or not isinstance(args[0], str):
            args = (unique_name(), *args)
        queue = MessageQueue(*args, **kwargs)
        opened.append(queue)
        return queue

    yield make
    for queue in opened:
        queue.close()
        unlink_quietly(queue.name)


@pytest.fixture
def queue(make_queue: Callable[..., MessageQueue]) -> MessageQueue:
    return make_queue(max_messages=10, max_message_size=1024)


def run_as_nobody(
    function: Callable[[], Any], rlimits: dict[int, tuple[int, int]] | None = None
) -> Any:
    """Run ``function`` in a forked child with uid/gid 65534, as an ordinary user
    would; return its result, or re-raise its exception here.

    No new interpreter is executed: it lives where that user cannot read, so
    everything the child needs is imported before the fork.
    """
    import resource

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
    with os.fdopen(read_end, "rb") as pipe:
        payload = pipe.read()
    os.waitpid(pid, 0)
    outcome = pickle.loads(payload)
    if outcome[0] == "error":
        sys.stderr.write(outcome[2])
        raise outcome[1]
    return outcome[1]


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

    Skips where no mount namespace can be made (a container without
    CAP_SYS_ADMIN, as cibuildwheel's are); CI's machine can."""
    if subprocess.run(["unshare", "--mount", "true"], capture_output=True).returncode != 0:
        pytest.skip("this machine cannot make a mount namespace (unshare --mount)")
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
