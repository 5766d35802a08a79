"""notify(): told by the kernel when a message arrives in an empty queue."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import threading
import time
from typing import Any, Callable, Iterator

import pytest

from baseplate.message_queue import (
    InvalidParametersError,
    MessageQueue,
    MessageQueueOSError,
    QueueClosedError,
)
from helpers import run_in_mount_namespace

MakeQueue = Callable[..., MessageQueue]

PUT_FROM_ANOTHER_PROCESS = """
import sys
from baseplate.message_queue import MessageQueue
with MessageQueue(sys.argv[1], create=False) as queue:
    queue.put(sys.argv[2].encode())
"""


def put_elsewhere(queue: MessageQueue, message: str = "hello") -> None:
    result = subprocess.run(
        [sys.executable, "-c", PUT_FROM_ANOTHER_PROCESS, queue.name, message],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr


@pytest.fixture
def usr1() -> Iterator[list[int]]:
    """SIGUSR1 recorded by a handler."""
    received: list[int] = []
    previous = signal.signal(signal.SIGUSR1, lambda signum, frame: received.append(signum))
    yield received
    signal.signal(signal.SIGUSR1, previous)


def wait_for(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.01)
    return condition()


def test_notify_by_signal(queue: MessageQueue, usr1: list[int]) -> None:
    queue.notify(signal.SIGUSR1)
    put_elsewhere(queue)
    assert wait_for(lambda: usr1 == [signal.SIGUSR1])
    assert queue.get(timeout=0) == b"hello"
    put_elsewhere(queue)  # used up: no second signal
    time.sleep(0.2)
    assert usr1 == [signal.SIGUSR1]


def test_notify_by_callback_runs_once_in_a_new_thread(queue: MessageQueue) -> None:
    calls: list[threading.Thread] = []
    queue.notify(lambda: calls.append(threading.current_thread()))
    put_elsewhere(queue)
    assert wait_for(lambda: len(calls) == 1)
    assert calls[0] is not threading.main_thread()
    queue.get(timeout=0)
    put_elsewhere(queue)
    time.sleep(0.2)
    assert len(calls) == 1


def test_a_callback_that_raises_reaches_threading_excepthook(queue: MessageQueue) -> None:
    seen: list[Any] = []
    previous = threading.excepthook
    threading.excepthook = seen.append

    def broken() -> None:
        raise RuntimeError("in the callback")

    try:
        queue.notify(broken)
        put_elsewhere(queue)
        assert wait_for(lambda: len(seen) == 1)
    finally:
        threading.excepthook = previous
    assert seen[0].exc_type is RuntimeError and str(seen[0].exc_value) == "in the callback"
    assert queue.get(timeout=0) == b"hello"  # and the process lives on


def test_cancelled_requests_do_not_fire(queue: MessageQueue, usr1: list[int]) -> None:
    calls: list[int] = []
    queue.notify(lambda: calls.append(1))
    queue.notify(None)
    put_elsewhere(queue)
    queue.get(timeout=5)
    queue.notify(signal.SIGUSR1)
    queue.notify(None)
    put_elsewhere(queue)
    time.sleep(0.3)
    assert calls == [] and usr1 == []


def test_a_callback_may_ask_again(queue: MessageQueue) -> None:
    calls: list[int] = []
    armed = threading.Event()

    def again() -> None:
        calls.append(1)
        if len(calls) < 3:
            queue.notify(again)
        armed.set()

    queue.notify(again)
    for round_ in range(4):
        armed.clear()
        put_elsewhere(queue, f"round {round_}")
        if round_ < 3:
            assert armed.wait(10), round_
        else:
            time.sleep(0.3)  # the third call did not ask again
        assert queue.get(timeout=5) == f"round {round_}".encode()
    assert len(calls) == 3


def test_a_newer_request_of_the_same_object_replaces_the_older(queue: MessageQueue) -> None:
    first: list[int] = []
    second: list[int] = []
    queue.notify(lambda: first.append(1))
    queue.notify(lambda: second.append(1))
    put_elsewhere(queue)
    assert wait_for(lambda: second == [1])
    time.sleep(0.1)
    assert first == []


def test_closing_the_queue_cancels_its_request(make_queue: MakeQueue) -> None:
    queue = make_queue()
    calls: list[int] = []
    queue.notify(lambda: calls.append(1))
    queue.close()
    with pytest.raises(QueueClosedError):
        queue.notify(None)
    other = make_queue(queue.name)
    other.notify(lambda: calls.append(2))  # not EBUSY: the first request is gone
    put_elsewhere(other)
    assert wait_for(lambda: calls == [2])


REGISTER_AND_WAIT = """
import os, signal, sys
from baseplate.message_queue import MessageQueue
queue = MessageQueue(sys.argv[1], create=False)
queue.notify(signal.SIGUSR2)
print(os.getpid(), flush=True)
sys.stdin.read()
"""


def test_another_processs_request_makes_a_clear_busy_error(queue: MessageQueue) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", REGISTER_AND_WAIT, queue.name],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdin is not None
    try:
        pid = holder.stdout.readline().strip()
        with pytest.raises(MessageQueueOSError) as caught:
            queue.notify(lambda: None)
        assert caught.value.errno == errno.EBUSY
        assert "already has a notification request" in str(caught.value)
        assert f"from process {pid}" in str(caught.value)  # read through our own descriptor
    finally:
        holder.stdin.close()
        holder.wait(timeout=10)
    queue.notify(None)  # the holder's request ended with it
    queue.notify(lambda: None)


# Two objects of one process on one queue, each asking; then a message.
TWO_OBJECTS = """
import sys, threading
from baseplate.message_queue import MessageQueue, MessageQueueOSError
first = MessageQueue(sys.argv[1], create=False)
second = MessageQueue(sys.argv[1], create=False)
fired = threading.Event()
first.notify(fired.set)
try:
    second.notify(lambda: None)
    print("accepted")
except MessageQueueOSError as error:
    print(error.errno, error)
second.notify(None)  # it holds none: this cancels nothing
second.put(b"arrives")
print("fired", fired.wait(5))
"""


@pytest.mark.parametrize("mounted", [False, True], ids=["not mounted", "mqueue mounted"])
def test_a_refused_request_changes_nothing(queue: MessageQueue, mounted: bool) -> None:
    """1.0 named the holder by opening and closing /dev/mqueue/NAME, which
    cancelled the request it had lost to, that of another object of ours."""
    if mounted:
        result = run_in_mount_namespace(TWO_OBJECTS, mounted=True, args=(queue.name,))
    else:
        result = subprocess.run(
            [sys.executable, "-c", TWO_OBJECTS, queue.name], capture_output=True, text=True
        )
    refused, fired = result.stdout.splitlines()
    assert refused.startswith(f"{errno.EBUSY} ")
    assert "from another MessageQueue object in this process" in refused
    assert fired == "fired True", result.stderr


def test_closing_another_object_on_the_queue_cancels_this_processs_request(
    queue: MessageQueue,
) -> None:
    """The kernel's rule, as the docs say: any close of a descriptor of the
    queue, by this process, ends its request."""
    fired = threading.Event()
    queue.notify(fired.set)
    MessageQueue(queue.name, create=False).close()
    put_elsewhere(queue)
    assert not fired.wait(0.5)
    assert queue.get(timeout=5) == b"hello"  # empty again: a notification needs that
    queue.notify(fired.set)  # and it may be asked again
    put_elsewhere(queue)
    assert fired.wait(5)


@pytest.mark.parametrize(
    ("how", "error"),
    [
        (0, InvalidParametersError),
        (999, InvalidParametersError),
        (True, TypeError),
        ("x", TypeError),
    ],
)
def test_bad_requests_are_refused(queue: MessageQueue, how: Any, error: type[Exception]) -> None:
    with pytest.raises(error, match="notify"):
        queue.notify(how)
