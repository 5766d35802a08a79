"""Queues as the commands see them: opened (and created, said on stderr),
checked against what ``create`` asked for, and described for ``info`` and
``ls``.
"""

from __future__ import annotations

import grp
import os
import pwd
from typing import TYPE_CHECKING, Any, Dict, Optional

from baseplate.message_queue.cli.exits import CommandFailed
from baseplate.message_queue.cli.words import note
from baseplate.message_queue.errors import QueueExistsError, QueueNotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from baseplate.message_queue.queue import MessageQueue


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
        "mode": f"{facts.st_mode & 0o777:04o}",
        "owner": user_name(facts.st_uid),
        "uid": facts.st_uid,
        "group": group_name(facts.st_gid),
        "gid": facts.st_gid,
    }


def effective_mode(mode: int) -> int:
    """``mode`` as a queue created now would get it: the umask removed."""
    umask = os.umask(0)
    os.umask(umask)
    return mode & ~umask


def open_queue(
    name: str,
    max_messages: int,
    max_message_size: int,
    create: bool,
    mode: int,
    announce: bool = True,
) -> tuple[MessageQueue, bool]:
    """Open queue ``name``, creating it if asked and missing; also say whether
    this call created it (then, with ``announce``, one line on stderr says so)."""
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
                if announce:
                    note(
                        f"created queue {name}: max_messages={queue.max_messages} "
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
    """Fail unless the existing ``queue`` has the sizes and mode asked for."""
    have = (queue.max_messages, queue.max_message_size, queue.mode)
    if have == (max_messages, max_message_size, mode):
        return
    queue.close()

    def described(sizes: tuple[int, int, int]) -> str:
        return f"--max-messages {sizes[0]} --max-message-size {sizes[1]} --mode {sizes[2]:03o}"

    raise CommandFailed(
        f"queue {queue.name} already exists with {described(have)}, not "
        f"{described((max_messages, max_message_size, mode))}. A queue's sizes and mode "
        f"cannot change: to re-create it (its messages are lost), run "
        f"'baseplate-mq unlink {queue.name}' and this command again"
    )


def user_name(uid: int) -> Optional[str]:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def group_name(gid: int) -> Optional[str]:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None


def queue_facts(queue: MessageQueue) -> Dict[str, Any]:
    """What ``info`` and ``ls`` show of an open queue."""
    mode, uid, gid = queue.mode, queue.uid, queue.gid
    return {
        "name": queue.name,
        "max_messages": queue.max_messages,
        "max_message_size": queue.max_message_size,
        "current_messages": queue.current_messages,
        "mode": f"{mode:04o}",
        "owner": user_name(uid),
        "uid": uid,
        "group": group_name(gid),
        "gid": gid,
    }
