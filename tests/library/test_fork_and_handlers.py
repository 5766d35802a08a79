"""Fork, signal handlers and event loops that stop: close() always returns
and releases every descriptor, whatever the other threads, tasks and loops
were doing. Real forks at random moments; more of them in `nox -s trials`."""

from __future__ import annotations

import asyncio
import concurrent.futures
import gc
import os
import random
import signal
import threading
import time
import traceback
from typing import Any, Callable, List

import pytest

from baseplate.message_queue import (
    MessageQueue,
    QueueClosedError,
    TimedOutError,
)
from helpers import (
    settled_open_fds,
    unique_name,
    unlink_quietly,
)

MakeQueue = Callable[..., MessageQueue]


def our_descriptors(names: List[str]) -> int:
    """Descriptors of this process that are one of ``names``' queues, or an eventfd."""
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target == "anon_inode:[eventfd]" or target.lstrip("/") in {n.lstrip("/") for n in names}:
            count += 1
    return count


class Busy:
    """Threads that use a few queue objects as hard as they can: notify() on
    and off, get() with a timeout, close() and a new object, and get_async()
    waiting on an event loop in a thread of its own."""

    def __init__(self, name: str, objects: int = 3) -> None:
        self.name = name
        self.objects = [MessageQueue(name, 4, 32) for _ in range(objects)]
        self.stop = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.threads = [
            threading.Thread(target=self._notifying, daemon=True),
            threading.Thread(target=self._getting, daemon=True),
            threading.Thread(target=self._closing, daemon=True),
            threading.Thread(target=self.loop.run_forever, daemon=True),
        ]
        self.waits: List[Any] = []
        for thread in self.threads:
            thread.start()
        for queue in self.objects:
            self._wait_on(queue)

    def _wait_on(self, queue: MessageQueue) -> None:
        self.waits.append(asyncio.run_coroutine_threadsafe(self._waiting(queue), self.loop))

    def pick(self) -> MessageQueue:
        return random.choice(self.objects)

    async def _waiting(self, queue: MessageQueue) -> None:
        try:
            await queue.get_async()
        except QueueClosedError:
            pass

    def _notifying(self) -> None:
        while not self.stop.is_set():
            try:
                self.pick().notify(lambda: None)
                self.pick().notify(None)
            except (QueueClosedError, OSError):  # closed meanwhile, or EBUSY
                pass

    def _getting(self) -> None:
        while not self.stop.is_set():
            try:
                self.pick().get(timeout=0.001)
            except (QueueClosedError, TimedOutError):
                pass

    def _closing(self) -> None:
        while not self.stop.is_set():
            time.sleep(0.002)
            index = random.randrange(len(self.objects))
            old, self.objects[index] = self.objects[index], MessageQueue(self.name, 4, 32)
            old.close()
            self._wait_on(self.objects[index])

    def finish(self) -> None:
        self.stop.set()
        for thread in self.threads[:3]:
            thread.join(10)
        for queue in self.objects:
            queue.close()
        concurrent.futures.wait(self.waits, timeout=10)  # each ends with its queue
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.threads[3].join(10)
        self.loop.close()


def close_the_unreachable() -> None:
    """Close the objects that only another thread held at the fork (one it
    was making, or replacing): nobody in the child can reach them but the
    garbage collector, which PyPy's frees. Whatever descriptor is left after
    that, the library left behind."""
    gc.collect()
    for found in gc.get_objects():
        if isinstance(found, MessageQueue):
            found.close()


def fork_while_busy(forks: int, seed: int) -> List[str]:
    """Fork ``forks`` times at random moments while Busy runs; in each child,
    close every object it can reach within a second (a watchdog alarm ends a child that
    hangs) and count what is left. Returns what went wrong, child by child."""
    rng = random.Random(seed)
    name = unique_name()
    busy = Busy(name)
    problems = []
    try:
        for number in range(forks):
            time.sleep(rng.uniform(0, 0.004))
            objects = list(busy.objects)
            pid = os.fork()
            if pid == 0:  # the child: only this thread came along
                signal.alarm(2)
                try:
                    started = time.monotonic()
                    for queue in objects + busy.objects:
                        queue.close()
                    took = time.monotonic() - started
                    left = our_descriptors([name])
                    if left:  # (slow: only then)
                        close_the_unreachable()
                        left = our_descriptors([name])
                    os._exit(0 if took < 1 and left == 0 else 10 + min(left, 50))
                except BaseException:
                    os._exit(99)
            _, status = os.waitpid(pid, 0)
            if status:
                how = (
                    f"killed by {signal.Signals(os.WTERMSIG(status)).name} (close hung)"
                    if os.WIFSIGNALED(status)
                    else f"{os.WEXITSTATUS(status) - 10} descriptors left"
                    if 10 <= os.WEXITSTATUS(status) < 99
                    else f"status {os.WEXITSTATUS(status)}"
                )
                problems.append(f"fork {number}: {how}")
    finally:
        busy.finish()
        unlink_quietly(name)
    return problems


def test_a_child_forked_at_any_moment_can_close_its_queues() -> None:
    assert fork_while_busy(forks=40, seed=7) == []


@pytest.mark.trials
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_trials_hundreds_of_forks_at_random_moments(seed: int) -> None:
    assert fork_while_busy(forks=150, seed=seed) == []


def test_the_parent_goes_on_after_the_forks(queue_name: str) -> None:
    """The child's close drops nothing of the parent's: not its event-loop
    registrations (a shared epoll), not its wake-ups."""
    queue = MessageQueue(queue_name, 4, 32)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        waiting = asyncio.run_coroutine_threadsafe(queue.get_async(timeout=10), loop)
        time.sleep(0.1)
        pid = os.fork()
        if pid == 0:
            signal.alarm(2)
            queue.close()
            os._exit(0 if our_descriptors([queue_name]) == 0 else 1)
        assert os.waitpid(pid, 0)[1] == 0
        queue.put(b"still here")
        assert waiting.result(timeout=5) == b"still here"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        queue.close()


# -- close() from a signal handler -------------------------------------------------

HANDLED = signal.SIGUSR1


def interrupted_calls(queue: MessageQueue) -> dict[str, Callable[[], Any]]:
    """Calls that a handler calling close() may interrupt anywhere."""
    buffer = bytearray(64)

    async def loop_wait() -> Any:
        return await queue.get_async(timeout=0.01)

    def notify_twice(how: Any) -> None:
        queue.notify(how)
        queue.notify(None)

    return {
        "notify": lambda: notify_twice(lambda: None),
        "notify signal": lambda: notify_twice(signal.SIGUSR2),
        "get": lambda: queue.get(timeout=0.01),
        "get_into": lambda: queue.get_into(buffer, timeout=0.01),
        "get_many": lambda: queue.get_many(4, timeout=0.01),
        "put": lambda: queue.put(b"x", timeout=0.01),
        "get_async": lambda: asyncio.run(loop_wait()),
        "attributes": lambda: (queue.current_messages, queue.mode, queue.fileno()),
    }


@pytest.mark.parametrize(
    "call",
    ["notify", "notify signal", "get", "get_into", "get_many", "put", "get_async", "attributes"],
)
def test_close_from_a_signal_handler_never_deadlocks(call: str) -> None:
    """A handler runs in the thread it interrupted, in the middle of its code:
    close() from it returns, whatever that code held, and leaves the object
    closed and consistent. Each trial runs in a child, which a watchdog
    alarm ends if it hangs."""
    close_from_handlers(call, trials=60)


@pytest.mark.trials
@pytest.mark.timeout(1200)
@pytest.mark.parametrize(
    "call",
    ["notify", "notify signal", "get", "get_into", "get_many", "put", "get_async", "attributes"],
)
def test_trials_close_from_a_signal_handler_never_deadlocks(call: str) -> None:
    close_from_handlers(call, trials=600)


def close_from_handlers(call: str, trials: int) -> None:
    """``trials`` times: a queue, ``call`` on it over and over, and a signal
    whose handler closes it at a random moment; in a child, with a watchdog."""
    signal.signal(signal.SIGUSR2, lambda *_: None)
    name = unique_name()
    pid = os.fork()
    if pid == 0:
        signal.alarm(20 + trials // 10)
        try:
            rng = random.Random(call)
            main = threading.get_ident()
            for _ in range(trials):
                queue = MessageQueue(name, 4, 64)
                # One message for the gets, unless one is left from a trial
                # whose handler ran before its first get (4 would fill it).
                if call.startswith("get") and queue.current_messages == 0:
                    queue.put(b"ready")
                signal.signal(HANDLED, lambda *_, q=queue: q.close())
                timer = threading.Timer(
                    rng.uniform(0, 0.003), signal.pthread_kill, args=(main, HANDLED)
                )
                timer.start()
                try:
                    for _ in range(50):
                        interrupted_calls(queue)[call]()
                except (QueueClosedError, TimedOutError):
                    pass
                timer.join()
                queue.close()
                assert queue.closed
                try:
                    queue.put(b"after")
                    os._exit(3)  # a closed object must refuse
                except QueueClosedError:
                    pass
            os._exit(0 if our_descriptors([name]) == 0 else 4)
        except BaseException:
            traceback.print_exc()  # to the test's stderr, which pytest shows
            os._exit(5)
    try:
        _, status = os.waitpid(pid, 0)
    finally:
        unlink_quietly(name)
    assert not os.WIFSIGNALED(status), "close() from the handler hung"
    assert os.WEXITSTATUS(status) == 0


# -- event loops that stop ---------------------------------------------------------


@pytest.mark.parametrize("how", ["stopped", "closed"])
def test_a_loop_that_will_not_run_again_keeps_no_descriptor(queue_name: str, how: str) -> None:
    """get_async() waiting on an empty queue, put_async() on a full one; the
    loop stops (or is closed) with both pending: close() releases at once."""
    before = settled_open_fds()
    other = unique_name()
    empty, full = MessageQueue(queue_name, 4, 32), MessageQueue(other, 1, 32)
    full.put(b"full")
    loop = asyncio.new_event_loop()
    tasks = [loop.create_task(empty.get_async()), loop.create_task(full.put_async(b"more"))]
    loop.run_until_complete(asyncio.sleep(0.05))  # both wait on the loop now
    assert not any(task.done() for task in tasks)
    if how == "closed":
        loop.close()
    empty.close()  # the loop does not run: its uses are given back at once
    full.close()
    if how == "stopped":
        for task in tasks:
            task.cancel()
        loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))
        loop.close()
    unlink_quietly(other)
    del empty, full, tasks
    assert settled_open_fds() <= before


# -- fork, and signal handlers around get_into ------------------------------------


def test_queue_opened_before_fork_works_in_the_child(queue: MessageQueue) -> None:
    queue.put(b"from parent")
    pid = os.fork()
    if pid == 0:
        try:
            ok = queue.get(timeout=5) == b"from parent"
            queue.put(b"from child")
            os._exit(0 if ok else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert queue.get(timeout=5) == b"from child"


def test_a_signal_handler_that_raises_interrupts_a_blocked_get_into(queue: MessageQueue) -> None:
    class Interrupted(Exception):
        pass

    def raise_interrupted(signum: int, frame: Any) -> None:
        raise Interrupted()

    buffer = bytearray(queue.max_message_size)
    previous = signal.signal(signal.SIGALRM, raise_interrupted)
    signal.setitimer(signal.ITIMER_REAL, 0.2)
    start = time.monotonic()
    try:
        with pytest.raises(Interrupted):
            queue.get_into(buffer)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    assert time.monotonic() - start < 3
    queue.put(b"not lost")
    assert queue.get_into(buffer, timeout=0) == (8, 0)


def test_a_signal_handler_that_returns_lets_get_into_go_on(queue: MessageQueue) -> None:
    calls: list[int] = []
    previous = signal.signal(signal.SIGALRM, lambda signum, frame: calls.append(signum))
    signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
    buffer = bytearray(queue.max_message_size)
    try:
        threading.Timer(0.3, queue.put, args=(b"after the storm",)).start()
        assert queue.get_into(buffer) == (15, 0)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0, 0)
        signal.signal(signal.SIGALRM, previous)
    assert len(calls) > 10
    assert buffer[:15] == b"after the storm"
