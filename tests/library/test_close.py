"""Clean shutdown: close() wakes every blocked caller, and nothing is lost,
duplicated, or sent through a descriptor that belongs to someone else."""

from __future__ import annotations

import asyncio
import fcntl
import gc
import os
import random
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from typing import Any, Callable

import pytest
from baseplate.message_queue._mqueue import ffi, lib

from baseplate.message_queue import (
    InvalidParametersError,
    MessageQueue,
    MessageQueueError,
    QueueClosedError,
    QueueExistsError,
    QueueNotFoundError,
    TimedOutError,
    unlink,
)
from helpers import (
    open_fds,
    queue_exists,
    settled_open_fds,
    unique_name,
    unlink_quietly,
)

MakeQueue = Callable[..., MessageQueue]

# How long a woken call may take to notice close(): the benchmark figure is
# about 10 ms; this bound only catches a call that was not woken at all.
WAKE_BOUND = 2.0


def blocked_calls(queue: MessageQueue, timeout: float | None) -> dict[str, Callable[[], Any]]:
    """Every call that can block, with ``timeout``; the queue must be empty for
    the receiving ones and full for the sending ones."""
    into = bytearray(queue.max_message_size)
    return {
        "get": lambda: queue.get(timeout=timeout),
        "get_into": lambda: queue.get_into(into, timeout=timeout),
        "get_many": lambda: queue.get_many(5, timeout=timeout),
        "put": lambda: queue.put(b"blocked", timeout=timeout),
        "put_many": lambda: queue.put_many([b"blocked", b"too"], timeout=timeout),
    }


def run_in_thread(call: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Start ``call`` in a thread; the list gets its result or exception."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(call())
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=target, daemon=True)  # a failed test must not hang
    thread.start()
    return thread, outcome


@pytest.mark.parametrize("timeout", [None, 30.0])
@pytest.mark.parametrize("call", ["get", "get_into", "get_many", "put", "put_many"])
def test_close_from_another_thread_wakes_a_blocked_call(
    make_queue: MakeQueue, call: str, timeout: float | None
) -> None:
    queue = make_queue(max_messages=1, max_message_size=64)
    if call.startswith("put"):
        queue.put(b"fills the queue")
    thread, outcome = run_in_thread(blocked_calls(queue, timeout)[call])
    time.sleep(0.1)
    assert thread.is_alive()  # really blocked
    start = time.monotonic()
    queue.close()
    assert time.monotonic() - start < 0.5  # close() itself does not wait
    thread.join(WAKE_BOUND)
    assert not thread.is_alive()
    assert time.monotonic() - start < WAKE_BOUND
    assert len(outcome) == 1 and isinstance(outcome[0], QueueClosedError), outcome


def test_close_releases_the_descriptors_once_the_woken_calls_are_out(queue_name: str) -> None:
    before = settled_open_fds()
    queue = MessageQueue(queue_name)
    threads = [run_in_thread(queue.get)[0] for _ in range(3)]
    time.sleep(0.1)
    assert settled_open_fds() == before + 2  # the queue's, and the wake descriptor
    queue.close()
    for thread in threads:
        thread.join(WAKE_BOUND)
    assert settled_open_fds() == before


def test_put_many_interrupted_by_close_says_how_many_were_sent(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=2, max_message_size=16)
    thread, outcome = run_in_thread(lambda: queue.put_many([b"%d" % i for i in range(5)]))
    time.sleep(0.1)
    queue.close()
    thread.join(WAKE_BOUND)
    (error,) = outcome
    assert isinstance(error, QueueClosedError)
    assert error.sent == 2
    assert "after 2 of 5" in str(error)
    with MessageQueue(queue.name, create=False) as reopened:
        assert reopened.get_many(10, timeout=0) == [b"0", b"1"]


def test_of_six_blocked_threads_two_get_the_two_messages_and_four_are_woken(
    make_queue: MakeQueue,
) -> None:
    queue = make_queue(max_messages=10, max_message_size=16)
    threads = [run_in_thread(queue.get) for _ in range(6)]
    time.sleep(0.1)
    sender = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys\nfrom baseplate.message_queue import MessageQueue\n"
            "with MessageQueue(sys.argv[1], create=False) as q:\n"
            "    q.put(b'first'); q.put(b'second')",
            queue.name,
        ],
        capture_output=True,
        text=True,
    )
    assert sender.returncode == 0, sender.stderr
    deadline = time.monotonic() + 10
    while sum(not t.is_alive() for t, _ in threads) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    queue.close()
    for thread, _ in threads:
        thread.join(WAKE_BOUND)
    outcomes = [outcome[0] for _, outcome in threads]
    assert sorted(o for o in outcomes if isinstance(o, bytes)) == [b"first", b"second"]
    assert sum(isinstance(o, QueueClosedError) for o in outcomes) == 4
    with MessageQueue(queue.name, create=False) as reopened:
        assert reopened.current_messages == 0


def test_a_call_after_close_never_takes_a_message(make_queue: MakeQueue) -> None:
    """A thread woken by close() does not go on to take the next message."""
    queue = make_queue(max_messages=10, max_message_size=16)
    thread, outcome = run_in_thread(queue.get)
    time.sleep(0.1)
    queue.close()
    thread.join(WAKE_BOUND)
    with MessageQueue(queue.name, create=False) as other:
        other.put(b"for someone else")
        time.sleep(0.05)
        assert other.current_messages == 1
    assert isinstance(outcome[0], QueueClosedError)


@pytest.mark.parametrize("call", ["get_async", "put_async"])
def test_close_from_another_thread_wakes_async_waiters(make_queue: MakeQueue, call: str) -> None:
    queue = make_queue(max_messages=1, max_message_size=16)
    if call == "put_async":
        queue.put(b"fills the queue")
    started = threading.Event()

    async def wait() -> Any:
        started.set()
        if call == "get_async":
            return await queue.get_async()
        return await queue.put_async(b"blocked", timeout=30)

    outcome: list[Any] = []

    def loop_thread() -> None:
        try:
            outcome.append(asyncio.run(asyncio.wait_for(wait(), 30)))
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=loop_thread, daemon=True)
    thread.start()
    assert started.wait(10)
    time.sleep(0.1)
    start = time.monotonic()
    queue.close()  # not in the loop's thread
    thread.join(WAKE_BOUND)
    assert not thread.is_alive()
    assert time.monotonic() - start < WAKE_BOUND
    assert isinstance(outcome[0], QueueClosedError), outcome


def test_close_in_the_loop_wakes_async_waiters_and_unregisters(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=1, max_message_size=16)

    async def main() -> None:
        waiters = [asyncio.ensure_future(queue.get_async()) for _ in range(3)]
        await asyncio.sleep(0.05)
        fd = queue.fileno()
        queue.close()
        for waiter in waiters:
            with pytest.raises(QueueClosedError):
                await asyncio.wait_for(waiter, WAKE_BOUND)
        assert not asyncio.get_running_loop().remove_reader(fd)

    asyncio.run(main())


def test_gevent_close_wakes_blocked_greenlets(queue_name: str) -> None:
    pytest.importorskip("gevent")
    script = textwrap.dedent(f"""
        from gevent import monkey
        monkey.patch_all()
        import subprocess, sys, time
        import gevent
        from baseplate.message_queue import MessageQueue, QueueClosedError

        queue = MessageQueue({queue_name!r}, max_messages=10, max_message_size=16)

        def get():
            try:
                return queue.get()
            except QueueClosedError:
                return "closed"

        greenlets = [gevent.spawn(get) for _ in range(6)]
        gevent.sleep(0.1)
        subprocess.run([sys.executable, "-c",
            "import sys\\nfrom baseplate.message_queue import MessageQueue\\n"
            "with MessageQueue(sys.argv[1], create=False) as q:\\n"
            "    q.put(b'first'); q.put(b'second')", {queue_name!r}], check=True)
        deadline = time.monotonic() + 10
        while sum(g.ready() for g in greenlets) < 2 and time.monotonic() < deadline:
            gevent.sleep(0.01)
        start = time.monotonic()
        queue.close()
        gevent.joinall(greenlets, timeout=5)
        print(sorted(str(g.value) for g in greenlets), time.monotonic() - start < 2)
        full = MessageQueue({queue_name!r}, create=False)
        print(full.current_messages)
        full.put(b"x"); full.put_many([b"y"] * 9)
        blocked = gevent.spawn(lambda: full.put(b"z", timeout=30))
        gevent.sleep(0.1)
        full.close()
        try:
            blocked.get(timeout=5)
        except QueueClosedError:
            print("put woken")
    """)
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=120
    )
    assert result.stdout.splitlines() == [
        "['closed', 'closed', 'closed', 'closed', 'first', 'second'] True",
        "0",
        "put woken",
    ], result.stderr


def test_closing_in_the_parent_does_not_wake_the_child(queue: MessageQueue) -> None:
    """After fork() each process has its own wake descriptor: a close() in
    one does not end the other's waits."""
    with pytest.raises(TimedOutError):
        queue.get(timeout=0.001)  # the parent has a wake descriptor before the fork
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        try:
            os.write(write_end, b"w")
            message = queue.get(timeout=20)
            os._exit(0 if message == b"after the close" else 1)
        except BaseException:
            os._exit(2)
    os.close(write_end)
    assert os.read(read_end, 1) == b"w"
    os.close(read_end)
    time.sleep(0.2)  # the child is waiting
    queue.close()
    time.sleep(0.2)
    assert os.waitpid(pid, os.WNOHANG) == (0, 0)  # the child still waits
    with MessageQueue(queue.name, create=False) as other:
        other.put(b"after the close")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0


def test_closing_in_the_child_does_not_wake_the_parent(queue: MessageQueue) -> None:
    with pytest.raises(TimedOutError):
        queue.get(timeout=0.001)
    pid = os.fork()
    if pid == 0:
        try:
            time.sleep(0.2)
            queue.close()
            os._exit(0)
        except BaseException:
            os._exit(2)
    thread, outcome = run_in_thread(lambda: queue.get(timeout=20))
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    time.sleep(0.2)
    assert thread.is_alive()  # the child's close() did not end it
    with MessageQueue(queue.name, create=False) as other:
        other.put(b"still here")
    thread.join(10)
    assert outcome == [b"still here"]


def test_closing_and_replacing_queues_under_load_never_crosses_messages() -> None:
    """Threads keep using queue objects that another thread keeps closing and
    replacing, while fresh queues reuse the freed descriptor numbers: every
    message arrives in its own queue, once."""
    names = [unique_name("bp-churn") for _ in range(4)]
    current = {name: MessageQueue(name, max_messages=10, max_message_size=64) for name in names}
    stop = time.monotonic() + 3.0
    sent: dict[str, list[bytes]] = {name: [] for name in names}
    received: dict[str, list[bytes]] = {name: [] for name in names}
    failures: list[BaseException] = []
    lock = threading.Lock()

    def produce(name: str) -> None:
        sequence = 0
        while time.monotonic() < stop:
            message = f"{name}:{sequence}".encode()
            try:
                current[name].put(message, timeout=0.05)
            except (QueueClosedError, TimedOutError):
                continue  # not sent: try the same message again
            with lock:
                sent[name].append(message)
            sequence += 1

    def consume(name: str) -> None:
        buffer = bytearray(64)
        while time.monotonic() < stop + 0.5:
            queue = current[name]
            try:
                if random.random() < 0.5:
                    got = bytes(queue.get(timeout=0.05))
                else:
                    size, _ = queue.get_into(buffer, timeout=0.05)
                    got = bytes(buffer[:size])
            except (QueueClosedError, TimedOutError):
                continue
            with lock:
                received[name].append(got)

    def churn() -> None:
        spare: list[MessageQueue] = []
        while time.monotonic() < stop:
            name = random.choice(names)
            old = current[name]
            current[name] = MessageQueue(name, create=False)
            old.close()
            # A fresh queue takes the number just freed, if it was.
            other = unique_name("bp-churn-other")
            spare.append(MessageQueue(other, max_messages=1, max_message_size=8))
            if len(spare) > 3:
                extra = spare.pop(0)
                extra.unlink()
                extra.close()
            time.sleep(0.002)
        for extra in spare:
            extra.unlink()
            extra.close()

    def guard(target: Callable[[str], None], name: str) -> Callable[[], None]:
        def run() -> None:
            try:
                target(name)
            except BaseException as error:
                failures.append(error)

        return run

    threads = [threading.Thread(target=guard(produce, n)) for n in names]
    threads += [threading.Thread(target=guard(consume, n)) for n in names]
    threads.append(threading.Thread(target=guard(lambda _: churn(), "")))
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert not failures, failures
        for name in names:
            rest = current[name].get_many(100, timeout=0) if current[name].current_messages else []
            everything = received[name] + rest
            assert sorted(everything) == sorted(sent[name]), name  # nothing lost, none twice
            assert all(m.startswith(name.encode() + b":") for m in everything)  # none crossed
            assert len(sent[name]) > 100
    finally:
        for name, queue in current.items():
            queue.close()
            unlink_quietly(name)


# -- closing, unlinking, descriptors -------------------------------------------


def test_context_manager_closes(queue_name: str) -> None:
    with MessageQueue(queue_name) as queue:
        queue.put(b"x")
    assert queue.closed
    with pytest.raises(QueueClosedError, match="is closed"):
        queue.fileno()


def test_close_is_idempotent_and_every_use_then_fails(queue: MessageQueue) -> None:
    queue.close()
    queue.close()
    for call in (
        lambda: queue.put(b"x"),
        lambda: queue.put(b"x", timeout=1),
        lambda: queue.get(),
        lambda: queue.get(timeout=0),
        lambda: queue.put_many([b"x"]),
        lambda: queue.get_many(2),
        lambda: queue.current_messages,
        queue.fileno,
    ):
        with pytest.raises(QueueClosedError):
            call()
    assert isinstance(QueueClosedError("x"), MessageQueueError)


def test_closed_queue_never_touches_a_recycled_descriptor(make_queue: MakeQueue) -> None:
    first = make_queue()
    old_fd = first.fileno()
    first.close()
    second = make_queue()
    assert second.fileno() == old_fd  # the OS handed the number on
    with pytest.raises(QueueClosedError):
        first.put(b"intruder")
    with pytest.raises(QueueClosedError):
        first.get(timeout=0)
    assert second.current_messages == 0


def test_unlink_removes_the_name_but_the_object_keeps_working(make_queue: MakeQueue) -> None:
    queue = make_queue()
    queue.unlink()
    assert not queue_exists(queue.name)
    queue.put(b"still here")
    assert queue.get() == b"still here"
    with pytest.raises(QueueNotFoundError):
        unlink(queue.name)


def test_dropped_queue_releases_its_descriptor_with_a_resource_warning(queue_name: str) -> None:
    before = settled_open_fds()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        queue = MessageQueue(queue_name)
        assert open_fds() == before + 1  # the queue's descriptor
        with pytest.raises(TimedOutError):
            queue.get(timeout=0.001)
        assert open_fds() == before + 2  # and the wake descriptor, once a call has waited
        del queue
        gc.collect()
    assert open_fds() == before
    assert any(issubclass(w.category, ResourceWarning) for w in caught)


def test_no_descriptor_leak_over_many_cycles(queue_name: str) -> None:
    before = settled_open_fds()
    for i in range(10000):
        queue = MessageQueue(queue_name, max_messages=2, max_message_size=8)
        if i % 3 == 0:
            queue.close()
        elif i % 3 == 1:
            with queue:
                queue.put(b"x")
                queue.get()
        else:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", ResourceWarning)
                del queue
                if i % 300 == 2:  # PyPy closes a dropped object when it collects it:
                    gc.collect()  # keep within an ordinary user's 1024 descriptors
        with pytest.raises(QueueExistsError):
            MessageQueue(queue_name, exclusive=True)
        with pytest.raises(InvalidParametersError):
            MessageQueue("bad name")
    gc.collect()
    assert open_fds() == before


def eventfds() -> set[int]:
    """The eventfd descriptors this process has open."""
    found = set()
    for entry in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{entry}") == "anon_inode:[eventfd]":
                found.add(int(entry))
        except FileNotFoundError:  # the listing's own descriptor, closed since
            pass
    return found


def test_descriptors_are_non_blocking_and_close_on_exec(queue: MessageQueue) -> None:
    """The queue's descriptor never blocks (waits sleep in ppoll), and neither it
    nor the wake descriptor (an eventfd, made once a call waits) outlives exec."""
    before = eventfds()
    with pytest.raises(TimedOutError):
        queue.get(timeout=0.001)
    (wake,) = eventfds() - before
    for fd in (queue.fileno(), wake):
        assert fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_NONBLOCK
        assert fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC
    attr = ffi.new("struct mq_attr *")
    assert lib.mq_getattr(queue.fileno(), attr) == 0
    assert attr.mq_flags & lib.O_NONBLOCK
