"""Facts of the system that explain a queue: limits, the mqueue mount, owners.

Read-only: this module reads ``/proc``, the mqueue file system and the user
database, and never opens a queue (closing any descriptor of a queue would
cancel this process's notification request on it). It loads no binding, so
that errors can be explained, and the command line can start, without it.
"""

from __future__ import annotations

import errno
import os
import pwd
import resource
from typing import Optional

# The kernel's own ceilings, which bind even privileged users (ipc/mqueue.c).
HARD_MSGMAX = 65536
HARD_MSGSIZEMAX = 16 * 1024 * 1024
# Per-message bookkeeping the kernel charges to RLIMIT_MSGQUEUE (64-bit).
KERNEL_BYTES_PER_MESSAGE = 96


def read_sysctl(name: str) -> Optional[int]:
    """The value of ``fs.mqueue.<name>``, or None if it cannot be read."""
    try:
        with open(f"/proc/sys/fs/mqueue/{name}") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def msgqueue_rlimit() -> int:
    """The soft ``ulimit -q`` (RLIMIT_MSGQUEUE) of this process, in bytes."""
    from baseplate.message_queue._mqueue import lib  # PyPy's resource does not name it

    soft, _ = resource.getrlimit(lib.RLIMIT_MSGQUEUE)
    return soft


def queue_bytes(max_messages: int, max_message_size: int) -> int:
    """About what a queue of these sizes takes of its owner's ``ulimit -q``."""
    return max_messages * (max_message_size + KERNEL_BYTES_PER_MESSAGE)


def descriptors_exhausted() -> Optional[int]:
    """This process's ``ulimit -n`` if all its descriptors are open, else None."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return None
    try:
        full = len(os.listdir("/proc/self/fd")) >= soft - 1
    except OSError as error:  # listing needs a descriptor too: none left proves it
        full = error.errno == errno.EMFILE
    return soft if full else None


def mqueue_mount() -> Optional[str]:
    """Where the mqueue file system is mounted (usually ``/dev/mqueue``), or None."""
    try:
        with open("/proc/self/mounts") as mounts:
            for line in mounts:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "mqueue":
                    return fields[1].replace("\\040", " ")
    except OSError:
        pass
    return None


def owner_and_mode(name: str) -> str:
    """Who owns queue ``name`` and its mode, for a refusal: read from the
    mqueue file system, the only place they show without opening the queue."""
    mount = mqueue_mount()
    if mount is None:
        return (
            "its mode does not allow this user (mount the mqueue file system to see its "
            "owner and mode: mkdir -p /dev/mqueue && mount -t mqueue none /dev/mqueue)."
        )
    try:
        facts = os.stat(os.path.join(mount, name.lstrip("/")))
    except OSError:
        return "its owner and mode do not allow this user."
    try:
        owner = f"{pwd.getpwuid(facts.st_uid).pw_name} (uid {facts.st_uid})"
    except KeyError:
        owner = f"uid {facts.st_uid}"
    return f"it belongs to {owner}, gid {facts.st_gid}, mode {facts.st_mode & 0o777:04o}."
