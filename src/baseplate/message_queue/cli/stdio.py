"""Standard streams: the one place where the command line meets descriptors 0, 1 and 2.

:func:`claim` runs at start, before anything opens a descriptor: a closed
standard stream gets ``/dev/null`` to hold its number (else the queue's own
descriptor would take it), and is remembered as closed. Then ``sys.stdout``
and ``sys.stderr`` become :class:`TextStream` objects, which every command's
output goes through (click's ``--help`` and ``--version`` included):

- standard output raises :class:`StreamFailed` when it is closed (74), when
  it fails (a full disk, 74) or when its reader went away (141), in words;
- standard error never raises: what cannot be said there is dropped, and
  the exit status stays what it was.

``read``'s own paced, non-blocking output is :mod:`.output`; :class:`Input`
is ``write``'s and ``load``'s input. Nothing here touches a queue.
"""

from __future__ import annotations

import errno
import io
import os
import select
import sys
from typing import Optional

from baseplate.message_queue.cli.signals import Stopping

#: The status of a standard stream that is closed or fails (EX_IOERR).
EXIT_IO_ERROR = 74
#: The status when the reader of standard output went away (128 + SIGPIPE).
EXIT_BROKEN_PIPE = 141
#: Input is read in chunks of this size.
INPUT_CHUNK = 64 * 1024

_NAMES = {0: "input", 1: "output", 2: "error"}
# The standard streams that were closed when the command started.
_closed: set[int] = set()


class StreamFailed(Exception):
    """A standard stream is closed or failed: the command ends with ``status``
    (and says ``message`` on stderr, unless it is None: a reader that went
    away needs no words)."""

    def __init__(self, status: int, message: Optional[str]) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def claim() -> None:
    """Hold the numbers of closed standard streams, and route output through
    :class:`TextStream`. Run at start, before any descriptor is opened."""
    # Python gives None for a stream that was closed when it started; by now
    # its number may hold another file (the script Python is running).
    at_start = (sys.__stdin__, sys.__stdout__, sys.__stderr__)
    for fd in (0, 1, 2):
        if at_start[fd] is None:
            _closed.add(fd)
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        _closed.add(fd)
        try:
            holder = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue  # no descriptor left: require() still reports it closed
        if holder != fd:  # cannot happen: open() takes the lowest free number
            os.dup2(holder, fd, inheritable=False)
            os.close(holder)
    sys.stdout = TextStream(1)
    sys.stderr = TextStream(2)


def is_closed(fd: int) -> bool:
    """Whether standard stream ``fd`` was closed when the command started."""
    return fd in _closed


def require(fd: int) -> None:
    """Fail (74) unless standard stream ``fd`` was open at start: checked
    before the command does anything that cannot be undone."""
    if fd in _closed:
        raise StreamFailed(EXIT_IO_ERROR, f"standard {_NAMES[fd]} is closed")


def failure(fd: int, error: OSError, outcome: str = "") -> StreamFailed:
    """The :class:`StreamFailed` for ``error`` on standard stream ``fd``, with
    ``outcome`` (what became of the work, if anything) in its words."""
    if error.errno in (errno.EPIPE, errno.ECONNRESET) and fd == 1:
        return StreamFailed(EXIT_BROKEN_PIPE, None)
    verb = "read" if fd == 0 else "write to"
    return StreamFailed(
        EXIT_IO_ERROR, f"cannot {verb} standard {_NAMES[fd]}: {error.strerror}{outcome}"
    )


def write_all(fd: int, data: bytes) -> None:
    """Write ``data`` to ``fd`` whole, waiting for room if it is non-blocking."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [])  # a parent made it non-blocking


class TextStream(io.TextIOBase):
    """``sys.stdout`` or ``sys.stderr`` for the command line: unbuffered, UTF-8
    (what cannot be encoded shown escaped), with the failures described in
    :mod:`this module's docstring <baseplate.message_queue.cli.stdio>`."""

    encoding = "utf-8"
    errors = "backslashreplace"

    def __init__(self, fd: int) -> None:
        super().__init__()
        self.fd = fd

    def write(self, text: str) -> int:
        if not isinstance(text, str):
            raise TypeError(f"write() takes str, not {type(text).__name__}")
        if self.fd in _closed:
            if self.fd == 2:
                return len(text)
            raise StreamFailed(EXIT_IO_ERROR, f"standard {_NAMES[self.fd]} is closed")
        try:
            write_all(self.fd, text.encode("utf-8", "backslashreplace"))
        except OSError as error:
            if self.fd == 2:
                return len(text)  # what cannot be said on stderr is dropped
            raise failure(self.fd, error) from None
        return len(text)

    def flush(self) -> None:
        pass  # nothing is buffered

    def fileno(self) -> int:
        return self.fd

    def isatty(self) -> bool:
        return self.fd not in _closed and os.isatty(self.fd)

    def writable(self) -> bool:
        return True


class Input:
    """Standard input for ``write`` and ``load``: reads that a signal can always end."""

    def __init__(self, fd: int, stopping: Stopping) -> None:
        require(fd)
        self.fd = fd
        self.stopping = stopping

    def read(self, size: int) -> bytes:
        while True:
            self.stopping.check()
            self.stopping.poll([(self.fd, select.POLLIN)], None)
            self.stopping.check()
            try:
                return os.read(self.fd, size)
            except BlockingIOError:
                continue  # a parent made it non-blocking: wait again
            except OSError as error:
                raise failure(0, error) from None
