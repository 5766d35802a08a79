"""Option types and every option of the commands, each defined once: what the
command line accepts, checked while it parses (a bad value exits 2, in our
words, before anything is opened).

It touches no stream and no queue; checking a queue name loads the binding
(:func:`~baseplate.message_queue.checks.validate_name`), when a command that
takes one parses it, never for ``--help``.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Optional, TypeVar

import click

from baseplate.message_queue.cli.words import SHELL, shell_word
from baseplate.message_queue.errors import MessageQueueError

F = TypeVar("F", bound=Callable[..., Any])

_WHOLE = re.compile(r"\s*[+-]?[0-9]+\s*\Z")
_OCTAL = re.compile(r"[0-7]+\Z")


class QueueNameType(click.ParamType):  # type: ignore[type-arg]  # generic in click 8.2+
    """A queue name, checked by the library before anything is opened (exit 2 if bad)."""

    name = "QUEUE"

    def convert(
        self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]
    ) -> str:
        from baseplate.message_queue.checks import validate_name  # loads the binding

        try:
            validate_name(value)
        except MessageQueueError as error:
            self.fail(error.words.spelled(SHELL) if error.words else str(error), param, ctx)
        except TypeError as error:
            self.fail(str(error), param, ctx)
        return str(value)


class WholeNumber(click.ParamType):  # type: ignore[type-arg]
    """A whole number from ``low`` to ``high`` (None: no upper bound)."""

    name = "N"

    def __init__(self, low: int, high: Optional[int] = None) -> None:
        self.low, self.high = low, high

    def convert(
        self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]
    ) -> int:
        if isinstance(value, int):
            number = value
        elif _WHOLE.match(str(value)):
            number = int(str(value))
        else:
            self.fail(f"{shell_word(str(value))} is not a whole number", param, ctx)
        if number < self.low or (self.high is not None and number > self.high):
            bounds = f"{self.low} or more" if self.high is None else f"{self.low} to {self.high}"
            self.fail(f"{number} is out of range: give {bounds}", param, ctx)
        return number


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
        if not _OCTAL.match(text):
            self.fail(
                f"{shell_word(str(value))} is not an octal mode such as 600 or 0660", param, ctx
            )
        mode = int(text, 8)
        if not 0 <= mode <= 0o777:
            self.fail(f"{shell_word(str(value))} is not a mode between 000 and 777", param, ctx)
        return mode


class SecondsType(click.ParamType):  # type: ignore[type-arg]
    """A finite number of seconds, 0 or more (above 0 with ``above_zero``), up
    to ``longest``: NaN and infinity are refused. ``refused`` and ``too_long``
    end the words of each refusal."""

    name = "SECONDS"

    def __init__(
        self, refused: str, longest: float, too_long: str, above_zero: bool = False
    ) -> None:
        self.refused, self.longest, self.too_long = refused, longest, too_long
        self.above_zero = above_zero

    def convert(
        self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]
    ) -> float:
        shown = shell_word(str(value))
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{shown} is not a number of seconds", param, ctx)
        if not math.isfinite(seconds) or seconds < 0 or (self.above_zero and seconds == 0):
            self.fail(f"{shown} is not a number of seconds{self.refused}", param, ctx)
        if seconds > self.longest:
            self.fail(f"{shown} seconds is too long{self.too_long}", param, ctx)
        return seconds


QUEUE = QueueNameType()
SECONDS = SecondsType(
    ": give a finite number, 0 or more (leave the option out to wait as long as it takes)",
    1e9,
    ": leave the option out instead",
)
#: How often --watch refreshes.
WATCH_SECONDS = SecondsType(" above 0 (give 1, or 0.5)", 1e6, " between refreshes", above_zero=True)
#: A count of messages (0 or more), a size or depth (1 or more), a priority
#: (up to Linux's MQ_PRIO_MAX - 1; the library checks it again).
COUNT = WholeNumber(0)
POSITIVE = WholeNumber(1)
PRIORITY = WholeNumber(0, 32767)


def size_options(command: F) -> F:
    """--max-messages, --max-message-size and --mode, used when a queue is created."""
    command = click.option(
        "-m",
        "--mode",
        type=ModeType(),
        default="600",
        show_default=True,
        help="Permission bits in octal, exactly, if the queue is created (whatever the "
        "umask); 660 shares it with the group.",
    )(command)
    command = click.option(
        "--max-message-size",
        type=POSITIVE,
        default=8192,
        show_default=True,
        help="Longest message in bytes, if the queue is created (an existing queue keeps "
        "its own: see info).",
    )(command)
    command = click.option(
        "--max-messages",
        type=POSITIVE,
        default=10,
        show_default=True,
        help="How many messages the queue holds, if it is created (an existing queue keeps "
        "its own).",
    )(command)
    return command


def delimiter(null: bool) -> bytes:
    return b"\0" if null else b"\n"


#: How many messages a reader on a pipe or Unix socket may have taken and
#: not yet read (read and dump's --in-flight).
DEFAULT_IN_FLIGHT = 1


def create_option(default: bool) -> Callable[[F], F]:
    """--create/--no-create: create the queue if it does not exist."""
    return click.option(
        "--create/--no-create",
        default=default,
        show_default=True,
        help="Create the queue if it does not exist (and say so on stderr).",
    )


#: --timeout's help for the commands that send (write, load).
SEND_TIMEOUT_HELP = "Fail if a message cannot be sent within this many seconds (queue full)."


def timeout_option(help: str, default: Optional[float] = None) -> Callable[[F], F]:
    """-t/--timeout, in seconds; what it bounds is the command's (``help``)."""
    return click.option(
        "-t",
        "--timeout",
        type=SECONDS,
        default=default,
        show_default=default is not None,
        help=help,
    )


def null_option(help: str) -> Callable[[F], F]:
    """-0/--null: NUL-delimited messages, in the direction ``help`` says."""
    return click.option("-0", "--null", is_flag=True, help=help)


def in_flight_option(help: str) -> Callable[[F], F]:
    """--in-flight: how many messages a pipe's reader may hold unread."""
    return click.option(
        "--in-flight",
        type=POSITIVE,
        default=DEFAULT_IN_FLIGHT,
        show_default=True,
        help=help,
    )


def count_option(help: str) -> Callable[[F], F]:
    """-n/--count: how many messages to take."""
    return click.option("-n", "--count", type=COUNT, help=help)


class TextfilePathType(click.ParamType):  # type: ignore[type-arg]
    """Where ``--textfile`` writes: a path ending in ``.prom``, as
    node_exporter's textfile collector requires."""

    name = "PATH"

    def convert(
        self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]
    ) -> str:
        path = str(value)
        if not path.endswith(".prom") or path.endswith("/.prom"):
            self.fail(
                f"{shell_word(path)} does not end in .prom, as node_exporter's textfile "
                "collector requires (it reads only *.prom)",
                param,
                ctx,
            )
        return path


#: The formats of ls and info.
FORMATS = ("table", "json", "prometheus")


def format_options(json_help: str) -> Callable[[F], F]:
    """--format table|json|prometheus, and --json, its synonym for json."""

    def decorate(command: F) -> F:
        command = click.option("--json", "as_json_output", is_flag=True, help=json_help)(command)
        return click.option(
            "--format",
            "output_format",
            type=click.Choice(FORMATS),
            default=None,
            help="table (the default), json, or prometheus: the text format that "
            "node_exporter's textfile collector reads.",
        )(command)

    return decorate


def chosen_format(
    output_format: Optional[str], as_json_output: bool, textfile: Optional[str]
) -> str:
    """The format that --format, --json and --textfile ask for together (a
    usage error, 2, if they disagree)."""
    wanted = {value for value in (output_format, "json" if as_json_output else None) if value}
    if textfile is not None:
        wanted.add("prometheus")
    if len(wanted) > 1:
        raise click.UsageError(
            "--format, --json and --textfile (which writes prometheus) ask for different "
            "formats: give one"
        )
    return wanted.pop() if wanted else "table"


def watch_option(command: F) -> F:
    """--watch SECONDS: refresh every SECONDS until Ctrl-C."""
    return click.option(
        "-w",
        "--watch",
        type=WATCH_SECONDS,
        default=None,
        help="Refresh every SECONDS, with the change in messages since the last refresh and "
        "the time, until Ctrl-C: redrawn in place on a terminal, rolling lines into a pipe "
        "or file (with --textfile, the file is rewritten).",
    )(command)


def textfile_option(command: F) -> F:
    """--textfile PATH: write the Prometheus format to PATH, atomically."""
    return click.option(
        "--textfile",
        type=TextfilePathType(),
        default=None,
        help="Write the prometheus format to PATH (ending in .prom), atomically, for "
        "node_exporter's textfile collector; nothing is printed.",
    )(command)
