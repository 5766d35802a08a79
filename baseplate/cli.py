"""The ``baseplate-mq`` command line: a thin click shell over :mod:`baseplate.message_queue`.

Also reachable as ``python -m baseplate.cli``, and in the seed's older form
``python -m baseplate.message_queue --read|--write|--create QUEUE``.

Exit codes: 0 success, 1 a runtime failure (said on stderr in a line or
two), 2 a usage error such as a bad queue name, 130 on Ctrl-C, 143 on
SIGTERM, 141 when the reader of our output went away (a closed pipe).
No Python traceback is ever shown.

The library is imported only by the commands that use it, so ``--help``
starts fast.
"""

from __future__ import annotations

import functools
import json
import os
import select
import signal
import sys
import time
from typing import TYPE_CHECKING, Any, Callable, List, Optional, TypeVar

import click

if TYPE_CHECKING:  # pragma: no cover
    from baseplate.message_queue import Message, MessageQueue

EXIT_FAILURE = 1
EXIT_BROKEN_PIPE = 128 + signal.SIGPIPE
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM

#: Most messages taken from the queue per call while reading.
READ_BATCH = 1024
#: Output is written out once this much is waiting (or the queue is empty).
OUTPUT_BUFFER = 64 * 1024
#: Input is read in chunks of this size.
INPUT_CHUNK = 64 * 1024
#: While waiting for messages, how often ``read`` checks that its output is still read.
OUTPUT_CHECK = 0.5
#: How long a reader whose output failed waits to put a message back.
PUT_BACK_TIMEOUT = 5.0

F = TypeVar("F", bound=Callable[..., Any])


class Terminated(BaseException):
    """Raised by our SIGTERM handler, so that clean-up runs before exiting 143."""


class CommandFailed(Exception):
    """A failure to report on stderr, with exit status 1."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _fail(message: str) -> None:
    click.echo(f"baseplate-mq: error: {message}", err=True)


def _error_text(error: BaseException) -> str:
    """The library's message, without OSError's "[Errno N]" prefix."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)


def _reports_errors(command: F) -> F:
    """Turn what goes wrong inside a command into a message and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from baseplate.message_queue import MessageQueueError

        try:
            return command(*args, **kwargs)
        except (MessageQueueError, CommandFailed) as error:
            _fail(_error_text(error))
            sys.exit(EXIT_FAILURE)
        except BrokenPipeError:
            _silence_stdout()
            sys.exit(EXIT_BROKEN_PIPE)
        except KeyboardInterrupt:
            sys.exit(EXIT_INTERRUPTED)
        except Terminated:
            sys.exit(EXIT_TERMINATED)

    return wrapper  # type: ignore[return-value]


def _silence_stdout() -> None:
    """After a broken pipe, keep the interpreter's final flush from complaining."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


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
        text = str(value).lower().removeprefix("0o")
        try:
            mode = int(text, 8)
        except ValueError:
            self.fail(f"{value!r} is not an octal mode such as 600 or 0660", param, ctx)
        if not 0 <= mode <= 0o777:
            self.fail(f"{value!r} is not a mode between 000 and 777", param, ctx)
        return mode


QUEUE = QueueNameType()


def _size_options(command: F) -> F:
    """--max-messages and --max-message-size, used when a queue is created."""
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
# The work behind the subcommands


class _Output:
    """Buffered output of messages that puts back what it could not write."""

    def __init__(self, queue: MessageQueue, fd: int, delimiter: bytes) -> None:
        self.queue = queue
        self.fd = fd
        self.delimiter = delimiter
        self.pending: List[Message] = []
        self.pending_bytes = 0

    def add(self, messages: List[Message]) -> None:
        self.pending += messages
        self.pending_bytes += sum(map(len, messages)) + len(messages)
        if self.pending_bytes >= OUTPUT_BUFFER:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        delimiter = self.delimiter
        data = memoryview(delimiter.join(self.pending) + delimiter)
        written = 0
        try:
            while written < len(data):
                written += os.write(self.fd, data[written:])
        except BaseException:
            self._put_back(written)
            raise
        self.pending = []
        self.pending_bytes = 0

    def _put_back(self, written: int) -> None:
        """Return to the queue every message not wholly written out."""
        from baseplate.message_queue import MessageQueueError

        end = 0
        unwritten = []
        for message in self.pending:
            end += len(message) + 1
            if end > written:
                unwritten.append(message)
        self.pending = []
        lost = 0
        for message in unwritten:
            try:
                self.queue.put(message, timeout=PUT_BACK_TIMEOUT, priority=message.priority)
            except MessageQueueError:
                lost += 1
        if lost:
            _fail(f"{lost} message(s) taken from the queue could not be written out or put back")


def consume(
    queue: MessageQueue, count: Optional[int], timeout: Optional[float], delimiter: bytes
) -> int:
    """Write messages from ``queue`` to stdout until ``count`` or ``timeout``; return the count."""
    from baseplate.message_queue import TimedOutError

    output = _Output(queue, sys.stdout.fileno(), delimiter)
    taken = 0
    drained = False  # did the last batch empty the queue?
    try:
        while count is None or taken < count:
            want = READ_BATCH if count is None else min(READ_BATCH, count - taken)
            if drained:
                output.flush()  # about to wait: show what we have
                messages = _wait_for_messages(queue, want, timeout, output.fd)
                if not messages:
                    break
            else:
                try:
                    messages = queue.get_many(want, timeout=0)
                except TimedOutError:
                    drained = True
                    continue
            output.add(messages)
            taken += len(messages)
            drained = len(messages) < want
    finally:
        output.flush()
    return taken


def _wait_for_messages(
    queue: MessageQueue, want: int, timeout: Optional[float], output_fd: int
) -> List[Message]:
    """Wait for the next messages, the kernel doing the waiting; return [] once
    ``timeout`` seconds pass without one.

    Every OUTPUT_CHECK seconds of silence, check that someone still reads our
    output, so that ``read | head -1`` ends soon after head does.
    """
    from baseplate.message_queue import TimedOutError

    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        wait = OUTPUT_CHECK
        if deadline is not None:
            wait = min(wait, max(0.0, deadline - time.monotonic()))
        try:
            return queue.get_many(want, timeout=wait)
        except TimedOutError:
            pass
        if _reader_is_gone(output_fd):
            raise BrokenPipeError()
        if deadline is not None and time.monotonic() >= deadline:
            return []


def _reader_is_gone(fd: int) -> bool:
    """True when ``fd`` is a pipe or socket whose other end was closed."""
    poller = select.poll()
    poller.register(fd, 0)  # errors and hang-ups are always reported
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))


def produce(queue: MessageQueue, priority: int, timeout: Optional[float], delimiter: bytes) -> int:
    """Send stdin to ``queue``, a message per delimited line, streaming; return the count."""
    fd = sys.stdin.fileno()
    limit = queue.max_message_size
    sent = 0
    partial = b""
    while True:
        chunk = os.read(fd, INPUT_CHUNK)
        if not chunk:
            break
        lines = (partial + chunk if partial else chunk).split(delimiter)
        partial = lines.pop()
        if lines:
            sent += _send_lines(queue, lines, priority, timeout, sent)
        if len(partial) > limit:  # it can only grow: no need to read it all
            _too_long(sent + 1, len(partial), limit, more=True)
    if partial:
        sent += _send_lines(queue, [partial], priority, timeout, sent)
    return sent


def _too_long(line: int, size: int, limit: int, more: bool = False) -> None:
    raise CommandFailed(
        f"line {line} has {size}{'+' if more else ''} bytes, more than the queue's "
        f"max_message_size of {limit}; the {line - 1} line(s) before it were sent, "
        "nothing after it"
    )


def _send_lines(
    queue: MessageQueue, lines: List[bytes], priority: int, timeout: Optional[float], sent: int
) -> int:
    from baseplate.message_queue import MessageTooLargeError, TimedOutError

    try:
        return queue.put_many(lines, timeout=timeout, priority=priority)
    except MessageTooLargeError as error:
        index = error.index or 0
        if index:
            queue.put_many(lines[:index], timeout=timeout, priority=priority)
        _too_long(sent + index + 1, error.size, error.max_message_size)
    except TimedOutError as error:
        raise CommandFailed(
            f"timed out after {timeout} s waiting for room in the queue; "
            f"{sent + error.sent} line(s) were sent"
        ) from None
    except (KeyboardInterrupt, Terminated) as error:
        # put_many does not say how far it got when interrupted; the queue does not either.
        click.echo(f"baseplate-mq: interrupted after sending at least {sent} line(s)", err=True)
        raise error
    raise AssertionError("unreachable")  # pragma: no cover


def _open(
    name: str,
    max_messages: int,
    max_message_size: int,
    create: bool = True,
    mode: int = 0o644,
    exclusive: bool = False,
) -> MessageQueue:
    from baseplate.message_queue import MessageQueue

    return MessageQueue(
        name, max_messages, max_message_size, mode=mode, create=create, exclusive=exclusive
    )


# --------------------------------------------------------------------------
# Commands


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="baseplate-mq", prog_name="baseplate-mq")
def cli() -> None:
    """Read, write and inspect POSIX message queues.

    Example: echo hello | baseplate-mq write /demo && baseplate-mq read /demo --count 1
    """


@cli.command()
@click.argument("queue", type=QUEUE)
@click.option("-n", "--count", type=click.IntRange(min=0), help="Stop after exactly N messages.")
@click.option(
    "-t",
    "--timeout",
    type=click.FloatRange(min=0),
    help="Exit (status 0) once the queue has been empty for this many seconds.",
)
@click.option("-0", "--null", is_flag=True, help="End each message with NUL, not newline.")
@_size_options
@click.option(
    "--create/--no-create",
    default=True,
    show_default=True,
    help="Create the queue if it does not exist.",
)
@_reports_errors
def read(
    queue: str,
    count: Optional[int],
    timeout: Optional[float],
    null: bool,
    max_messages: int,
    max_message_size: int,
    create: bool,
) -> None:
    """Print messages from QUEUE as they arrive, one per line.

    Messages are written as raw bytes. Messages taken from the queue that
    cannot be written out (closed pipe, Ctrl-C) are put back.

    Example: baseplate-mq read /events --count 10 --timeout 5
    """
    with _open(queue, max_messages, max_message_size, create) as opened:
        consume(opened, count, timeout, _delimiter(null))


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
    type=click.FloatRange(min=0),
    help="Fail if a message cannot be sent within this many seconds (queue full).",
)
@click.option("-0", "--null", is_flag=True, help="Input is NUL-delimited, not newline-delimited.")
@_size_options
@click.option(
    "--create/--no-create",
    default=True,
    show_default=True,
    help="Create the queue if it does not exist.",
)
@_reports_errors
def write(
    queue: str,
    priority: int,
    timeout: Optional[float],
    null: bool,
    max_messages: int,
    max_message_size: int,
    create: bool,
) -> None:
    """Send each line of standard input to QUEUE as a message.

    The line ending is not sent; an empty line is an empty message. Waits
    while the queue is full.

    Example: printf 'one\\ntwo\\n' | baseplate-mq write /events --priority 3
    """
    with _open(queue, max_messages, max_message_size, create) as opened:
        produce(opened, priority, timeout, _delimiter(null))


@cli.command()
@click.argument("queue", type=QUEUE)
@_size_options
@click.option(
    "-m",
    "--mode",
    type=ModeType(),
    default="644",
    show_default=True,
    help="Permission bits in octal (the umask applies); 600 keeps other users out.",
)
@click.option("--exclusive", is_flag=True, help="Fail if the queue already exists.")
@_reports_errors
def create(
    queue: str, max_messages: int, max_message_size: int, mode: int, exclusive: bool
) -> None:
    """Create QUEUE (if missing) and print its sizes.

    Example: baseplate-mq create /events --max-messages 10 --mode 600
    """
    with _open(queue, max_messages, max_message_size, True, mode, exclusive) as opened:
        click.echo(
            f"{opened.name}: max_messages={opened.max_messages} "
            f"max_message_size={opened.max_message_size}"
        )


@cli.command()
@click.argument("queue", type=QUEUE)
@click.option("-f", "--force", is_flag=True, help="Do not fail if the queue does not exist.")
@_reports_errors
def unlink(queue: str, force: bool) -> None:
    """Remove QUEUE. Processes that have it open keep it until they close it.

    Example: baseplate-mq unlink /events
    """
    from baseplate.message_queue import QueueNotFoundError
    from baseplate.message_queue import unlink as unlink_queue

    try:
        unlink_queue(queue)
    except QueueNotFoundError:
        if not force:
            raise


@cli.command()
@click.argument("queue", type=QUEUE)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object.")
@_reports_errors
def info(queue: str, as_json: bool) -> None:
    """Show the sizes of QUEUE and how many messages it holds (never creates it).

    Example: baseplate-mq info /events --json
    """
    from baseplate.message_queue import MessageQueue

    with MessageQueue(queue, create=False) as opened:
        facts = {
            "name": opened.name,
            "max_messages": opened.max_messages,
            "max_message_size": opened.max_message_size,
            "current_messages": opened.current_messages,
        }
    if as_json:
        click.echo(json.dumps(facts))
    else:
        for key, value in facts.items():
            click.echo(f"{key}: {value}")


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
) -> None:
    """Consume and print, or write, messages of a POSIX message queue.

    Example: echo hello! | python -m baseplate.message_queue --write /queue
    """
    chosen = [q for q in (read_queue, write_queue, create_queue) if q is not None]
    if len(chosen) != 1:
        raise click.UsageError("give exactly one of --read, --write or --create")
    # The subcommands do the work; invoke() gives them their own defaults.
    command = read if read_queue is not None else write if write_queue is not None else create
    click.get_current_context().invoke(
        command, queue=chosen[0], max_messages=max_messages, max_message_size=max_message_size
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
