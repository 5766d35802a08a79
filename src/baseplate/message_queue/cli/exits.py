"""Exit statuses, and the one place where the way a command ended becomes
words on stderr and a status: :func:`finish`.

Everything that can end a command comes here: the library's errors, a
failed standard stream, a signal, click's usage errors, and anything
unforeseen (said in one line: no Python traceback ever reaches the user).
:func:`run` runs a click command under it; :func:`reports_errors` marks
each command, so that the words can speak of its own options.
"""

from __future__ import annotations

import errno
import functools
import sys
from typing import Any, Callable, Dict, NoReturn, TypeVar

import click

from baseplate.message_queue.cli import words
from baseplate.message_queue.cli.signals import Stopped, die
from baseplate.message_queue.cli.stdio import EXIT_BROKEN_PIPE, EXIT_IO_ERROR, StreamFailed
from baseplate.message_queue.errors import MessageQueueError

EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_SHORT_READ = 3

#: What each exit status means (the docs show this table).
EXIT_CODES: Dict[str, str] = {
    "0": "success",
    str(EXIT_FAILURE): "a failure, said on stderr",
    str(EXIT_USAGE): "a usage error: a bad option, value or queue name",
    str(EXIT_SHORT_READ): "read --count N got fewer than N messages before its --timeout",
    str(EXIT_IO_ERROR): "standard input or output is closed or failed (a full device...)",
    str(EXIT_BROKEN_PIPE): "the reader of the output went away",
    "128+N": "ended by signal N, after its clean-up: 129 SIGHUP, 130 SIGINT (Ctrl-C), "
    "143 SIGTERM... (by the signal itself, but for those that would dump core)",
}

F = TypeVar("F", bound=Callable[..., Any])


class CommandFailed(Exception):
    """A failure to report on stderr, with its exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def run(command: click.Command) -> NoReturn:
    """Run ``command`` as the process's main program, and end it."""
    try:
        result = command.main(prog_name=words.voice.program, standalone_mode=False)
    except BaseException as error:  # everything ends in finish()
        finish(error)
    sys.exit(result if isinstance(result, int) else 0)


def reports_errors(command: F) -> F:
    """Mark a click command: its errors end in :func:`finish`, in its words."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        words.voice.command = click.get_current_context().info_name
        try:
            return command(*args, **kwargs)
        except BaseException as error:
            finish(error)

    return wrapper  # type: ignore[return-value]


def finish(error: BaseException) -> NoReturn:
    """End the process as ``error`` says: words on stderr, then a status."""
    if isinstance(error, Stopped):
        die(error.signum)  # after the clean-up, as the signal would
    if isinstance(error, SystemExit):
        raise error
    sys.exit(_status(error))


def _status(error: BaseException) -> int:
    """Say what ``error`` means, and return the exit status it calls for."""
    if isinstance(error, click.exceptions.Exit):
        return error.exit_code
    if isinstance(error, click.ClickException):
        error.show()
        return error.exit_code
    if isinstance(error, StreamFailed):
        if error.message is not None:
            words.say_error(error.message)
        return error.status
    if isinstance(error, MessageQueueError):
        words.say_error(words.describe(error))
        return EXIT_FAILURE
    if isinstance(error, CommandFailed):
        words.say_error(error.message)
        return error.status
    if isinstance(error, (KeyboardInterrupt, click.exceptions.Abort)):
        die(2)  # SIGINT before our handler was in place
    if isinstance(error, OSError) and error.errno in (errno.EMFILE, errno.ENFILE):
        words.say_error(
            f"{error.strerror}: this process has no file descriptor left (ulimit -n); "
            "close some in the process that started it, or raise the limit"
        )
        return EXIT_FAILURE
    if isinstance(error, OSError) and error.strerror:
        words.say_error(f"{error.strerror}" + (f": {error.filename}" if error.filename else ""))
        return EXIT_FAILURE
    words.say_error(f"unexpected {type(error).__name__}: {error}")
    return EXIT_FAILURE
