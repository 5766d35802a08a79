"""Signals: the one place where the command line is told to stop.

:func:`install` runs first, before click is imported, and catches every
signal whose default action ends the process (or dumps core): SIGHUP,
SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2, SIGALRM, SIGVTALRM, SIGPROF,
SIGXCPU, SIGPWR, SIGIO, SIGSTKFLT and the real-time signals; not the
synchronous faults (SIGSEGV...), which Python's own code must see, nor
SIGKILL and SIGSTOP, which no process can catch. A signal that was ignored
when the command started stays ignored (``nohup``, ``&`` in a script), and
so do SIGPIPE and SIGXFSZ, which Python ignores so that a closed pipe or a
file too large is an error to report.

Most of the time a signal ends the command at once, as its default action
would (:func:`die`): by that signal itself, so that a shell sees 128+N and
a shell loop around the command stops on Ctrl-C; or, for the signals whose
default would dump core (SIGQUIT...), with status 128+N and no core. While
``read``, ``write``, ``dump`` and ``load`` hold messages, :class:`Stopping`
defers that: the signal is only noted (and wakes any ``poll``), and the
loops stop where nothing taken from the queue can be lost, by raising
:class:`Stopped`; the runner ends the process with it after the clean-up.
So that they see a signal soon, their waits last :data:`WAIT_SLICE` at most
(:func:`wait_slice`).

It touches the process's signal dispositions and its wake-up descriptor,
and ends the process (:func:`die`); it reads no stream and no queue.
"""

from __future__ import annotations

import functools
import math
import os
import select
import signal
import time
from typing import Any, Dict, List, NoReturn, Optional, Tuple

# Signals whose default action is to end the process, by name (some do not
# exist everywhere); the real-time signals are added below.
_ENDING = (
    "SIGINT",  # first: Python's own handler would raise KeyboardInterrupt
    "SIGTERM",
    "SIGHUP",
    "SIGQUIT",
    "SIGUSR1",
    "SIGUSR2",
    "SIGALRM",
    "SIGVTALRM",
    "SIGPROF",
    "SIGXCPU",
    "SIGPWR",
    "SIGIO",
    "SIGSTKFLT",
)
# Of those, the ones whose default action also dumps core: they end with
# status 128+N instead, and no core.
_DUMPING = ("SIGQUIT", "SIGXCPU")


@functools.cache
def ending_signals() -> Tuple[int, ...]:
    """Every signal :func:`install` catches (unless ignored at start).
    Worked out once: it runs before every command, ``--help`` included."""
    valid = {int(number) for number in signal.valid_signals()}
    found = [int(getattr(signal, name)) for name in _ENDING if hasattr(signal, name)]
    if 16 not in found and 16 in valid:
        found.append(16)  # SIGSTKFLT, which some Pythons do not name
    realtime = range(getattr(signal, "SIGRTMIN", 34), getattr(signal, "SIGRTMAX", 64) + 1)
    found += [number for number in realtime if number in valid]
    return tuple(found)


def signal_name(signum: int) -> str:
    """SIGTERM, or SIGRTMIN+3 for a real-time signal Python does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"SIGRTMIN+{signum - signal.SIGRTMIN}"


_CORE = frozenset(int(getattr(signal, name)) for name in _DUMPING if hasattr(signal, name))


class Stopped(BaseException):
    """Raised where read/write can stop safely after a signal."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class _Noted:
    """What the handler has seen, and whether it must only note it."""

    deferred = False
    signum: Optional[int] = None
    count = 0
    wake_read = -1  # the read end of the wake-up pipe (signal.set_wakeup_fd)


_noted = _Noted()


def ignored_at_start() -> frozenset[int]:
    """The signals this process ignores: as Python says, and as the kernel
    says (PyPy reports SIG_DFL for a signal ignored before it started)."""
    ignored = set()
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("SigIgn:"):
                    mask = int(line.split()[1], 16)
                    ignored = {n for n in range(1, 65) if mask & (1 << (n - 1))}
    except (OSError, ValueError):  # no /proc: Python's word alone
        pass
    for signum in ending_signals():
        try:
            if signal.getsignal(signum) == signal.SIG_IGN:
                ignored.add(signum)
        except ValueError:
            continue
    return frozenset(ignored)


def install() -> None:
    """Catch every ending signal that is not ignored; run first."""
    ignored = ignored_at_start()
    for signum in ending_signals():
        if signum in ignored:
            continue
        try:
            signal.signal(signum, _on_signal)
        except (OSError, ValueError):  # reserved by the C library, or not in this thread
            continue
    try:
        _noted.wake_read, wake_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_write, warn_on_full_buffer=False)
    except OSError:  # no descriptor left: polls look again every WAKE_FALLBACK
        _noted.wake_read = -1


def _on_signal(signum: int, frame: Any) -> None:
    if not _noted.deferred:
        die(signum)
    _noted.count += 1
    if _noted.signum is None:
        _noted.signum = signum


def die(signum: int) -> NoReturn:
    """End the process as signal ``signum`` would, but without a core dump:
    a shell sees 128+N either way."""
    if signum not in _CORE:
        try:
            signal.signal(signum, signal.SIG_DFL)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
            os.kill(os.getpid(), signum)
        except (OSError, ValueError):
            pass
    os._exit(128 + signum)


# Without a wake-up pipe, a poll that waits for a signal looks again this often.
WAKE_FALLBACK = 0.05


class Stopping:
    """While read/write may hold messages: signals are noted, not acted on.

    The loops call :meth:`check` where stopping loses nothing, and wait with
    :meth:`poll`, which a signal ends. Raising from a handler would not be
    safe: it runs between any two bytecodes, for instance after the library
    returned a batch of messages and before the caller had it.
    """

    def __enter__(self) -> Stopping:
        _noted.deferred = True
        return self

    def __exit__(self, *exc_info: Any) -> None:
        _noted.deferred = False
        if _noted.signum is not None and exc_info[0] is None:
            raise Stopped(_noted.signum)  # it came at the very end: still say so

    @property
    def signum(self) -> Optional[int]:
        """The first signal noted, if any."""
        return _noted.signum

    @property
    def count(self) -> int:
        """How many signals were noted."""
        return _noted.count

    def check(self) -> None:
        """Stop here, if a signal came."""
        if _noted.signum is not None:
            raise Stopped(_noted.signum)

    def poll(self, watched: List[tuple[int, int]], timeout: Optional[float]) -> Dict[int, int]:
        """Wait for ``(fd, events)`` (events 0: only errors and hang-ups), a
        signal, or ``timeout`` seconds; return the events of the ready fds."""
        poller = select.poll()
        for fd, events in watched:
            poller.register(fd, events)
        wake = _noted.wake_read
        if wake >= 0:
            poller.register(wake, select.POLLIN)
        elif timeout is None or timeout > WAKE_FALLBACK:
            timeout = WAKE_FALLBACK
        ready = dict(poller.poll(None if timeout is None else max(0, math.ceil(timeout * 1000))))
        if wake >= 0 and ready.pop(wake, 0):
            try:
                while os.read(wake, 64):
                    pass
            except BlockingIOError:
                pass
        return ready


#: While waiting for messages or room, how often (in seconds) read, write,
#: dump and load look whether a signal came or their reader went away.
WAIT_SLICE = 0.05


def wait_slice(since: Optional[float], budget: Optional[float]) -> float:
    """How long the next wait may last: WAIT_SLICE at most, and what is left of
    ``budget`` seconds counted from ``since`` (0 once it is spent)."""
    if budget is None:
        return WAIT_SLICE
    spent = 0.0 if since is None else time.monotonic() - since
    return max(0.0, min(WAIT_SLICE, budget - spent))
