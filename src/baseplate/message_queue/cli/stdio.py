"""Standard streams: input that a signal can always interrupt, and output
that never blocks and knows exactly which lines went out (:class:`Output`).

This module reads and writes descriptors 0 and 1; it never touches a queue.
"""

from __future__ import annotations

import array
import fcntl
import itertools
import os
import select
import socket
import stat
import termios
import time
from collections import deque
from typing import TYPE_CHECKING, Callable, Deque, List, Optional

from baseplate.message_queue.cli.exits import EXIT_IO_ERROR, CommandFailed
from baseplate.message_queue.cli.signals import Stopping

if TYPE_CHECKING:  # pragma: no cover
    from baseplate.message_queue.message import Message

#: Output is written out once this much is waiting (or the queue is empty).
OUTPUT_BUFFER = 64 * 1024
#: Input is read in chunks of this size.
INPUT_CHUNK = 64 * 1024

#: Before sleeping while the reader catches up, yield the CPU to it this many times.
YIELDS_FOR_READER = 200


def check_stdio(fd: int, name: str) -> os.stat_result:
    """fstat() of standard input or output, or the error for a closed one.

    Checked before the queue is opened: a closed descriptor 0 or 1 would
    otherwise be reused by the queue's own."""
    try:
        return os.fstat(fd)
    except OSError:
        raise CommandFailed(f"standard {name} is closed", EXIT_IO_ERROR) from None


def _unread_bytes(fd: int, request: int) -> int:
    """What the reader has not read yet: FIONREAD (a pipe), TIOCOUTQ (a socket)."""
    count = array.array("i", [0])
    fcntl.ioctl(fd, request, count, True)
    return count[0]


class Output:
    """Standard output for ``read``: batched, never blocking, and bounded in loss.

    Messages taken from the queue wait in ``pending`` until written out
    whole. On a pipe or a socket, at most ``in_flight`` messages may be
    taken and not yet read by the reader (:meth:`room`), since those are
    lost if it quits; what it has read comes from FIONREAD (the bytes still
    in a pipe) or TIOCOUTQ (a socket's unread data). Writes never block: the
    output is reopened non-blocking where it is a pipe or terminal (a
    description of our own, so the shared one keeps its flags), sent with
    MSG_DONTWAIT on a socket, and otherwise retried after ``poll`` on
    EAGAIN. So a signal can always end a wait for the reader.
    """

    def __init__(
        self,
        fd: int,
        delimiter: bytes,
        in_flight: int,
        stopping: Stopping,
        encode: Optional[Callable[[Message], bytes]] = None,
    ) -> None:
        mode = check_stdio(fd, "output").st_mode
        self.fd = fd
        self.delimiter = delimiter
        self.encode = encode  # a message's line, terminator included; None: message + delimiter
        self.stopping = stopping
        self.pending: List[Message] = []
        self.pending_bytes = 0
        self.is_pipe = stat.S_ISFIFO(mode)
        self.is_socket = stat.S_ISSOCK(mode)
        self.limit = in_flight if self.is_pipe or self.is_socket else None
        self._unread_request = termios.FIONREAD if self.is_pipe else termios.TIOCOUTQ
        self.written = 0  # bytes written out in all
        self.read_by_reader = 0  # of which the reader has read at least this many
        self.unread_ends: Deque[int] = deque()  # where the unread messages' lines end
        self.write_fd = fd
        self.socket: Optional[socket.socket] = None
        if self.is_socket:
            self.socket = socket.socket(fileno=os.dup(fd))
        elif self.is_pipe or os.isatty(fd):
            try:
                self.write_fd = os.open(
                    f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
                )
            except OSError:  # no /proc, or the reader is gone already: write as is
                pass
        # The line being written: its bytes, and how far they have gone.
        self.chunk = memoryview(b"")
        self.chunk_ends: List[int] = []
        self.offset = 0

    def close(self) -> None:
        if self.write_fd != self.fd:
            os.close(self.write_fd)
        if self.socket is not None:
            self.socket.close()

    # -- bounded loss ---------------------------------------------------------

    def room(self) -> Optional[int]:
        """How many more messages may be taken now: None for any number."""
        if self.limit is None:
            return None
        return max(0, self.limit - len(self.pending) - self.in_flight())

    def in_flight(self) -> int:
        """Messages written out that the reader may not have read yet."""
        if self.unread_ends:
            unread = _unread_bytes(self.fd, self._unread_request)
            if self.is_pipe:
                self.read_by_reader = self.written - unread
            elif unread == 0:  # a socket counts buffers, not bytes: all or nothing
                self.read_by_reader = self.written
            while self.unread_ends and self.unread_ends[0] <= self.read_by_reader:
                self.unread_ends.popleft()
        return len(self.unread_ends)

    def wait_for_reader(self) -> None:
        """Flush, then wait until the reader has read enough to take more."""
        self.flush()
        pause, yields = 0.0, 0
        while self.room() == 0:
            self.stopping.check()
            if yields < YIELDS_FOR_READER:  # it is usually quick: let it run
                yields += 1
                os.sched_yield()
                continue
            ready = self.stopping.poll([(self.fd, 0)], pause)
            if ready.get(self.fd, 0) & (select.POLLERR | select.POLLHUP):
                raise BrokenPipeError()
            pause = min(0.02, pause * 2 or 0.001)

    # -- writing ----------------------------------------------------------------

    def add(self, messages: List[Message]) -> None:
        self.pending += messages
        self.pending_bytes += sum(map(len, messages)) + len(messages)
        if self.pending_bytes >= OUTPUT_BUFFER:
            self.flush()

    def check_reader(self) -> None:
        """Raise BrokenPipeError if the reader of a pipe or socket went away."""
        if self.stopping.poll([(self.fd, 0)], 0).get(self.fd, 0) & (
            select.POLLERR | select.POLLHUP
        ):
            raise BrokenPipeError()

    def flush(self, budget: Optional[float] = None, signals: int = 0) -> None:
        """Write every pending message out. With ``budget`` (after a signal),
        give up after that many seconds, or once more than ``signals`` signals
        came; the messages not written out whole stay in ``pending``, to be
        put back."""
        if not self.chunk and self.pending:
            self._prepare_chunk()
        give_up = None if budget is None else time.monotonic() + budget
        while self.offset < len(self.chunk):
            if give_up is None:
                self.stopping.check()
            elif time.monotonic() >= give_up or self.stopping.count > signals:
                return
            written = self._write(self.chunk[self.offset :])
            if written:
                self.offset += written
                self._account()
                continue
            wait = None if give_up is None else max(0.0, give_up - time.monotonic())
            ready = self.stopping.poll([(self.fd, select.POLLOUT)], wait)
            if ready.get(self.fd, 0) & select.POLLERR:
                raise BrokenPipeError()
        self.chunk, self.chunk_ends, self.offset = memoryview(b""), [], 0

    def _prepare_chunk(self) -> None:
        """The pending messages' lines, back to back, and where each ends."""
        if self.encode is None:
            lengths = [len(message) + 1 for message in self.pending]
            data = self.delimiter.join(self.pending) + self.delimiter
        else:
            lines = [self.encode(message) for message in self.pending]
            lengths = [len(line) for line in lines]
            data = b"".join(lines)
        self.chunk_ends = list(itertools.accumulate(lengths))
        self.chunk, self.offset = memoryview(data), 0

    def _write(self, data: memoryview) -> int:
        """Write what fits without blocking: the count, 0 when full."""
        try:
            if self.socket is not None:
                return self.socket.send(data, socket.MSG_DONTWAIT)
            return os.write(self.write_fd, data)
        except BlockingIOError:
            return 0
        except (BrokenPipeError, ConnectionResetError):
            raise BrokenPipeError() from None
        except OSError as error:
            raise CommandFailed(
                f"cannot write to standard output: {error.strerror}; the messages not "
                "written out were put back on the queue",
                EXIT_IO_ERROR,
            ) from None

    def _lines_done(self) -> int:
        """How many of the chunk's lines have been written out whole."""
        done = 0
        while done < len(self.chunk_ends) and self.chunk_ends[done] <= self.offset:
            done += 1
        return done

    def _account(self) -> None:
        """Lines written whole: their messages leave ``pending``."""
        done = self._lines_done()
        if not done:
            return
        base = self.written
        if self.limit is not None:
            self.unread_ends.extend(base + end for end in self.chunk_ends[:done])
        written = self.chunk_ends[done - 1]
        self.written += written
        self.pending_bytes -= sum(len(message) + 1 for message in self.pending[:done])
        del self.pending[:done]
        self.chunk_ends = [end - written for end in self.chunk_ends[done:]]
        self.chunk = self.chunk[written:]
        self.offset -= written

    def unwritten(self) -> List[Message]:
        """Messages taken but not written out whole (a partly written line's included)."""
        return list(self.pending)


class Input:
    """Standard input for ``write``: reads that a signal can always end."""

    def __init__(self, fd: int, stopping: Stopping) -> None:
        check_stdio(fd, "input")
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
                raise CommandFailed(
                    f"cannot read standard input: {error.strerror}", EXIT_IO_ERROR
                ) from None
