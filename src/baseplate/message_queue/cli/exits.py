"""Exit statuses, and the one place where what went wrong in a command
becomes words on stderr and a status (:func:`reports_errors`).

Every command runs under :func:`reports_errors`; nothing else exits.
"""

from __future__ import annotations

import functools
import os
import signal
import sys
from typing import Any, Callable, Dict, TypeVar

import click

from baseplate.message_queue.cli.signals import Stopped, Terminated
from baseplate.message_queue.cli.words import cli_words, fail
from baseplate.message_queue.errors import MessageQueueError

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

F = TypeVar("F", bound=Callable[..., Any])


class CommandFailed(Exception):
    """A failure to report on stderr, with its exit status."""

    def __init__(self, message: str, status: int = EXIT_FAILURE) -> None:
        super().__init__(message)
        self.status = status


def reports_errors(command: F) -> F:
    """Turn what goes wrong inside a command into a message and an exit code."""

    @functools.wraps(command)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except MessageQueueError as error:
            fail(cli_words(error, click.get_current_context()))
            sys.exit(EXIT_FAILURE)
        except CommandFailed as error:
            fail(str(error))
            sys.exit(error.status)
        except BrokenPipeError:
            _silence_stdout()
            sys.exit(EXIT_BROKEN_PIPE)
        except Stopped as stop:
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
