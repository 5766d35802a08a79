"""Words for the command line's user: how the program speaks on stderr, the
library's errors in terms of this command's options, and every name the
system supplies written so that a shell reads it back (:func:`shell_word`).

Only wording: no decision about statuses or what to do next. It writes to
stderr (:func:`say`, :func:`say_error`, :func:`note`) and nothing else; the
one :data:`voice` of the process is changed in place (:func:`speak_as`).
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any, Optional

from baseplate.message_queue.errors import (
    MessageQueueError,
    QueueExistsError,
    QueueNotFoundError,
    Spelling,
)

# What a shell reads as is, unquoted (shlex's safe characters).
_PLAIN = re.compile(r"[A-Za-z0-9_@%+=:,./-]+\Z")


def shell_word(text: str) -> str:
    """``text`` (a queue's name, a user's, a path: any bytes, from the system)
    as a shell word that reads back as exactly those bytes, and that no
    terminal can take for a control sequence or a second line: as is when
    plain, in ``'...'`` when printable, else ``$'...'`` with escapes."""
    if _PLAIN.match(text):
        return text
    raw = os.fsencode(text)
    try:
        decoded = raw.decode("utf-8")
    except UnicodeDecodeError:
        decoded = None
    if decoded is not None and decoded.isprintable():
        return "'" + decoded.replace("'", "'\\''") + "'"
    escaped = []
    for byte in raw:
        if byte in (0x27, 0x5C):  # ' and \
            escaped.append("\\" + chr(byte))
        elif 0x20 <= byte < 0x7F:
            escaped.append(chr(byte))
        else:
            escaped.append(f"\\x{byte:02x}")
    return "$'" + "".join(escaped) + "'"


def json_text(text: str) -> str:
    """``text`` as valid Unicode for JSON: bytes that are not UTF-8 (kept by
    Python as lone surrogates) become U+FFFD."""
    return os.fsencode(text).decode("utf-8", "replace")


class ShellSpelling(Spelling):
    """The library's messages as the command line says them: names as shell
    words, arguments as the options that set them (``--max-messages 11``)."""

    def name(self, text: str) -> str:
        return shell_word(text)

    def word(self, text: str) -> str:
        return shell_word(text)

    def argument(self, key: str, value: Any) -> str:
        option = "--" + key.replace("_", "-")
        return f"{option} {value:03o}" if key == "mode" else f"{option} {value}"


SHELL = ShellSpelling()


class Voice:
    """Who is speaking: ``baseplate-mq``, or the seed's ``python -m
    baseplate.message_queue``; and which command of it is running."""

    def __init__(self, program: str = "baseplate-mq", legacy: bool = False) -> None:
        self.program = program
        self.legacy = legacy
        self.command: Optional[str] = None

    def create_command(self, queue: str) -> str:
        """The command line that creates ``queue``, as this program spells it."""
        if self.legacy:
            return f"{self.program} --create {shell_word(queue)}"
        return f"{self.program} create {shell_word(queue)}"

    def unlink_command(self, queue: str) -> str:
        """The command line that unlinks ``queue``: the seed's syntax has no
        unlink, so its users are sent to ``baseplate-mq unlink``."""
        program = "baseplate-mq" if self.legacy else self.program
        return f"{program} unlink {shell_word(queue)}"

    def speak_as(self, program: str, legacy: bool = False) -> None:
        """Speak as ``program`` from now on: changed in place, so that every
        module that imported :data:`voice` by name hears it."""
        self.program = program
        self.legacy = legacy


#: The one voice of this process (changed in place, never replaced).
voice = Voice()


def speak_as(program: str, legacy: bool = False) -> None:
    """Speak as ``program`` from now on."""
    voice.speak_as(program, legacy)


def say(message: str) -> None:
    """One line on stderr, as this program (never raises: stderr may be gone)."""
    sys.stderr.write(f"{voice.program}: {message}\n")


def say_error(message: str) -> None:
    """``error: message`` on stderr (it only says; the caller decides the status)."""
    say(f"error: {message}")


def note(message: str) -> None:
    say(message)


def describe(error: MessageQueueError) -> str:
    """The library's ``error`` in terms of this command, for its user."""
    command, name = voice.command, error.queue_name
    if isinstance(error, QueueNotFoundError) and name is not None:
        queue = shell_word(name)
        if command == "unlink":
            return f"queue {queue} does not exist (-f ignores that)"
        missing = f"queue {queue} does not exist"
        if command in ("info", "read", "dump") and not voice.legacy:
            missing += (
                " (if a service or its sidecar creates it, that process may not be running, "
                "or may use another name)"
            )
        hint = f"{missing}: create it with {voice.create_command(name)}"
        if voice.legacy:
            return hint
        if command in ("read", "write"):
            hint += ", or drop --no-create"
        if command == "load":
            hint += ", or add --create"
        return hint
        if command in ("read", "write"):
            hint += ", or drop --no-create"
        if command == "load":
            hint += ", or add --create"
        if command in ("info", "read", "dump"):
            hint += (
                "; if a service or its sidecar creates it, that process may not be running "
                "(or may use another name)"
            )
        return hint
    if isinstance(error, QueueExistsError) and name is not None:
        return f"queue {shell_word(name)} already exists (--exclusive refuses an existing one)"
    if error.words is not None:
        return error.words.spelled(SHELL)
    return error.strerror if isinstance(error, OSError) and error.strerror else str(error)


def seconds(value: float) -> str:
    """A number of seconds, short: ``1`` or ``0.5``."""
    return f"{value:g}"


def messages(count: int) -> str:
    """``1 message``, ``2 messages``."""
    return f"{count} message" if count == 1 else f"{count} messages"
