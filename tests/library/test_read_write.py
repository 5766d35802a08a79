"""read= and write= on MessageQueue: what each pair opens, and how a refusal
is worded (the queue's owner, group and mode, and the fix; or the mount
advice when /dev/mqueue is not mounted). As the queue's owner, with its mode
narrowed by fchmod; as root, whose access no mode limits, the checks run as
uid 65534, which then owns the queue."""

from __future__ import annotations

import os
from typing import Callable, Optional

import pytest

from baseplate.message_queue import (
    InvalidParametersError,
    MessageQueue,
    QueuePermissionError,
    system,
)
from helpers import run_as_nobody

MakeQueue = Callable[..., MessageQueue]


def as_its_owner(queue_name: str, mode: int, check: Callable[[], None]) -> None:
    """Create ``queue_name`` with ``mode`` (exactly) and run ``check``, as this
    user; as uid 65534 when this is root, since no mode limits root."""

    def owned() -> None:
        with MessageQueue(queue_name) as owner:
            os.fchmod(owner.fileno(), mode)
            check()

    if os.geteuid() == 0:
        run_as_nobody(owned)
    else:
        owned()


BOTH, READING, WRITING = (True, True), (True, False), (False, True)
REFUSED = None

# (read, write) -> what it opens on a queue of mode 0600, 0400, 0200.
TABLE = [
    ((None, None), [BOTH, READING, WRITING]),
    ((True, None), [BOTH, READING, REFUSED]),
    ((None, True), [BOTH, REFUSED, WRITING]),
    ((True, True), [BOTH, REFUSED, REFUSED]),
    ((True, False), [READING, READING, REFUSED]),
    ((False, True), [WRITING, REFUSED, WRITING]),
]


@pytest.mark.parametrize(("asked", "outcomes"), TABLE, ids=[str(row[0]) for row in TABLE])
@pytest.mark.parametrize("column", [0, 1, 2], ids=["0600", "0400", "0200"])
def test_each_pair_opens_what_the_table_says(
    queue_name: str,
    asked: tuple[Optional[bool], Optional[bool]],
    outcomes: list[Optional[tuple[bool, bool]]],
    column: int,
) -> None:
    mode = (0o600, 0o400, 0o200)[column]
    read, write = asked
    expected = outcomes[column]

    def check() -> None:
        if expected is REFUSED:
            with pytest.raises(QueuePermissionError) as caught:
                MessageQueue(queue_name, create=False, read=read, write=write)
            assert f"mode {mode:04o}" in str(caught.value)
            return
        with MessageQueue(queue_name, create=False, read=read, write=write) as queue:
            assert (queue.readable(), queue.writable()) == expected

    as_its_owner(queue_name, mode, check)


def test_read_false_and_write_false_is_refused_at_once(queue_name: str) -> None:
    with pytest.raises(InvalidParametersError, match="read=False and write=False"):
        MessageQueue(queue_name, read=False, write=False)
    assert not os.path.exists(f"/dev/mqueue/{queue_name[1:]}")


def test_a_non_bool_is_a_type_error(queue_name: str) -> None:
    with pytest.raises(TypeError, match="read="):
        MessageQueue(queue_name, read=1)  # type: ignore[arg-type]


def test_a_refusal_names_owner_group_mode_and_the_fix(queue_name: str) -> None:
    if system.mqueue_mount() is None:
        pytest.skip("the mqueue file system is not mounted")

    def check() -> None:
        with pytest.raises(QueuePermissionError) as caught:
            MessageQueue(queue_name, create=False, write=True)
        message = str(caught.value)
        assert "for writing: it is this user's own" in message
        assert "does not allow even its owner to open it for writing" in message
        assert f"uid {os.geteuid()}" in message
        assert f"group {system.group_name(os.getegid()) or os.getegid()}" in message
        assert "mode 0400" in message
        assert "chmod 600" in message

    as_its_owner(queue_name, 0o400, check)


def test_without_the_mount_a_refusal_gives_the_mount_advice(
    queue_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(system, "mqueue_mount", lambda: None)

    def check() -> None:
        with pytest.raises(QueuePermissionError) as caught:
            MessageQueue(queue_name, create=False, read=True, write=False)
        assert system.MOUNT_COMMAND in str(caught.value)

    as_its_owner(queue_name, 0o200, check)


def test_put_on_a_queue_opened_for_reading_names_owner_and_mode(
    make_queue: MakeQueue, queue_name: str
) -> None:
    make_queue(queue_name, mode=0o600)
    reader = MessageQueue(queue_name, create=False, read=True, write=False)
    with reader, pytest.raises(QueuePermissionError) as caught:
        reader.put(b"x")
    message = str(caught.value)
    assert "opened for reading only" in message
    assert f"uid {os.geteuid()}" in message
    assert "mode 0600" in message


def test_get_on_a_queue_opened_for_writing_is_refused(
    make_queue: MakeQueue, queue_name: str
) -> None:
    make_queue(queue_name)
    with MessageQueue(queue_name, create=False, read=False, write=True) as writer:
        assert writer.writable() and not writer.readable()
        writer.put(b"x")
        with pytest.raises(QueuePermissionError, match="opened for writing only"):
            writer.get(timeout=0)
