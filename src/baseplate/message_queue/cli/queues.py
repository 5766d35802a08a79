"""Queues as the commands see them: opened (and created with exactly the
mode asked for, said on stderr), checked against what ``create`` asked for,
and described for ``info`` and ``ls``: as text, as ``ls``'s table, or as
exact JSON.

It opens queues (:class:`~baseplate.message_queue.MessageQueue`, which loads
the binding), sets a created queue's mode with ``fchmod``, reads the mqueue
file system (``stat``) and the user and group databases
(:mod:`~baseplate.message_queue.system`), and writes a note on stderr when
it creates a queue. It prints nothing else: the commands do.
"""

from __future__ import annotations

import base64
import os
from typing import TYPE_CHECKING, Any, Dict, List, Optional

from baseplate.message_queue import system
from baseplate.message_queue.cli.exits import CommandFailed
from baseplate.message_queue.cli.words import json_text, note, shell_word, voice
from baseplate.message_queue.errors import QueueExistsError, QueueNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from baseplate.message_queue.queue import MessageQueue

#: What ``info`` and ``ls`` say of a queue, in this order.
FACTS = (
    "name",
    "max_messages",
    "max_message_size",
    "current_messages",
    "mode",
    "owner",
    "uid",
    "group",
    "gid",
)


def open_queue(
    name: str,
    max_messages: int,
    max_message_size: int,
    create: bool,
    mode: int,
    announce: bool = True,
) -> tuple[MessageQueue, bool]:
    """Open queue ``name``, creating it if asked and missing, with exactly
    ``mode`` (as ``mkdir -m`` does, whatever the umask); also say whether this
    call created it (then, with ``announce``, one line on stderr says so)."""
    from baseplate.message_queue.queue import MessageQueue  # loads the binding

    while True:
        if create:
            try:
                queue = MessageQueue(
                    name, max_messages, max_message_size, mode=mode, exclusive=True
                )
            except QueueExistsError:
                pass
            else:
                os.fchmod(queue.fileno(), mode)  # its owner's: this call created it
                if announce:
                    note(
                        f"created queue {shell_word(name)}: max_messages={queue.max_messages} "
                        f"max_message_size={queue.max_message_size} mode={queue.mode:04o}"
                    )
                return queue, True
        try:
            return MessageQueue(name, create=False), False
        except QueueNotFoundError:
            if not create:
                raise
            # Unlinked between the two calls: create it after all.


def check_same(queue: MessageQueue, max_messages: int, max_message_size: int, mode: int) -> None:
    """Fail unless the existing ``queue`` has the sizes and mode asked for,
    saying what it has and how to get what was asked."""
    have = (queue.max_messages, queue.max_message_size, queue.mode)
    if have == (max_messages, max_message_size, mode):
        return
    queue.close()
    name = shell_word(queue.name)
    again = f"{voice.unlink_command(queue.name)}, then this command again (its messages are lost)"
    if have[:2] == (max_messages, max_message_size):
        path = system.mqueue_path(queue.name)
        chmod = f"chmod {mode:03o} {shell_word(path or '/dev/mqueue/' + queue.name.lstrip('/'))}"
        mount = "" if path else f", once the mqueue file system is mounted ({system.MOUNT_COMMAND})"
        raise CommandFailed(
            f"queue {name} already exists with --mode {have[2]:03o}, not --mode {mode:03o}. "
            f"Its owner can change that: {chmod}{mount}; or re-create it: {again}"
        )

    def described(sizes: tuple[int, int, int]) -> str:
        return f"--max-messages {sizes[0]} --max-message-size {sizes[1]} --mode {sizes[2]:03o}"

    raise CommandFailed(
        f"queue {name} already exists with {described(have)}, not "
        f"{described((max_messages, max_message_size, mode))}. A queue's sizes cannot "
        f"change: to re-create it, run {again}"
    )


def queue_facts(queue: MessageQueue) -> Dict[str, Any]:
    """What ``info`` and ``ls`` know of an open queue."""
    mode, uid, gid = queue.mode, queue.uid, queue.gid
    return {
        "name": queue.name,
        "max_messages": queue.max_messages,
        "max_message_size": queue.max_message_size,
        "current_messages": queue.current_messages,
        "mode": mode,
        "owner": system.user_name(uid),
        "uid": uid,
        "group": system.group_name(gid),
        "gid": gid,
    }


def stat_facts(name: str, path: str) -> Optional[Dict[str, Any]]:
    """What ``ls`` knows of a queue it may not open: its mode and owner."""
    try:
        facts = os.stat(path)
    except OSError:
        return None  # gone meanwhile
    return {
        "name": name,
        "max_messages": None,
        "max_message_size": None,
        "current_messages": None,
        "mode": facts.st_mode & system.MODE_BITS,
        "owner": system.user_name(facts.st_uid),
        "uid": facts.st_uid,
        "group": system.group_name(facts.st_gid),
        "gid": facts.st_gid,
    }


def as_json(facts: Dict[str, Any]) -> Dict[str, Any]:
    """Facts for ``--json``: exact, valid JSON. A name that is not UTF-8 is
    also given whole, as ``name_base64`` (as ``dump`` does for payloads)."""
    shown = dict(facts, mode=f"{facts['mode']:04o}")
    raw = os.fsencode(facts["name"])
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        shown["name"] = json_text(facts["name"])
        shown["name_base64"] = base64.b64encode(raw).decode("ascii")
    for key in ("owner", "group"):
        if shown[key] is not None:
            shown[key] = json_text(shown[key])
    return shown


def as_text(facts: Dict[str, Any]) -> List[str]:
    """Facts for a person: ``key: value`` lines, every name as a shell word."""
    return [f"{key}: {_fact_text(key, facts[key])}" for key in FACTS]


def _fact_text(key: str, value: Any) -> str:
    """One fact for a person (None: unknown, shown as ``?``)."""
    if value is None:
        return "?"
    if key == "mode":
        return f"{value:04o}"
    if key in ("name", "owner", "group"):
        return shell_word(value)
    return str(value)


#: The columns of ``ls``'s table: their headings, and the facts they show.
LS_HEADER = ("MESSAGES", "MAX", "SIZE", "MODE", "OWNER", "NAME")
LS_COLUMNS = ("current_messages", "max_messages", "max_message_size", "mode", "owner", "name")


def as_table(queues: List[Dict[str, Any]]) -> str:
    """``ls``'s table of ``queues``: a heading, then a row per queue. Every
    column but the last (the name) is padded: a long name makes no row wider
    but its own."""
    rows = [LS_HEADER] + [tuple(_cell(key, facts) for key in LS_COLUMNS) for facts in queues]
    widths = [max(len(row[column]) for row in rows) for column in range(len(LS_HEADER) - 1)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    )


def _cell(key: str, facts: Dict[str, Any]) -> str:
    """One fact as ``ls`` shows it in its table (the owner by name, or uid)."""
    if key == "owner" and facts["owner"] is None:
        return str(facts["uid"])
    return _fact_text(key, facts[key])
