"""The seed's command line, ``python -m baseplate.message_queue
--read|--write|--create QUEUE``: the same work as the subcommands of
``baseplate-mq``, which it invokes.

It only parses and hands over: every queue, stream and status is the
invoked command's. (The voice it speaks in, and that the seed's syntax has
no ``unlink``, are :mod:`.words`'.)
"""

from __future__ import annotations

from typing import Optional

import click

from baseplate.message_queue.cli.commands import create, read, write
from baseplate.message_queue.cli.exits import reports_errors
from baseplate.message_queue.cli.options import QUEUE, size_options


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
@size_options
@click.version_option(package_name="baseplate-mq", prog_name="baseplate.message_queue")
@reports_errors
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
