"""Signals: how a command stops when told to.

Outside ``read``, ``write``, ``dump`` and ``load``, SIGTERM raises
:class:`Terminated` (SIGINT raises :class:`KeyboardInterrupt`, Python's
way). Inside them, :class:`Stopping` only notes the signal, and the loops
stop where nothing taken from the queue can be lost (:class:`Stopped`).
"""

from __future__ import annotations

import math
import os
import select
import signal
from typing import Any, Dict, List, Optional


class Terminated(BaseException):
    """Raised by our SIGTERM handler outside read/write, so that clean-up runs."""


class Stopped(BaseException):
    """Raised where read/write can stop safely after SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


class Stopping:
    """SIGINT and SIGTERM while read/write may hold messages.

    The handlers only note the signal (and, through :func:`signal.set_wakeup_fd`,
    wake any ``poll``); the loops call :meth:`check` where stopping loses
    nothing. Raising from a handler would not be safe: it runs between any
    two bytecodes, for instance after the library returned a batch of
    messages and before the caller had it.
    """

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self.count = 0
        self._wake_read = self._wake_write = -1
        self._previous: Dict[int, Any] = {}
        self._previous_wakeup = -1

    def __enter__(self) -> Stopping:
        self._wake_read, self._wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        self._previous_wakeup = signal.set_wakeup_fd(self._wake_write, warn_on_full_buffer=False)
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._note)
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(self._previous_wakeup)
        os.close(self._wake_read)
        os.close(self._wake_write)

    def _note(self, signum: int, frame: Any) -> None:
        self.count += 1
        if self.signum is None:
            self.signum = signum

    def check(self) -> None:
        """Stop here, if a signal came."""
        if self.signum is not None:
            raise Stopped(self.signum)

    def poll(self, watched: List[tuple[int, int]], timeout: Optional[float]) -> Dict[int, int]:
        """Wait for ``(fd, events)`` (events 0: only errors and hang-ups), a
        signal, or ``timeout`` seconds; return the events of the ready fds."""
        poller = select.poll()
        for fd, events in watched:
            poller.register(fd, events)
        poller.register(self._wake_read, select.POLLIN)
        ready = dict(poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000))))
        if ready.pop(self._wake_read, 0):
            try:
                while os.read(self._wake_read, 64):
                    pass
            except BlockingIOError:
                pass
        return ready
