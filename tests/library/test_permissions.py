"""As an ordinary user (fork, then drop to uid 65534): modes, owners, and the
words that explain a refusal or a limit."""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Callable

import pytest

from baseplate.message_queue import (
    RLIMIT_MSGQUEUE,
    InvalidParametersError,
    MessageQueue,
    MessageQueueOSError,
    QueuePermissionError,
)
from helpers import (
    NOBODY,
    need_root,
    queue_exists,
    run_as_nobody,
    run_in_mount_namespace,
)

MakeQueue = Callable[..., MessageQueue]

# -- as an ordinary user (fork, then drop to uid 65534) --------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_queues_are_private_by_default_whatever_the_umask(queue_name: str, umask: int) -> None:
    old = os.umask(umask)
    try:
        queue = MessageQueue(queue_name)
    finally:
        os.umask(old)
    with queue:
        assert queue.mode == 0o600
        assert (queue.uid, queue.gid) == (os.geteuid(), os.getegid())


# A child that drops to uid 65534 and opens the queue named by argv[1]; it
# prints what it was told. Run in a mount namespace of its own.
OPEN_AS_NOBODY = """
import os, sys
from baseplate.message_queue import MessageQueue, QueuePermissionError
pid = os.fork()
if pid == 0:
    os.setgroups([]); os.setgid(65534); os.setuid(65534)
    try:
        MessageQueue(sys.argv[1], create=False).close()
        print("opened")
    except QueuePermissionError as error:
        print(error)
    sys.stdout.flush()  # os._exit() flushes nothing
    os._exit(0)
os.waitpid(pid, 0)
"""


@pytest.mark.parametrize("mounted", [True, False], ids=["mqueue mounted", "not mounted"])
def test_another_user_is_refused_and_told_whose_queue_it_is(queue_name: str, mounted: bool) -> None:
    MessageQueue(queue_name).close()  # root's, 0o600 by default
    result = run_in_mount_namespace(OPEN_AS_NOBODY, mounted, (queue_name,))
    message = result.stdout
    assert "permission denied to open queue" in message, result.stderr
    if mounted:
        assert "it belongs to root (uid 0), group root (gid 0), mode 0600." in message
    else:
        assert "mount -t mqueue none /dev/mqueue" in message
    assert "mode=0o660" in message  # how to share it


def test_a_group_shared_queue_opens_for_its_group(queue_name: str) -> None:
    need_root("the test gives the queue to group 65534, and uid 65534 opens it")
    with MessageQueue(queue_name, mode=0o660) as queue:
        os.fchown(queue.fileno(), -1, NOBODY)  # as `chgrp` on the mqueue file system does
        assert queue.gid == NOBODY
        queue.put(b"for the group")

    def take_as_group_member() -> bytes:
        with MessageQueue(queue_name, create=False) as shared:
            return bytes(shared.get(timeout=0))

    assert run_as_nobody(take_as_group_member) == b"for the group"


def test_mode_is_honoured_for_other_users(make_queue: MakeQueue) -> None:
    private = make_queue(mode=0o600)

    def open_private() -> str:
        try:
            MessageQueue(private.name)
        except QueuePermissionError as error:
            return f"{type(error).__name__} {error.errno} {error}"
        return "opened"

    outcome = run_as_nobody(open_private)
    assert outcome.startswith(f"QueuePermissionError {errno.EACCES}")
    assert private.name in outcome


def test_read_only_access_opens_for_reading_only(make_queue: MakeQueue) -> None:
    shared = make_queue(mode=0o644)
    shared.put(b"for everyone")

    def read_then_write() -> tuple[bytes, str]:
        queue = MessageQueue(shared.name)
        message = bytes(queue.get(timeout=5))
        try:
            queue.put(b"intruder")
        except QueuePermissionError as error:
            return message, str(error)
        return message, "sent"

    message, outcome = run_as_nobody(read_then_write)
    assert message == b"for everyone"
    assert "opened for reading only" in outcome
    assert shared.current_messages == 0


def test_sysctl_limits_give_a_precise_error_for_ordinary_users(queue_name: str) -> None:
    msg_max = int(Path("/proc/sys/fs/mqueue/msg_max").read_text())
    msgsize_max = int(Path("/proc/sys/fs/mqueue/msgsize_max").read_text())

    def over_the_limit() -> str:
        try:
            MessageQueue(queue_name, max_messages=msg_max + 1, max_message_size=msgsize_max + 1)
        except InvalidParametersError as error:
            assert isinstance(error, ValueError)
            return str(error)
        return "created"

    message = run_as_nobody(over_the_limit)
    assert f"max_messages={msg_max + 1} exceeds fs.mqueue.msg_max={msg_max}" in message
    assert (
        f"max_message_size={msgsize_max + 1} exceeds fs.mqueue.msgsize_max={msgsize_max}" in message
    )
    assert "sysctl -w fs.mqueue.msg_max=" in message
    assert not queue_exists(queue_name)


def test_exhausted_rlimit_msgqueue_explains_ulimit_q(queue_name: str) -> None:

    def create_too_big() -> tuple[int, str]:
        try:
            MessageQueue(queue_name, max_messages=10, max_message_size=8192)
        except MessageQueueOSError as error:
            return error.errno or 0, str(error.strerror)
        return 0, "created"

    code, message = run_as_nobody(create_too_big, {RLIMIT_MSGQUEUE: (1000, 1000)})
    assert code == errno.EMFILE
    assert "ulimit -q = 1000 bytes" in message and "RLIMIT_MSGQUEUE" in message
    assert not queue_exists(queue_name)
