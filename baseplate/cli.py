"""The ``baseplate-mq`` command line: a thin click shell over :mod:`baseplate.message_queue`.

Also reachable as ``python -m baseplate.cli``, and in the seed's older form
``python -m baseplate.message_queue --read|--write|--create QUEUE``.

Exit codes (:data:`EXIT_CODES`): 0 success; 1 a failure, said on stderr in a
line or two; 2 a usage error such as a bad queue name; 3 ``read --count N``
got fewer than N messages before its timeout; 74 standard input or output
failed (closed, full device...); 130 on SIGINT (Ctrl-C); 141 when the reader
of our output went away; 143 on SIGTERM. No Python traceback is ever shown.

``read`` and ``write`` never lose a message to a signal: SIGINT and SIGTERM
only mark that the command must stop (:class:`_Stopping`), and it stops where
every message taken from the queue has been written out whole, or put back.
Their waits for standard input and for room in standard output are ``poll``
calls that a signal ends; the library waits for the queue (a short spin,
then the kernel) WAIT_SLICE seconds at a time, so a signal is seen within
that.

The library is imported only by the commands that use it, so ``--help``
starts fast.
"""

from __future__ import annotations

import array
import base64
import fcntl
import functools
import grp
import itertools
import json
import math
import os
import pwd
import re
import select
import signal
import socket
import stat
import sys
import termios
import time
from collections import deque
from typing import TYPE_CHECKING, Any, Callable, Deque, Dict, List, Optional, TypeVar

import click

if TYPE_CHECKING:  # pragma: no cover
    from baseplate.message_queue import Message, MessageQueue

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SHORT_READ = 3
EXIT_IO_ERROR = 74  # EX_IOERR of sysexits.h
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
EXIT_TERMINATED = 128 + signal.SIGTERM

#: What each exit status means (the docs show this table).
EXIT_CODES: Dict[int, str] = {
    0: "success",
    EXIT_FAILURE: "a failure, said on stderr",
    EXIT_USAGE: "a usage error: a bad option, value or queue name",
    EXIT_SHORT_READ: "read --count N got fewer than N messages before its --timeout",
    EXIT_IO_ERROR: "standard input or output is closed or failed (a full device...)",
    EXIT_INTERRUPTED: "stopped by SIGINT (Ctrl-C)",
    EXIT_BROKEN_PIPE: "the reader of the output went away",
    EXIT_TERMINATED: "stopped by SIGTERM",
}

#: Most messages taken from the queue per call while reading.
READ_BATCH = 1024
#: Output is written out once this much is waiting (or the queue is empty).
OUTPUT_BUFFER = 64 * 1024
#: Input is read in chunks of this size.
INPUT_CHUNK = 64 * 1024
#: While waiting for messages or room, how often (in seconds) read and write
#: look whether a signal came or their reader went away.
WAIT_SLICE = 0.05
#: Before sleeping while the reader catches up, yield the CPU to it this many times.
YIELDS_FOR_READER = 200
#: By default, on a pipe or socket, how many messages may be taken from the
#: queue and not yet read by the reader: all that can be lost if it quits.
DEFAULT_IN_FLIGHT = 1
#: After a signal or an output error, putting messages back waits this long in all.
PUT_BACK_BUDGET = 3.0
#: After a signal, how long the messages in hand may take to be written out.
FINISH_BUDGET = 2.0
#: How long ``write`` waits for room before saying (on a terminal) that the queue is full.
FULL_NOTICE_AFTER = 1.0

F = TypeVar("F", bound=Callable[..., Any])


class Terminated(BaseException):
    """Raised by our SIGTERM handler outside read/write, so that clean-up runs."""


class CommandFailed(Exception):
    """A failure to report on stderr, with its exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


class _Stopped(BaseException):
    """Raised where read/write can stop safely after SIGINT or SIGTERM."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _fail(message: str) -> None:
    click.echo(f"baseplate-mq: error: {message}", err=True)


def _note(message: str) -> None:
    click.echo(f"baseplate-mq: {message}", err=True)


def _reports_errors(command: F) -> F:
    """Turn what goes wrong inside a command into a message and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from baseplate.message_queue import MessageQueueError

        try:
            return command(*args, **kwargs)
        except MessageQueueError as error:
            _fail(_cli_words(error, click.get_current_context()))
            sys.exit(EXIT_FAILURE)
        except CommandFailed as error:
            _fail(str(error))
            sys.exit(error.status)
        except BrokenPipeError:
            _silence_stdout()
            sys.exit(EXIT_BROKEN_PIPE)
        except _Stopped as stop:
            sys.exit(128 + stop.signum)
        except KeyboardInterrupt:
            sys.exit(EXIT_INTERRUPTED)
        except Terminated:
            sys.exit(EXIT_TERMINATED)

    return wrapper  # type: ignore[return-value]


def _silence_stdout() -> None:
    """After a broken pipe, keep the interpreter's final flush from complaining."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


# --------------------------------------------------------------------------
# The library's words, as a CLI user needs them


def _cli_words(error: BaseException, ctx: Optional[click.Context]) -> str:
    """The library's message for ``error``, in terms of this command's options."""
    from baseplate.message_queue import (
        QueueExistsError,
        QueueNotFoundError,
    )

    command = ctx.info_name if ctx is not None else None
    text = error.strerror if isinstance(error, OSError) and error.strerror else str(error)
    if isinstance(error, QueueNotFoundError):
        queue = _quoted_queue(text)
        if command == "unlink":
            return f"queue {queue} does not exist (-f ignores that)"
        if command in ("read", "write"):
            return (
                f"queue {queue} does not exist: create it with 'baseplate-mq create {queue}', "
                "or drop --no-create"
            )
        if command == "load":
            return (
                f"queue {queue} does not exist: create it with 'baseplate-mq create {queue}', "
                "or add --create"
            )
        return f"queue {queue} does not exist: create it with 'baseplate-mq create {queue}'"
    if isinstance(error, QueueExistsError):
        return f"queue {_quoted_queue(text)} already exists (--exclusive refuses an existing one)"
    # Parameter names become the options that set them.
    for name, option in (
        ("max_messages", "--max-messages"),
        ("max_message_size", "--max-message-size"),
        ("priority", "--priority"),
    ):
        text = re.sub(rf"\b{name}=(\d+)", rf"{option} \1", text)
    return text


def _quoted_queue(text: str) -> str:
    """The queue name the library put in quotes in its message."""
    found = re.search(r"queue '([^']*)'", text)
    return found.group(1) if found else "?"


# --------------------------------------------------------------------------
# Option types


class QueueNameType(click.ParamType):  # type: ignore[type-arg]  # generic in click 8.2+
    """A queue name, checked by the library before anything is opened (exit 2 if bad)."""

    name = "QUEUE"

    def convert(
        self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]
    ) -> str:
        from baseplate.message_queue import validate_name

        try:
            validate_name(value)
        except (ValueError, TypeError) as error:
            self.fail(str(error), param, ctx)
        return str(value)


class ModeType(click.ParamType):  # type: ignore[type-arg]
    """Permission bits in octal: 600, 0600 or 0o600."""

    name = "MODE"

    def convert(
        self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]
    ) -> int:
        if isinstance(value, int):
            return value
        text = str(value).lower()
        text = text[2:] if text.startswith("0o") else text
        try:
            mode = int(text, 8)
        except ValueError:
            self.fail(f"{value!r} is not an octal mode such as 600 or 0660", param, ctx)
        if not 0 <= mode <= 0o777:
            self.fail(f"{value!r} is not a mode between 000 and 777", param, ctx)
        return mode


class SecondsType(click.ParamType):  # type: ignore[type-arg]
    """A number of seconds: finite and not negative (NaN and infinity are refused)."""

    name = "SECONDS"

    def convert(
        self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]
    ) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds < 0:
            self.fail(
                f"{value!r} is not a number of seconds: give a finite number, 0 or more "
                "(leave the option out to wait as long as it takes)",
                param,
                ctx,
            )
        if seconds > 1e9:
            self.fail(f"{value!r} seconds is too long: leave the option out instead", param, ctx)
        return seconds


QUEUE = QueueNameType()
SECONDS = SecondsType()


def _size_options(command: F) -> F:
    """--max-messages, --max-message-size and --mode, used when a queue is created."""
    command = click.option(
        "-m",
        "--mode",
        type=ModeType(),
        default="600",
        show_default=True,
        help="Permission bits in octal if the queue is created (the umask applies); "
        "660 shares it with the group.",
    )(command)
    command = click.option(
        "--max-message-size",
        type=click.IntRange(min=1),
        default=8192,
        show_default=True,
        help="Longest message in bytes, if the queue is created.",
    )(command)
    command = click.option(
        "--max-messages",
        type=click.IntRange(min=1),
        default=10,
        show_default=True,
        help="How many messages the queue holds, if it is created.",
    )(command)
    return command


def _delimiter(null: bool) -> bytes:
    return b"\0" if null else b"\n"


# --------------------------------------------------------------------------
# Signals and waiting


class _Stopping:
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

    def __enter__(self) -> _Stopping:
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
            raise _Stopped(self.signum)

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


def _check_stdio(fd: int, name: str) -> os.stat_result:
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


# --------------------------------------------------------------------------
# read


class _Output:
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
        stopping: _Stopping,
        encode: Optional[Callable[[Message], bytes]] = None,
    ) -> None:
        mode = _check_stdio(fd, "output").st_mode
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


def consume(
    queue: MessageQueue,
    count: Optional[int],
    timeout: Optional[float],
    delimiter: bytes,
    in_flight: int,
    stopping: _Stopping,
    encode: Optional[Callable[[Message], bytes]] = None,
) -> int:
    """Write messages from ``queue`` to stdout until ``count`` or ``timeout``; return the count.

    Every message taken is written out whole or put back, whatever happens:
    a signal, a reader that quits (except up to ``in_flight`` messages it had
    not read yet, on a pipe or socket), or an output error.
    """
    from baseplate.message_queue import TimedOutError

    output = _Output(1, delimiter, in_flight, stopping, encode)
    taken = 0
    silent_since: Optional[float] = None  # when the queue was last found empty
    try:
        while count is None or taken < count:
            stopping.check()
            room = output.room()
            if room == 0:
                output.wait_for_reader()
                continue
            want = READ_BATCH if count is None else min(READ_BATCH, count - taken)
            want = want if room is None else min(want, room)
            try:
                messages = queue.get_many(want, timeout=0)
            except TimedOutError:
                output.flush()  # about to wait: show what we have
                silent_since = silent_since or time.monotonic()
                wait = WAIT_SLICE
                if timeout is not None:
                    wait = min(wait, silent_since + timeout - time.monotonic())
                    if wait <= 0:
                        break
                try:  # the library waits: a spin, then the kernel
                    messages = queue.get_many(want, timeout=wait)
                except TimedOutError:
                    output.check_reader()
                    continue
            silent_since = None
            taken += len(messages)
            output.add(messages)
        output.flush()
    except BaseException as error:
        _give_back(queue, output, stopping, error)
        raise
    finally:
        output.close()
    return taken


def _give_back(
    queue: MessageQueue, output: _Output, stopping: _Stopping, error: BaseException
) -> None:
    """After ``error``: if a signal stopped us, write out what we hold, for
    FINISH_BUDGET seconds at most; then put every message not written out
    whole back on the queue."""
    # The signal that stopped us is expected; one more stops the clean-up.
    signals = 1 if isinstance(error, _Stopped) else stopping.count
    if isinstance(error, _Stopped):
        try:
            output.flush(budget=FINISH_BUDGET, signals=signals)
        except (OSError, CommandFailed):
            pass
    unwritten = output.unwritten()
    output.pending = []
    if unwritten:
        _put_back(queue, unwritten, stopping, signals)


def _put_back(
    queue: MessageQueue, messages: List[Message], stopping: _Stopping, signals: int
) -> None:
    """Return ``messages`` to the queue (at the back of their priority), waiting
    for room at most PUT_BACK_BUDGET seconds in all; more than ``signals``
    signals stop it. Says on stderr what could not be put back."""
    from baseplate.message_queue import MessageQueueError, TimedOutError

    give_up = time.monotonic() + PUT_BACK_BUDGET
    put = 0
    try:
        while put < len(messages) and stopping.count <= signals:
            message = messages[put]
            try:
                queue.put(message, timeout=0, priority=message.priority)
                put += 1
                continue
            except TimedOutError:
                pass
            left = give_up - time.monotonic()
            if left <= 0:
                break
            stopping.poll([(queue.fileno(), select.POLLOUT)], left)
    except MessageQueueError:
        pass
    lost = len(messages) - put
    if lost:
        why = "a further signal stopped" if stopping.count > signals else "no room for"
        _fail(
            f"{lost} message(s) taken from the queue were neither written out nor put back "
            f"({why} putting them back); {put} were put back"
        )


# --------------------------------------------------------------------------
# write


class _Input:
    """Standard input for ``write``: reads that a signal can always end."""

    def __init__(self, fd: int, stopping: _Stopping) -> None:
        _check_stdio(fd, "input")
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


def produce(
    queue: MessageQueue,
    priority: int,
    timeout: Optional[float],
    delimiter: bytes,
    stopping: _Stopping,
) -> int:
    """Send stdin to ``queue``, a message per delimited line, streaming; return the count."""
    source = _Input(0, stopping)
    sender = _Sender(queue, priority, timeout, stopping)
    limit = queue.max_message_size
    partial = b""
    try:
        while True:
            chunk = source.read(INPUT_CHUNK)
            if not chunk:
                break
            lines = (partial + chunk if partial else chunk).split(delimiter)
            partial = lines.pop()
            if lines:
                sender.send(lines)
            if len(partial) > limit:  # it can only grow: no need to read it all
                _too_long(sender.sent + 1, len(partial), limit, more=True)
        if partial:
            sender.send([partial])
    except _Stopped:
        _note(f"interrupted: {sender.sent} line(s) were sent; the rest of the input was not")
        raise
    return sender.sent


class _Sender:
    """Sends lines in batches and counts exactly what went out. The library
    waits for room, WAIT_SLICE seconds at a time, so that a signal (which
    only marks that we must stop) is seen soon."""

    def __init__(
        self, queue: MessageQueue, priority: int, timeout: Optional[float], stopping: _Stopping
    ) -> None:
        self.queue = queue
        self.priority = priority
        self.timeout = timeout
        self.stopping = stopping
        self.sent = 0
        self.told_full = False

    def send(self, lines: List[bytes], priority: Optional[int] = None) -> None:
        """Send ``lines``, in order, with ``priority`` (the command's by default)."""
        from baseplate.message_queue import MessageTooLargeError, TimedOutError

        priority = self.priority if priority is None else priority
        waiting_since: Optional[float] = None
        while lines:
            self.stopping.check()
            wait = WAIT_SLICE
            if self.timeout is not None:
                spent = 0.0 if waiting_since is None else time.monotonic() - waiting_since
                wait = max(0.0, min(wait, self.timeout - spent))
            try:  # the library waits for room: a spin, then the kernel
                self.sent += self.queue.put_many(lines, timeout=wait, priority=priority)
                return
            except MessageTooLargeError as error:
                index = error.index or 0
                if index:
                    self.send(lines[:index], priority)
                _too_long(self.sent + 1, error.size, error.max_message_size)
            except TimedOutError as error:  # still full: some may have gone out
                self.sent += error.sent
                lines = lines[error.sent :]
                if error.sent:
                    waiting_since = None
            now = time.monotonic()
            if waiting_since is None:
                waiting_since = now - wait
            if self.timeout is not None and now - waiting_since >= self.timeout:
                raise CommandFailed(
                    f"timed out after {self.timeout:g} s waiting for room in queue "
                    f"{self.queue.name}; {self.sent} line(s) were sent"
                )
            if not self.told_full and now - waiting_since >= FULL_NOTICE_AFTER:
                self._tell_full()

    def _tell_full(self) -> None:
        self.told_full = True
        if sys.stderr is not None and sys.stderr.isatty():
            depth = self.queue.max_messages
            _note(
                f"queue {self.queue.name} is full ({self.queue.current_messages} of {depth} "
                "messages): waiting for a reader to take some (Ctrl-C stops)"
            )


def _too_long(line: int, size: int, limit: int, more: bool = False) -> None:
    raise CommandFailed(
        f"line {line} has {size}{'+' if more else ''} bytes, more than the queue's "
        f"max_message_size of {limit}; the {line - 1} line(s) before it were sent, "
        "nothing after it"
    )


# --------------------------------------------------------------------------
# dump and load: the JSON Lines format

#: The version of dump's format, in each line's "v" field.
DUMP_FORMAT = 1


def dump_line(message: Message) -> bytes:
    """One line of dump's format: ``{"v": 1, "priority": P, "text": T}`` when the
    message is UTF-8 text, else ``"base64"`` with its bytes, and a newline."""
    record: Dict[str, Any] = {"v": DUMP_FORMAT, "priority": message.priority}
    try:
        record["text"] = message.decode("utf-8")
    except UnicodeDecodeError:
        record["base64"] = base64.b64encode(message).decode("ascii")
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def parse_dump_line(line: bytes) -> tuple[int, bytes]:
    """The (priority, message) of one line of dump's format, or ValueError
    saying what is wrong with it."""
    from baseplate.message_queue import PRIORITY_MAX

    try:
        record = json.loads(line)
    except ValueError as error:  # also a line cut short, or not UTF-8
        raise ValueError(f"not a JSON object ({error})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    if record.get("v") != DUMP_FORMAT:
        raise ValueError(
            f"format version {record.get('v')!r}, where this baseplate-mq reads {DUMP_FORMAT}"
        )
    if "priority" not in record:
        raise ValueError('it has no "priority"')
    priority = record["priority"]
    if type(priority) is not int or not 0 <= priority < PRIORITY_MAX:
        raise ValueError(f"priority {priority!r} is not 0 to {PRIORITY_MAX - 1}")
    if ("text" in record) == ("base64" in record):
        raise ValueError('it needs exactly one of "text" and "base64"')
    if "text" in record:
        text = record["text"]
        if not isinstance(text, str):
            raise ValueError('"text" is not a string')
        try:
            return priority, text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError('"text" holds a lone surrogate: not UTF-8') from None
    encoded = record["base64"]
    if not isinstance(encoded, str):
        raise ValueError('"base64" is not a string')
    try:
        return priority, base64.b64decode(encoded, validate=True)
    except ValueError:
        raise ValueError('"base64" is not valid base64') from None


def restore(queue: MessageQueue, timeout: Optional[float], stopping: _Stopping) -> int:
    """Send the messages of dump's lines on stdin, in order, with their
    priorities; stop at a bad line, after the lines before it. Return the count."""
    source = _Input(0, stopping)
    sender = _Sender(queue, 0, timeout, stopping)
    partial = b""
    number = 0  # of the last line parsed
    try:
        while True:
            chunk = source.read(INPUT_CHUNK)
            lines = (partial + chunk).split(b"\n")
            partial = lines.pop() if chunk else b""
            if not chunk and lines == [b""]:
                break
            batch: List[bytes] = []
            batch_priority = 0
            problem = None
            for line in lines:
                try:
                    priority, message = parse_dump_line(line)
                except ValueError as error:
                    problem = f"line {number + 1} is not a message of dump's format: {error}"
                    break
                number += 1
                if batch and priority != batch_priority:
                    sender.send(batch, batch_priority)
                    batch = []
                batch.append(message)
                batch_priority = priority
            if batch:
                sender.send(batch, batch_priority)
            if problem:
                raise CommandFailed(
                    f"{problem}; the {number} line(s) before it were loaded, nothing after it"
                )
            if not chunk:
                break
    except _Stopped:
        _note(f"interrupted: {sender.sent} message(s) were loaded; the rest were not")
        raise
    return sender.sent


# --------------------------------------------------------------------------
# ls


def _stat_facts(name: str, path: str) -> Optional[Dict[str, Any]]:
    """What ``ls`` knows of a queue it may not open: its mode and owner."""
    try:
        facts = os.stat(path)
    except OSError:
        return None  # gone meanwhile
    return {
        "name": name,
        "max_messages": None,
        "max_message_size": None,
        "current_messages": None,
        "mode": f"{facts.st_mode & 0o777:04o}",
        "owner": _user_name(facts.st_uid),
        "uid": facts.st_uid,
        "group": _group_name(facts.st_gid),
        "gid": facts.st_gid,
    }


# --------------------------------------------------------------------------
# Opening


def _effective_mode(mode: int) -> int:
    """``mode`` as a queue created now would get it: the umask removed."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def _open(
    name: str,
    max_messages: int,
    max_message_size: int,
    create: bool,
    mode: int,
    announce: bool = True,
) -> tuple[MessageQueue, bool]:
    """Open queue ``name``, creating it if asked and missing; also say whether
    this call created it (then, with ``announce``, one line on stderr says so)."""
    from baseplate.message_queue import MessageQueue, QueueExistsError, QueueNotFoundError

    while True:
        if create:
            try:
                queue = MessageQueue(
                    name, max_messages, max_message_size, mode=mode, exclusive=True
                )
            except QueueExistsError:
                pass
            else:
                if announce:
                    _note(
                        f"created queue {name}: max_messages={queue.max_messages} "
                        f"max_message_size={queue.max_message_size} mode={queue.mode:04o}"
                    )
                return queue, True
        try:
            return MessageQueue(name, create=False), False
        except QueueNotFoundError:
            if not create:
                raise
            # Unlinked between the two calls: create it after all.


# --------------------------------------------------------------------------
# Commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="baseplate-mq", prog_name="baseplate-mq")
def cli() -> None:
    """Read, write and inspect POSIX message queues.

    \b
    Example:
        echo hello | baseplate-mq write /demo
        baseplate-mq read /demo --count 1
    """


@cli.command()
@click.argument("queue", type=QUEUE)
@click.option("-n", "--count", type=click.IntRange(min=0), help="Stop after exactly N messages.")
@click.option(
    "-t",
    "--timeout",
    type=SECONDS,
    help="Stop once the queue has been empty for this many seconds (status 0; "
    f"{EXIT_SHORT_READ} if --count was not reached).",
)
@click.option("-0", "--null", is_flag=True, help="End each message with NUL, not newline.")
@click.option(
    "--in-flight",
    type=click.IntRange(min=1),
    default=DEFAULT_IN_FLIGHT,
    show_default=True,
    help="On a pipe or socket, take at most N messages the reader has not read yet: "
    "all that can be lost if it quits. Larger is faster.",
)
@_size_options
@click.option(
    "--create/--no-create",
    default=True,
    show_default=True,
    help="Create the queue if it does not exist (and say so on stderr).",
)
@_reports_errors
def read(
    queue: str,
    count: Optional[int],
    timeout: Optional[float],
    null: bool,
    in_flight: int,
    max_messages: int,
    max_message_size: int,
    mode: int,
    create: bool,
) -> None:
    """Print messages from QUEUE as they arrive, one per line.

    Messages are written as raw bytes. A message taken from the queue is
    written out whole or put back, whatever stops the command; only on a
    pipe or socket whose reader quits can up to --in-flight messages it had
    not read be lost. Use --count N to take exactly N.

    \b
    Example:
        baseplate-mq read /events --count 10 --timeout 5
    """
    _check_stdio(1, "output")
    with _Stopping() as stopping:
        opened, _ = _open(queue, max_messages, max_message_size, create, mode)
        with opened:
            got = consume(opened, count, timeout, _delimiter(null), in_flight, stopping)
        stopping.check()  # a signal at the very end still says so
    _check_count(got, count, timeout)


def _check_count(got: int, count: Optional[int], timeout: Optional[float]) -> None:
    """Fail (status 3) when ``--count`` was not reached before the timeout."""
    if count is not None and got < count:
        raise CommandFailed(
            f"got {got} of {count} messages before the {timeout or 0:g} s timeout",
            EXIT_SHORT_READ,
        )


@cli.command()
@click.argument("queue", type=QUEUE)
@click.option(
    "-p",
    "--priority",
    type=click.IntRange(min=0, max=32767),
    default=0,
    show_default=True,
    help="Priority of the messages (higher are received first).",
)
@click.option(
    "-t",
    "--timeout",
    type=SECONDS,
    help="Fail if a message cannot be sent within this many seconds (queue full).",
)
@click.option("-0", "--null", is_flag=True, help="Input is NUL-delimited, not newline-delimited.")
@_size_options
@click.option(
    "--create/--no-create",
    default=True,
    show_default=True,
    help="Create the queue if it does not exist (and say so on stderr).",
)
@_reports_errors
def write(
    queue: str,
    priority: int,
    timeout: Optional[float],
    null: bool,
    max_messages: int,
    max_message_size: int,
    mode: int,
    create: bool,
) -> None:
    """Send each line of standard input to QUEUE as a message.

    The line ending is not sent; an empty line is an empty message. Waits
    while the queue is full (and says so after a second, on a terminal).

    \b
    Example:
        printf 'one\\ntwo\\n' | baseplate-mq write /events --priority 3
    """
    _check_stdio(0, "input")
    with _Stopping() as stopping:
        opened, _ = _open(queue, max_messages, max_message_size, create, mode)
        with opened:
            produce(opened, priority, timeout, _delimiter(null), stopping)
        stopping.check()


@cli.command()
@click.argument("queue", type=QUEUE)
@_size_options
@click.option("--exclusive", is_flag=True, help="Fail if the queue already exists.")
@_reports_errors
def create(
    queue: str, max_messages: int, max_message_size: int, mode: int, exclusive: bool
) -> None:
    """Create QUEUE and print its sizes and mode.

    If QUEUE exists with the same sizes and mode, that is success too; with
    others, it fails and says how to re-create it.

    \b
    Example:
        baseplate-mq create /events --max-messages 10 --mode 600
    """
    from baseplate.message_queue import MessageQueue

    if exclusive:
        opened = MessageQueue(queue, max_messages, max_message_size, mode=mode, exclusive=True)
    else:
        opened, created = _open(queue, max_messages, max_message_size, True, mode, False)
        if not created:
            _check_same(opened, max_messages, max_message_size, _effective_mode(mode))
    with opened:
        click.echo(
            f"{opened.name}: max_messages={opened.max_messages} "
            f"max_message_size={opened.max_message_size} mode={opened.mode:04o}"
        )


def _check_same(queue: MessageQueue, max_messages: int, max_message_size: int, mode: int) -> None:
    """Fail unless the existing ``queue`` has the sizes and mode asked for."""
    have = (queue.max_messages, queue.max_message_size, queue.mode)
    if have == (max_messages, max_message_size, mode):
        return
    queue.close()

    def described(sizes: tuple[int, int, int]) -> str:
        return f"--max-messages {sizes[0]} --max-message-size {sizes[1]} --mode {sizes[2]:03o}"

    raise CommandFailed(
        f"queue {queue.name} already exists with {described(have)}, not "
        f"{described((max_messages, max_message_size, mode))}. A queue's sizes and mode "
        f"cannot change: to re-create it (its messages are lost), run "
        f"'baseplate-mq unlink {queue.name}' and this command again"
    )


@cli.command()
@click.argument("queue", type=QUEUE)
@click.option("-f", "--force", is_flag=True, help="Do not fail if the queue does not exist.")
@_reports_errors
def unlink(queue: str, force: bool) -> None:
    """Remove QUEUE. Processes that have it open keep it until they close it.

    \b
    Example:
        baseplate-mq unlink /events
    """
    from baseplate.message_queue import QueueNotFoundError
    from baseplate.message_queue import unlink as unlink_queue

    try:
        unlink_queue(queue)
    except QueueNotFoundError:
        if not force:
            raise


def _user_name(uid: int) -> Optional[str]:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def _group_name(gid: int) -> Optional[str]:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def _queue_facts(queue: MessageQueue) -> Dict[str, Any]:
    """What ``info`` and ``ls`` show of an open queue."""
    mode, uid, gid = queue.mode, queue.uid, queue.gid
    return {
        "name": queue.name,
        "max_messages": queue.max_messages,
        "max_message_size": queue.max_message_size,
        "current_messages": queue.current_messages,
        "mode": f"{mode:04o}",
        "owner": _user_name(uid),
        "uid": uid,
        "group": _group_name(gid),
        "gid": gid,
    }


@cli.command()
@click.argument("queue", type=QUEUE)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@_reports_errors
def info(queue: str, as_json: bool) -> None:
    """Show the sizes, contents, mode and owner of QUEUE (never creates it).

    \b
    Example:
        baseplate-mq info /events --json
    """
    from baseplate.message_queue import MessageQueue

    with MessageQueue(queue, create=False) as opened:
        facts = _queue_facts(opened)
    if as_json:
        click.echo(json.dumps(facts))
    else:
        for key, value in facts.items():
            click.echo(f"{key}: {value}")


@cli.command("ls")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list of info objects.")
@_reports_errors
def list_queues(as_json: bool) -> None:
    """List every queue on this host that this user can see, by name.

    Columns: name, messages waiting, max messages, max message size, mode,
    owner; ? where this user may not open the queue. The names come from the
    mqueue file system, which must be mounted.

    \b
    Example:
        baseplate-mq ls --json
    """
    from baseplate.message_queue import (
        MessageQueue,
        MessageQueueError,
        QueueNotFoundError,
        mqueue_mount,
    )

    mount = mqueue_mount()
    if mount is None:
        raise CommandFailed(
            "the mqueue file system is not mounted, so the queues cannot be listed; "
            "mount it as root: mkdir -p /dev/mqueue && mount -t mqueue none /dev/mqueue"
        )
    queues = []
    for entry in sorted(os.listdir(mount)):
        name = "/" + entry
        try:
            with MessageQueue(name, create=False) as opened:
                facts: Optional[Dict[str, Any]] = _queue_facts(opened)
        except QueueNotFoundError:
            continue  # unlinked meanwhile
        except MessageQueueError:  # not ours to open: what the file system shows
            facts = _stat_facts(name, os.path.join(mount, entry))
        if facts is not None:
            queues.append(facts)
    if as_json:
        click.echo(json.dumps(queues))
        return
    header = ("NAME", "MESSAGES", "MAX", "SIZE", "MODE", "OWNER")
    rows = [header] + [
        (
            _printable(q["name"]),
            *("?" if q[key] is None else str(q[key]) for key in _LS_NUMBERS),
            q["mode"],
            q["owner"] or str(q["uid"]),
        )
        for q in queues
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header))]
    for row in rows:
        click.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())


_LS_NUMBERS = ("current_messages", "max_messages", "max_message_size")


def _printable(name: str) -> str:
    """A queue name for a terminal: bytes that are not UTF-8 as escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


@cli.command()
@click.argument("queue", type=QUEUE)
@click.option("-n", "--count", type=click.IntRange(min=0), help="Take at most N messages.")
@click.option(
    "-t",
    "--timeout",
    type=SECONDS,
    default=0.0,
    show_default=True,
    help="Wait this long for more once the queue is empty (exit 3 if --count was not reached).",
)
@click.option(
    "--in-flight",
    type=click.IntRange(min=1),
    default=DEFAULT_IN_FLIGHT,
    show_default=True,
    help="As for read: on a pipe or socket, at most N messages unread by the reader.",
)
@_reports_errors
def dump(queue: str, count: Optional[int], timeout: float, in_flight: int) -> None:
    """Take QUEUE's messages and write them as JSON Lines, with their priorities.

    Drains the queue (or takes --count N), following read's rules: a message
    taken is written out whole or put back. Each line is an object:
    {"v": 1, "priority": P, "text": "..."} for UTF-8 text, or "base64"
    instead of "text" for other bytes. load puts them back.

    \b
    Example:
        baseplate-mq dump /events > saved.jsonl
        baseplate-mq load /events --create < saved.jsonl
    """
    _check_stdio(1, "output")
    with _Stopping() as stopping:
        opened, _ = _open(queue, 1, 1, False, 0o600)
        with opened:
            got = consume(opened, count, timeout, b"\n", in_flight, stopping, dump_line)
        stopping.check()
    _check_count(got, count, timeout)


@cli.command()
@click.argument("queue", type=QUEUE)
@click.option(
    "-t",
    "--timeout",
    type=SECONDS,
    help="Fail if a message cannot be sent within this many seconds (queue full).",
)
@_size_options
@click.option(
    "--create/--no-create",
    default=False,
    show_default=True,
    help="Create the queue if it does not exist (and say so on stderr).",
)
@_reports_errors
def load(
    queue: str,
    timeout: Optional[float],
    max_messages: int,
    max_message_size: int,
    mode: int,
    create: bool,
) -> None:
    """Send the messages of dump's JSON Lines on standard input to QUEUE.

    In order, with their priorities. A message longer than the queue's
    max_message_size, or a line that is not dump's format, stops it: the
    lines before it were loaded, and stderr names the line.

    \b
    Example:
        baseplate-mq load /events --create --max-message-size 4096 < saved.jsonl
    """
    _check_stdio(0, "input")
    with _Stopping() as stopping:
        opened, _ = _open(queue, max_messages, max_message_size, create, mode)
        with opened:
            restore(opened, timeout, stopping)
        stopping.check()


@click.command(
    context_settings={"help_option_names": ["-h", "--help"]},
    epilog="The same as the subcommands of baseplate-mq (see baseplate-mq --help).",
)
@click.option(
    "--read",
    "read_queue",
    type=QUEUE,
    metavar="QUEUE",
    help="Print messages from QUEUE, one per line, as they arrive.",
)
@click.option(
    "--write",
    "write_queue",
    type=QUEUE,
    metavar="QUEUE",
    help="Send each line of standard input to QUEUE.",
)
@click.option("--create", "create_queue", type=QUEUE, metavar="QUEUE", help="Create QUEUE.")
@_size_options
@click.version_option(package_name="baseplate-mq", prog_name="baseplate.message_queue")
@_reports_errors
def legacy(
    read_queue: Optional[str],
    write_queue: Optional[str],
    create_queue: Optional[str],
    max_messages: int,
    max_message_size: int,
    mode: int,
) -> None:
    """Consume and print, or write, messages of a POSIX message queue.

    \b
    Example:
        echo hello! | python -m baseplate.message_queue --write /queue
    """
    chosen = [q for q in (read_queue, write_queue, create_queue) if q is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --read, --write or --create")
    # The subcommands do the work; invoke() gives them their own defaults.
    command = read if read_queue is not None else write if write_queue is not None else create
    click.get_current_context().invoke(
        command,
        queue=chosen[0],
        max_messages=max_messages,
        max_message_size=max_message_size,
        mode=mode,
    )


def _run(command: click.Command, prog_name: str) -> None:
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        command.main(prog_name=prog_name)
    except KeyboardInterrupt:  # before or after a command's own handling
        sys.exit(EXIT_INTERRUPTED)
    except Terminated:
        sys.exit(EXIT_TERMINATED)


def main() -> None:
    """Entry point of the ``baseplate-mq`` console script."""
    _run(cli, "baseplate-mq")


def legacy_main() -> None:
    """Entry point of ``python -m baseplate.message_queue``."""
    _run(legacy, "python -m baseplate.message_queue")


if __name__ == "__main__":
    main()
