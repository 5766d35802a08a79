"""A replica of the posix_ipc-based ``baseplate.message_queue`` we replace, as a baseline.

It behaves as the module services ran before (baseplate's later releases,
and ``baseplate.lib.message_queue``): the posix_ipc queue is non-blocking,
and every call goes through a retry policy with a time budget, a policy
object and a generator per call, which yields the time left; the call
tries, and when the queue is not ready waits in ``select.select`` for that
long (so that gevent could patch the wait), then tries again. Used by the
benchmark harness only.
"""

from __future__ import annotations

import select
import time
from typing import Iterator, Optional, Union

import posix_ipc


class TimedOutError(Exception):
    """The queue stayed empty (or full) for the whole timeout."""


class _Forever:
    """Attempts without end, none with a time limit."""

    def __iter__(self) -> Iterator[Optional[float]]:
        while True:
            yield None


class _TimeBudget:
    """Attempts while the budget lasts, each told the seconds left."""

    def __init__(self, attempts: _Forever, budget: float) -> None:
        self.attempts = attempts
        self.budget = budget

    def __iter__(self) -> Iterator[Optional[float]]:
        began = time.time()
        yield self.budget
        for _ in self.attempts:
            left = self.budget - (time.time() - began)
            if left <= 0:
                break
            yield left


def _attempts(budget: Optional[float]) -> Union[_Forever, _TimeBudget]:
    """The retry policy of one call, as the old module built it."""
    policy = _Forever()
    return policy if budget is None else _TimeBudget(policy, budget)


class LegacyMessageQueue:
    """``MessageQueue(name, max_messages, max_message_size)`` with ``get``/``put``."""

    def __init__(self, name: str, max_messages: int, max_message_size: int) -> None:
        self.queue = posix_ipc.MessageQueue(
            name,
            flags=posix_ipc.O_CREAT,
            mode=0o644,
            max_messages=max_messages,
            max_message_size=max_message_size,
        )
        self.queue.block = False

    def get(self, timeout: Optional[float] = None) -> bytes:
        for left in _attempts(timeout):
            try:
                message, _priority = self.queue.receive()
                return message  # type: ignore[no-any-return]
            except posix_ipc.SignalError:
                continue
            except posix_ipc.BusyError:
                select.select([self.queue.mqd], [], [], left)
        raise TimedOutError()

    def put(self, message: bytes, timeout: Optional[float] = None) -> None:
        for left in _attempts(timeout):
            try:
                self.queue.send(message)
                return
            except posix_ipc.SignalError:
                continue
            except posix_ipc.BusyError:
                select.select([], [self.queue.mqd], [], left)
        raise TimedOutError()

    def unlink(self) -> None:
        self.queue.unlink()

    def close(self) -> None:
        self.queue.close()
