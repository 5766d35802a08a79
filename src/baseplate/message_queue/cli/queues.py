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
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Tuple

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
    "fill_percent",
    "notify_pid",
    "holders",
    "uninspected_processes",
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
    """What ``info`` and ``ls`` know of an open queue (its holders are added
    by :func:`add_holders`; ``_key``, its device and inode, is not shown)."""
    mode, uid, gid = queue.mode, queue.uid, queue.gid
    facts = os.fstat(queue.fileno())
    current, most = queue.current_messages, queue.max_messages
    return {
        "_key": (facts.st_dev, facts.st_ino),
        "name": queue.name,
        "max_messages": most,
        "max_message_size": queue.max_message_size,
        "current_messages": current,
        "mode": mode,
        "owner": system.user_name(uid),
        "uid": uid,
        "group": system.group_name(gid),
        "gid": gid,
        "fill_percent": round(100 * current / most, 1),
    }


def stat_facts(name: str, path: str) -> Optional[Dict[str, Any]]:
    """What ``ls`` knows of a queue it may not open: its mode and owner."""
    try:
        facts = os.stat(path)
    except OSError:
        return None  # gone meanwhile
    return {
        "_key": (facts.st_dev, facts.st_ino),
        "name": name,
        "max_messages": None,
        "max_message_size": None,
        "current_messages": None,
        "mode": facts.st_mode & system.MODE_BITS,
        "owner": system.user_name(facts.st_uid),
        "uid": facts.st_uid,
        "group": system.group_name(facts.st_gid),
        "gid": facts.st_gid,
        "fill_percent": None,
    }


def add_holders(queues: List[Dict[str, Any]], device: Optional[int]) -> None:
    """Add to each of ``queues``' facts the processes that hold it (one walk
    of ``/proc`` for all), how many processes could not be inspected, and
    the process registered for notification (0: none; None: unknown), read
    from the mqueue file system (of device ``device``) when it is the
    queue's own."""
    found = system.queue_holders({facts["_key"] for facts in queues})
    for facts in queues:
        facts["holders"] = found.by_queue.get(facts["_key"], [])
        facts["uninspected_processes"] = found.uninspected
        path = system.mqueue_path(facts["name"])
        notification = None
        if path is not None and device == facts["_key"][0]:
            notification = system.queue_notification(path)
        facts["notify_pid"] = None if notification is None else notification.notify_pid


def command_line(argv: Tuple[str, ...]) -> str:
    """A holder's command line (another user's text) as shell words: no
    byte of it can reach a terminal as a control sequence or a new line."""
    return " ".join(shell_word(arg) for arg in argv)


def holder_text(holder: system.Holder) -> str:
    """``PID USER COMMAND`` for a person (the uid where the user has no name)."""
    user = shell_word(holder.user) if holder.user is not None else str(holder.uid)
    return f"{holder.pid} {user} {command_line(holder.argv)}"


def as_json(facts: Dict[str, Any]) -> Dict[str, Any]:
    """Facts for ``--json``: exact, valid JSON. A name that is not UTF-8 is
    also given whole, as ``name_base64`` (as ``dump`` does for payloads)."""
    shown = {key: value for key, value in facts.items() if not key.startswith("_")}
    shown["mode"] = f"{facts['mode']:04o}"
    if "holders" in facts:
        shown["holders"] = [
            {
                "pid": holder.pid,
                "uid": holder.uid,
                "user": None if holder.user is None else json_text(holder.user),
                "command": command_line(holder.argv),
            }
            for holder in facts["holders"]
        ]
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
    lines = []
    for key in FACTS:
        if key not in facts:
            continue
        if key == "holders":
            lines.append(f"holders: {len(facts[key])}")
            lines += [f"holder: {holder_text(holder)}" for holder in facts[key]]
        else:
            lines.append(f"{key}: {_fact_text(key, facts[key])}")
    return lines


def _fact_text(key: str, value: Any) -> str:
    """One fact for a person (None: unknown, shown as ``?``)."""
    if value is None:
        return "?"
    if key == "mode":
        return f"{value:04o}"
    if key == "fill_percent":
        return f"{value:g}%"
    if key in ("name", "owner", "group"):
        return shell_word(value)
    return str(value)


#: The columns of ``ls``'s table: their headings, and the facts they show.
LS_HEADER = ("MESSAGES", "MAX", "FILL", "SIZE", "MODE", "OWNER", "HOLDERS", "NAME")
LS_COLUMNS = (
    "current_messages",
    "max_messages",
    "fill_percent",
    "max_message_size",
    "mode",
    "owner",
    "holders",
    "name",
)


def as_table(
    queues: List[Dict[str, Any]],
    header: Tuple[str, ...] = LS_HEADER,
    columns: Tuple[str, ...] = LS_COLUMNS,
) -> str:
    """``ls``'s table of ``queues``: a heading, then a row per queue. Every
    column but the last (the name) is padded: a long name makes no row wider
    but its own."""
    rows = [header] + [tuple(_cell(key, facts) for key in columns) for facts in queues]
    widths = [max(len(row[column]) for row in rows) for column in range(len(header) - 1)]
    return "\n".join(
        "  ".join([*(c.ljust(w) for c, w in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    )


def _cell(key: str, facts: Dict[str, Any]) -> str:
    """One fact as ``ls`` shows it in its table (the owner by name, or uid)."""
    if key == "owner" and facts["owner"] is None:
        return str(facts["uid"])
    if key == "holders":
        return str(len(facts["holders"]))
    if key == "change":
        return _change(facts.get("change"))
    return _fact_text(key, facts[key])


def _change(value: Optional[int]) -> str:
    """A change in depth: ``+3``, ``-1``, ``0``; ``-`` when unknown (the
    first refresh)."""
    return "-" if value is None else f"{value:+d}" if value else "0"
