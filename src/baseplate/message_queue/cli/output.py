"""``read``'s (and ``dump``'s) standard output: batched, never blocking, and
bounded in loss where the bound can be enforced.

Messages taken from the queue wait in ``pending`` until written out whole.
A write never blocks, so that a signal always ends a wait for the reader
within the few seconds the docs promise, whatever standard output is:

- a socket is written with ``MSG_DONTWAIT``;
- a pipe or terminal is reopened non-blocking (a description of our own, so
  the shared one keeps its flags); where that is refused (a pipe of another
  user, no ``/proc``, no descriptor left), each write waits in ``poll`` for
  room, then writes at most ``PIPE_BUF`` bytes, which room takes whole;
- anything else (a file, ``/dev/null``) is written as is, after ``poll`` if
  a parent made it non-blocking.

On a pipe or a Unix socket, at most ``in_flight`` messages may be taken and
not yet read by the reader, since those are lost if it quits: what it has
read comes from FIONREAD (the bytes still in a pipe) or TIOCOUTQ (a Unix
socket's unread data). On a TCP socket (or another kind) the sender cannot
learn what the peer's application has read: TIOCOUTQ counts what the peer's
kernel has not acknowledged. There no bound is claimed, and stderr says so
once. This module writes descriptor 1; it never touches a queue.
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

from baseplate.message_queue.cli.signals import Stopping
from baseplate.message_queue.cli.stdio import failure, require
from baseplate.message_queue.cli.words import note

if TYPE_CHECKING:  # pragma: no cover
    from baseplate.message_queue.message import Message

#: Output is written out once this much is waiting (or the queue is empty).
OUTPUT_BUFFER = 64 * 1024
#: Before sleeping while the reader catches up, yield the CPU to it this many times.
YIELDS_FOR_READER = 200
#: What a pipe takes whole once poll() says it has room (POSIX's PIPE_BUF).
PIPE_BUF: int = getattr(select, "PIPE_BUF", 4096)

UNBOUNDED_NOTICE = (
    "standard output is {kind}: baseplate-mq cannot learn what the reader there has "
    "read, so if it quits, the messages still in transit are lost (at most what the "
    "sockets' buffers hold); --in-flight bounds that only on a pipe or a Unix socket"
)


class Output:
    """Standard output for ``read``, as this module's docstring says."""

    def __init__(
        self,
        fd: int,
        delimiter: bytes,
        in_flight: int,
        stopping: Stopping,
        encode: Optional[Callable[[Message], bytes]] = None,
    ) -> None:
        require(fd)
        self.fd = fd
        self.delimiter = delimiter
        self.encode = encode  # a message's line, terminator included; None: message + delimiter
        self.stopping = stopping
        self.pending: List[Message] = []
        self.pending_bytes = 0
        self.lines_written = 0  # messages written out whole, in all
        self.written = 0  # bytes written out in all
        self.read_by_reader = 0  # of which the reader has read at least this many
        self.unread_ends: Deque[int] = deque()  # where the unread messages' lines end
        self.write_fd = fd
        self.careful = False  # writes wait for room, then take at most PIPE_BUF
        self.socket: Optional[socket.socket] = None
        self.limit: Optional[int] = None  # the bound on unread messages, where enforced
        mode = os.fstat(fd).st_mode
        self._unread_request = termios.FIONREAD
        if stat.S_ISSOCK(mode):
            self.socket = socket.socket(fileno=fd)  # no dup: detached, not closed, at the end
            if self.socket.family == socket.AF_UNIX and self.socket.type == socket.SOCK_STREAM:
                self.limit, self._unread_request = in_flight, termios.TIOCOUTQ
            else:
                kind = "a TCP socket" if self.socket.type == socket.SOCK_STREAM else "a socket"
                note(UNBOUNDED_NOTICE.format(kind=kind))
        elif stat.S_ISFIFO(mode) or os.isatty(fd):
            if stat.S_ISFIFO(mode):
                self.limit = in_flight
            try:
                self.write_fd = os.open(
                    f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC
                )
            except OSError:  # another user's pipe, no /proc, no descriptor left...
                self.careful = True
        # The line being written: its bytes, and how far they have gone.
        self.chunk = memoryview(b"")
        self.chunk_ends: List[int] = []
        self.offset = 0

    def close(self) -> None:
        if self.write_fd != self.fd:
            os.close(self.write_fd)
        if self.socket is not None:
            self.socket.detach()

    # -- bounded loss ---------------------------------------------------------

    def room(self) -> Optional[int]:
        """How many more messages may be taken now: None for any number."""
        if self.limit is None:
            return None
        return max(0, self.limit - len(self.pending) - self.in_flight())

    def in_flight(self) -> int:
        """Messages written out that the reader may not have read yet."""
        if self.unread_ends:
            unread = self._unread_bytes()
            if self.socket is None:
                self.read_by_reader = self.written - unread
            elif unread == 0:  # a socket counts buffers, not bytes: all or nothing
                self.read_by_reader = self.written
            while self.unread_ends and self.unread_ends[0] <= self.read_by_reader:
                self.unread_ends.popleft()
        return len(self.unread_ends)

    def _unread_bytes(self) -> int:
        """What the reader has not read yet (all of it, if that cannot be asked)."""
        count = array.array("i", [0])
        try:
            fcntl.ioctl(self.fd, self._unread_request, count, True)
        except OSError:
            return self.written
        return count[0]

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
            self.check_reader(pause)
            pause = min(0.02, pause * 2 or 0.001)

    # -- writing ----------------------------------------------------------------

    def add(self, messages: List[Message]) -> None:
        self.pending += messages
        self.pending_bytes += sum(map(len, messages)) + len(messages)
        if self.pending_bytes >= OUTPUT_BUFFER:
            self.flush()

    def check_reader(self, wait: float = 0) -> None:
        """Raise :class:`StreamFailed` (141) if the reader of a pipe or socket
        went away, waiting up to ``wait`` seconds for it to go."""
        if self.stopping.poll([(self.fd, 0)], wait).get(self.fd, 0) & (
            select.POLLERR | select.POLLHUP
        ):
            raise failure(1, BrokenPipeError(32, "Broken pipe"))

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
                raise failure(1, BrokenPipeError(32, "Broken pipe"))
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
            if self.careful:
                if not self.stopping.poll([(self.fd, select.POLLOUT)], 0):
                    return 0
                data = data[:PIPE_BUF]
            return os.write(self.write_fd, data)
        except BlockingIOError:
            return 0
        except OSError as error:
            raise failure(1, error) from None

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
        self.lines_written += done
        self.pending_bytes -= sum(len(message) + 1 for message in self.pending[:done])
        del self.pending[:done]
        self.chunk_ends = [end - written for end in self.chunk_ends[done:]]
        self.chunk = self.chunk[written:]
        self.offset -= written
