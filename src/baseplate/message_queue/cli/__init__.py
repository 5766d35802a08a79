"""The ``baseplate-mq`` command line: a thin click shell over
:mod:`baseplate.message_queue`.

Also reachable as ``python -m baseplate.message_queue.cli``, and in the
seed's older form ``python -m baseplate.message_queue --read|--write|--create
QUEUE``.

Exit codes (:data:`~baseplate.message_queue.cli.exits.EXIT_CODES`): 0 success;
1 a failure, said on stderr in a line or two; 2 a usage error such as a bad
queue name; 3 ``read --count N`` got fewer than N messages before its
timeout; 74 standard input or output failed (closed, full device...); 130
on SIGINT (Ctrl-C); 141 when the reader of our output went away; 143 on
SIGTERM. No Python traceback is ever shown.

``read`` and ``write`` never lose a message to a signal: SIGINT and SIGTERM
only mark that the command must stop
(:class:`~baseplate.message_queue.cli.signals.Stopping`), and it stops where
every message taken from the queue has been written out whole, or put back.

The modules: :mod:`.commands` (the click commands, each a thin shell),
:mod:`.legacy` (the seed's syntax), :mod:`.options` (option types),
:mod:`.signals`, :mod:`.stdio` (standard streams), :mod:`.streaming` (the
loops of read, write, dump and load), :mod:`.dump_format`, :mod:`.queues`
(opening and describing queues), :mod:`.words` (what the user reads) and
:mod:`.exits` (errors into words and exit statuses).

This file imports nothing at start-up: the entry points below import click
and the commands when called, and the library is imported only by the
commands that use it, so that ``--help`` starts fast.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing at start-up
if TYPE_CHECKING:
    import click


def _run(command: click.Command, prog_name: str) -> None:
    """Run a click command as the process's main program."""
    import signal
    import sys

    from baseplate.message_queue.cli.exits import EXIT_INTERRUPTED, EXIT_TERMINATED
    from baseplate.message_queue.cli.signals import Terminated, on_sigterm

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        command.main(prog_name=prog_name)
    except KeyboardInterrupt:  # before or after a command's own handling
        sys.exit(EXIT_INTERRUPTED)
    except Terminated:
        sys.exit(EXIT_TERMINATED)


def main() -> None:
    """Entry point of the ``baseplate-mq`` console script."""
    from baseplate.message_queue.cli.commands import cli

    _run(cli, "baseplate-mq")


def legacy_main() -> None:
    """Entry point of ``python -m baseplate.message_queue``."""
    from baseplate.message_queue.cli.legacy import legacy

    _run(legacy, "python -m baseplate.message_queue")
