"""The ``baseplate-mq`` commands: each a thin click shell over the modules
beside it (options, queues, the pipelines of read and dump and of write and
load, dump format), run under :func:`~baseplate.message_queue.cli.exits.reports_errors`.

The commands print their results on standard output (``click.echo``) and
open queues through :mod:`.queues`; ``unlink`` unlinks one, ``ls`` lists the
mqueue file system. Every other stream, signal and status is the business of
the modules they call.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import click

from baseplate.message_queue.cli.dump_format import dump_line
from baseplate.message_queue.cli.exits import EXIT_SHORT_READ, CommandFailed, reports_errors
from baseplate.message_queue.cli.observe import list_queues as all_queues
from baseplate.message_queue.cli.observe import one_queue, show_once
from baseplate.message_queue.cli.observe import watch as watch_queues
from baseplate.message_queue.cli.options import (
    PRIORITY,
    QUEUE,
    SEND_TIMEOUT_HELP,
    chosen_format,
    count_option,
    create_option,
    delimiter,
    format_options,
    in_flight_option,
    null_option,
    size_options,
    textfile_option,
    timeout_option,
    watch_option,
)
from baseplate.message_queue.cli.queues import check_same, open_queue
from baseplate.message_queue.cli.read_and_dump import take_messages
from baseplate.message_queue.cli.signals import Stopping
from baseplate.message_queue.cli.stdio import StreamFailed, require
from baseplate.message_queue.cli.words import seconds, shell_word
from baseplate.message_queue.cli.write_and_load import load_dump, send_lines
from baseplate.message_queue.errors import QueueNotFoundError


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
@count_option("Stop after exactly N messages.")
@timeout_option(
    "Stop once the queue has been empty for this many seconds (status 0; "
    f"{EXIT_SHORT_READ} if --count was not reached)."
)
@null_option("End each message with NUL, not newline.")
@in_flight_option(
    "On a pipe or Unix socket, take at most N messages the reader has not read "
    "yet: all that can be lost if it quits. Larger is faster."
)
@size_options
@create_option(default=True)
@reports_errors
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
    written out whole or put back (at the back of its priority), whatever
    stops the command, and stderr says which. Only on a pipe or Unix socket
    whose reader quits can up to --in-flight messages it had not read be
    lost; on a TCP socket, what the sockets' buffers hold (stderr says so).
    Use --count N to take exactly N. An existing queue keeps its own sizes.

    \b
    Example:
        baseplate-mq read /events --count 10 --timeout 5
    """
    require(1)
    with Stopping() as stopping:
        opened, _ = open_queue(queue, max_messages, max_message_size, create, mode)
        with opened:
            got = take_messages(opened, count, timeout, delimiter(null), in_flight, stopping)
    _check_count(got, count, timeout)


def _check_count(got: int, count: Optional[int], timeout: Optional[float]) -> None:
    """Fail (status 3) when ``--count`` was not reached before the timeout."""
    if count is not None and got < count:
        raise CommandFailed(
            f"got {got} of {count} messages before the {seconds(timeout or 0)} s timeout",
            EXIT_SHORT_READ,
        )


@cli.command()
@click.argument("queue", type=QUEUE)
@click.option(
    "-p",
    "--priority",
    type=PRIORITY,
    default=0,
    show_default=True,
    help="Priority of the messages (higher are received first).",
)
@timeout_option(SEND_TIMEOUT_HELP)
@null_option("Input is NUL-delimited, not newline-delimited.")
@size_options
@create_option(default=True)
@reports_errors
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
    while the queue is full (and says so after a second, on a terminal). An
    existing queue keeps its own sizes: info shows them.

    \b
    Example:
        printf 'one\\ntwo\\n' | baseplate-mq write /events --priority 3
    """
    require(0)
    with Stopping() as stopping:
        opened, _ = open_queue(queue, max_messages, max_message_size, create, mode)
        with opened:
            send_lines(opened, priority, timeout, delimiter(null), stopping)


@cli.command()
@click.argument("queue", type=QUEUE)
@size_options
@click.option("--exclusive", is_flag=True, help="Fail if the queue already exists.")
@reports_errors
def create(
    queue: str, max_messages: int, max_message_size: int, mode: int, exclusive: bool
) -> None:
    """Create QUEUE and print its sizes and mode.

    The queue gets exactly the mode asked for, whatever the umask. If QUEUE
    exists with the same sizes and mode, that is success too; with others,
    it fails and says how to get them.

    \b
    Example:
        baseplate-mq create /events --max-messages 10 --mode 600
    """
    require(1)
    opened, created = open_queue(queue, max_messages, max_message_size, True, mode, False)
    if not created:
        if exclusive:
            opened.close()
            raise CommandFailed(
                f"queue {shell_word(queue)} already exists (--exclusive refuses an existing one)"
            )
        check_same(opened, max_messages, max_message_size, mode)
    with opened:
        line = (
            f"{shell_word(opened.name)}: max_messages={opened.max_messages} "
            f"max_message_size={opened.max_message_size} mode={opened.mode:04o}"
        )
    try:
        click.echo(line)
    except StreamFailed as failure:
        if created and failure.message is not None:
            failure.message = f"queue {shell_word(queue)} was created, but {failure.message}"
        raise


@cli.command()
@click.argument("queue", type=QUEUE)
@click.option("-f", "--force", is_flag=True, help="Do not fail if the queue does not exist.")
@reports_errors
def unlink(queue: str, force: bool) -> None:
    """Remove QUEUE. Processes that have it open keep it until they close it.

    \b
    Example:
        baseplate-mq unlink /events
    """
    from baseplate.message_queue.queue import unlink as unlink_queue  # loads the binding

    try:
        unlink_queue(queue)
    except QueueNotFoundError:
        if not force:
            raise


@cli.command()
@click.argument("queue", type=QUEUE)
@format_options("Print a JSON object (--format json).")
@watch_option
@textfile_option
@reports_errors
def info(
    queue: str,
    output_format: Optional[str],
    as_json_output: bool,
    watch: Optional[float],
    textfile: Optional[str],
) -> None:
    """Show the sizes, contents, fill, mode, owner and holders of QUEUE
    (never creates it).

    Holders are the processes that have QUEUE open (PID, user, command
    line), of those this user may inspect (root sees all); notify_pid is
    the process registered for notification (0: none).

    \b
    Example:
        baseplate-mq info /events --json
        baseplate-mq info /events --watch 1
    """
    require(1)
    form = chosen_format(output_format, as_json_output, textfile)

    def refresh() -> List[Dict[str, Any]]:
        return [one_queue(queue)]

    if watch is not None:
        watch_queues(watch, refresh, form, True, textfile, f"baseplate-mq info {shell_word(queue)}")
        return
    show_once(refresh(), form, True, textfile)


@cli.command("ls")
@format_options("Print a JSON list of info objects (--format json).")
@watch_option
@textfile_option
@reports_errors
def list_queues(
    output_format: Optional[str],
    as_json_output: bool,
    watch: Optional[float],
    textfile: Optional[str],
) -> None:
    """List every queue on this host that this user can see, by name.

    Columns: messages waiting, max messages, fill (% of max), max message
    size, mode, owner, holders (processes that have it open, of those this
    user may inspect), and the name last (as a shell word: quoted where it
    needs to be); ? where this user may not open the queue. The names come
    from the mqueue file system, which must be mounted, and be this IPC
    namespace's (ls fails if it is another's).

    \b
    Example:
        baseplate-mq ls --json
        baseplate-mq ls --watch 2
        baseplate-mq ls --textfile /var/lib/node_exporter/textfile/mqueue.prom
    """
    require(1)
    form = chosen_format(output_format, as_json_output, textfile)
    if watch is not None:
        watch_queues(watch, all_queues, form, False, textfile, "baseplate-mq ls")
        return
    show_once(all_queues(), form, False, textfile)


@cli.command()
@click.argument("queue", type=QUEUE)
@count_option("Take at most N messages.")
@timeout_option(
    "Wait this long for more once the queue is empty (exit 3 if --count was not reached).",
    default=0.0,
)
@in_flight_option("As for read: on a pipe or Unix socket, at most N messages unread by the reader.")
@reports_errors
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
    require(1)
    with Stopping() as stopping:
        opened, _ = open_queue(queue, 1, 1, False, 0o600)
        with opened:
            got = take_messages(opened, count, timeout, b"\n", in_flight, stopping, dump_line)
    _check_count(got, count, timeout)


@cli.command()
@click.argument("queue", type=QUEUE)
@timeout_option(SEND_TIMEOUT_HELP)
@size_options
@create_option(default=False)
@reports_errors
def load(
    queue: str,
    timeout: Optional[float],
    max_messages: int,
    max_message_size: int,
    mode: int,
    create: bool,
) -> None:
    """Send the messages of dump's JSON Lines on standard input to QUEUE.

    In order, with their priorities; blank lines are skipped. A message
    longer than the queue's max_message_size, or a line that is not dump's
    format, stops it: the lines before it were loaded, and stderr names the
    line (its number counts every line).

    \b
    Example:
        baseplate-mq load /events --create --max-message-size 4096 < saved.jsonl
    """
    require(0)
    with Stopping() as stopping:
        opened, _ = open_queue(queue, max_messages, max_message_size, create, mode)
        with opened:
            load_dump(opened, timeout, stopping)
