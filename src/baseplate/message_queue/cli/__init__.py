"""The ``baseplate-mq`` command line: a thin click shell over
:mod:`baseplate.message_queue`.

Also reachable as ``python -m baseplate.message_queue.cli``, and in the
seed's older form ``python -m baseplate.message_queue --read|--write|--create
QUEUE``.

Exit codes: :data:`~baseplate.message_queue.cli.exits.EXIT_CODES` lists
them, and says what each means. No Python traceback is ever shown.

Every command goes through one place for each concern, so that the next
command gets them without anyone remembering to add them: :mod:`.signals`
(every signal that would end the process), :mod:`.stdio` (the standard
streams), :mod:`.exits` (how a command ended, in words and a status), and
:mod:`.words` (names the system supplies, written so a shell reads them
back). The rest: :mod:`.commands` (the click commands, each a thin shell),
:mod:`.legacy` (the seed's syntax), :mod:`.options` (option types),
:mod:`.output` (read's paced output), :mod:`.read_and_dump` and
:mod:`.write_and_load` (the pipelines of those commands), :mod:`.dump_format`
and :mod:`.queues` (opening and describing queues), :mod:`.observe` (what
``ls`` and ``info`` show an operator: holders, ``--watch``, Prometheus).

This file imports nothing at start-up: the entry points install the signal
handlers first, before click is imported; the library is imported only by
the commands that use it, so that ``--help`` starts fast. Once run, the
entry points install signal handlers and claim the standard streams.
"""

from __future__ import annotations


def main() -> None:
    """Entry point of the ``baseplate-mq`` console script."""
    _start()
    from baseplate.message_queue.cli.commands import cli
    from baseplate.message_queue.cli.exits import run

    run(cli)


def legacy_main() -> None:
    """Entry point of ``python -m baseplate.message_queue``."""
    _start()
    from baseplate.message_queue.cli import words

    words.speak_as("python -m baseplate.message_queue", legacy=True)
    from baseplate.message_queue.cli.exits import run
    from baseplate.message_queue.cli.legacy import legacy

    run(legacy)


def _start() -> None:
    """What must come first: the signal handlers (before click is even
    imported), then the standard streams, before any descriptor is opened."""
    from baseplate.message_queue.cli import signals

    signals.install()
    from baseplate.message_queue.cli import stdio

    stdio.claim()
