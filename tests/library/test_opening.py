"""Opening a queue: the kernel's sizes, create and exclusive, and the names and
sizes refused before any system call."""

from __future__ import annotations

import errno
from typing import Any, Callable

import pytest

from baseplate.message_queue import (
    InvalidParametersError,
    MessageQueue,
    QueueExistsError,
    QueueNotFoundError,
    validate_name,
)
from helpers import (
    queue_exists,
    unlink_quietly,
)

MakeQueue = Callable[..., MessageQueue]

# -- opening -------------------------------------------------------------------


def test_attributes_are_the_kernels_values(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=3, max_message_size=100)
    assert (queue.max_messages, queue.max_message_size) == (3, 100)
    assert queue.current_messages == 0
    assert not queue.closed
    assert isinstance(queue.fileno(), int)
    assert queue.name.startswith("/bp-test-")


def test_existing_queue_keeps_its_own_sizes(make_queue: MakeQueue, queue_name: str) -> None:
    bigger = make_queue(queue_name, max_messages=5, max_message_size=4096)
    smaller = make_queue(queue_name, max_messages=2, max_message_size=16)
    assert (smaller.max_messages, smaller.max_message_size) == (5, 4096)
    bigger.put(b"x" * 4096)  # longer than the size asked for by `smaller`
    assert smaller.get() == b"x" * 4096


def test_create_false_needs_an_existing_queue(queue_name: str) -> None:
    with pytest.raises(QueueNotFoundError, match="does not exist") as caught:
        MessageQueue(queue_name, create=False)
    assert isinstance(caught.value, FileNotFoundError)
    assert caught.value.errno == errno.ENOENT
    assert queue_name in str(caught.value)
    assert not queue_exists(queue_name)


def test_exclusive_refuses_an_existing_queue(make_queue: MakeQueue, queue_name: str) -> None:
    make_queue(queue_name, exclusive=True)
    with pytest.raises(QueueExistsError, match="already exists") as caught:
        MessageQueue(queue_name, exclusive=True)
    assert isinstance(caught.value, FileExistsError)
    assert caught.value.errno == errno.EEXIST


def test_exclusive_without_create_is_refused(queue_name: str) -> None:
    with pytest.raises(InvalidParametersError):
        MessageQueue(queue_name, create=False, exclusive=True)


def test_bytes_name_is_accepted(queue_name: str) -> None:
    with MessageQueue(queue_name.encode()) as queue:
        assert queue.name == queue_name
        queue.put(b"x")
    assert queue_exists(queue_name)


@pytest.mark.parametrize(
    "name, problem",
    [
        ("", "must start with '/'"),
        ("queue", "as in '/queue'"),
        ("/", "at least one character"),
        ("/a/b", "no '/'"),
        ("/a\0b", "NUL"),
        ("/" + "x" * 256, "at most 255"),
        ("/..", "reserved"),
        ("/.", "reserved"),
    ],
)
def test_bad_names_are_refused_before_any_system_call(name: str, problem: str) -> None:
    with pytest.raises(InvalidParametersError, match=problem):
        MessageQueue(name)
    with pytest.raises(ValueError, match=problem):
        validate_name(name)


def test_longest_name_is_accepted() -> None:
    name = "/" + "n" * 255
    try:
        with MessageQueue(name) as queue:
            assert queue.name == name
    finally:
        unlink_quietly(name)


@pytest.mark.parametrize("name", [None, 42, ["/q"]])
def test_name_of_wrong_type_is_a_type_error(name: object) -> None:
    with pytest.raises(TypeError, match="queue name must be"):
        MessageQueue(name)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"max_messages": 0}, "max_messages=0 must be at least 1"),
        ({"max_messages": -1}, "max_messages=-1"),
        ({"max_message_size": 0}, "max_message_size=0"),
        ({"max_message_size": 2**70}, "too large"),
        ({"mode": 0o1777}, "mode="),
    ],
)
def test_bad_sizes_are_refused_and_nothing_is_created(
    queue_name: str, kwargs: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidParametersError, match=problem):
        MessageQueue(queue_name, **kwargs)
    assert not queue_exists(queue_name)


@pytest.mark.parametrize(
    "kwargs", [{"max_messages": 1.5}, {"max_message_size": "8"}, {"max_messages": True}]
)
def test_sizes_of_wrong_type_are_type_errors(queue_name: str, kwargs: dict[str, object]) -> None:
    with pytest.raises(TypeError, match="must be an int"):
        MessageQueue(queue_name, **kwargs)  # type: ignore[arg-type]
    assert not queue_exists(queue_name)
