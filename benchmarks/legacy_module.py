"""A replica of the posix_ipc-based ``baseplate.message_queue`` we replace, as a baseline.

It behaves as that module did: the posix_ipc queue is non-blocking, each
call tries once and, when the queue is not ready, waits in ``select.select``
for what is left of its timeout (so that gevent could patch the wait), then
tries again. Used by the benchmark harness only.
"""

from __future__ import annotations

import select
import time
from typing import Optional

import posix_ipc


class TimedOutError(Exception):
    """The queue stayed empty (or full) for the whole timeout."""


class _TimeLeft:
    """What remains of one call's timeout over several waits (None: no limit)."""

    def __init__(self, timeout: Optional[float]) -> None:
        self.remaining = timeout

    def wait(self, readable: list[int], writable: list[int]) -> None:
        if self.remaining is not None and self.remaining <= 0:
            raise TimedOutError()
        began = time.time()
        select.select(readable, writable, [], self.remaining)
        if self.remaining is not None:
            self.remaining -= time.time() - began


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
        time_left = _TimeLeft(timeout)
        while True:
            try:
                message, _priority = self.queue.receive()
                return message  # type: ignore[no-any-return]
            except posix_ipc.SignalError:
                continue
            except posix_ipc.BusyError:
                time_left.wait([self.queue.mqd], [])

    def put(self, message: bytes, timeout: Optional[float] = None) -> None:
        time_left = _TimeLeft(timeout)
        while True:
            try:
                self.queue.send(message)
                return
            except posix_ipc.SignalError:
                continue
            except posix_ipc.BusyError:
                time_left.wait([], [self.queue.mqd])

    def unlink(self) -> None:
        self.queue.unlink()

    def close(self) -> None:
        self.queue.close()
