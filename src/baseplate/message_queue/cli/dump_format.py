"""The format of ``dump`` and ``load``: versioned JSON Lines, one message a
line, that keep any bytes and every priority.

Pure: bytes in, bytes out.
"""

from __future__ import annotations

import base64
import json
from typing import TYPE_CHECKING, Any, Dict

if TYPE_CHECKING:  # pragma: no cover
    from baseplate.message_queue.message import Message

#: The version of dump's format, in each line's "v" field.
DUMP_FORMAT = 1
# What a line holds beside its payload, at most: {"v":1,"priority":32767,"text":""}
# and its newline, with room to spare for spaces a person may have added.
_FRAME = 64


def longest_line(max_message_size: int) -> int:
    """The longest line of this format that can hold a message that fits a
    queue of ``max_message_size``: as text, a byte may take six (``\u0000``)."""
    return 6 * max_message_size + _FRAME


def is_blank(line: bytes) -> bool:
    """Whether a line holds nothing but whitespace (a CRLF's CR included):
    skipped, as a hand-edited file expects."""
    return not line.strip()


def dump_line(message: Message) -> bytes:
    """One line of dump's format: ``{"v": 1, "priority": P, "text": T}`` when the
    message is UTF-8 text, else ``"base64"`` with its bytes, and a newline."""
    record: Dict[str, Any] = {"v": DUMP_FORMAT, "priority": message.priority}
    try:
        record["text"] = message.decode("utf-8")
    except UnicodeDecodeError:
        record["base64"] = base64.b64encode(message).decode("ascii")
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def parse_dump_line(line: bytes) -> tuple[int, bytes]:
    """The (priority, message) of one line of dump's format, or ValueError
    saying what is wrong with it."""
    from baseplate.message_queue.checks import PRIORITY_MAX, shown  # loads the binding

    try:
        record = json.loads(line)
    except RecursionError:
        raise ValueError("not a JSON object (nested too deeply)") from None
    except ValueError as error:  # also a line cut short, or not UTF-8
        raise ValueError(f"not a JSON object ({error})") from None
    if not isinstance(record, dict):
        raise ValueError("not a JSON object")
    version = record.get("v")
    if type(version) is not int or version != DUMP_FORMAT:  # not true, not 1.0
        raise ValueError(
            f"format version {shown(version)}, where this baseplate-mq reads {DUMP_FORMAT}"
        )
    if "priority" not in record:
        raise ValueError('it has no "priority"')
    priority = record["priority"]
    if type(priority) is not int or not 0 <= priority < PRIORITY_MAX:
        raise ValueError(f"priority {shown(priority)} is not 0 to {PRIORITY_MAX - 1}")
    if ("text" in record) == ("base64" in record):
        raise ValueError('it needs exactly one of "text" and "base64"')
    if "text" in record:
        text = record["text"]
        if not isinstance(text, str):
            raise ValueError('"text" is not a string')
        try:
            return priority, text.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError('"text" holds a lone surrogate: not UTF-8') from None
    encoded = record["base64"]
    if not isinstance(encoded, str):
        raise ValueError('"base64" is not a string')
    try:
        return priority, base64.b64decode(encoded, validate=True)
    except ValueError:
        raise ValueError('"base64" is not valid base64') from None
