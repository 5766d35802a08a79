"""Option types and shared options: what the command line accepts, checked
while it parses (a bad value exits 2, before anything is opened).
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


class QueueNameType(click.ParamType):  # type: ignore[type-arg]  # generic in click 8.2+
    """A queue name, checked by the library before anything is opened (exit 2 if bad)."""

    name = "QUEUE"

    def convert(
        self, value: Any, param: Optional[click.Parameter], ctx: Optional[click.Context]
    ) -> str:
        from baseplate.message_queue.checks import validate_name  # loads the binding

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


def size_options(command: F) -> F:
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


def delimiter(null: bool) -> bytes:
    return b"\0" if null else b"\n"
