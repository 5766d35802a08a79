"""Words for the command line's user: the two ways of speaking on stderr,
the library's errors in terms of this command's options, and names made
printable.

Only wording: no decision about statuses or what to do next.
"""

from __future__ import annotations

import re
from typing import Optional

import click

from baseplate.message_queue.errors import QueueExistsError, QueueNotFoundError


def fail(message: str) -> None:
    click.echo(f"baseplate-mq: error: {message}", err=True)


def note(message: str) -> None:
    click.echo(f"baseplate-mq: {message}", err=True)


def cli_words(error: BaseException, ctx: Optional[click.Context]) -> str:
    """The library's message for ``error``, in terms of this command's options."""
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


def printable(name: str) -> str:
    """A queue name for a terminal: bytes that are not UTF-8 as escapes."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
