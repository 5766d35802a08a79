"""Facts of the system that explain a queue: limits, the mqueue mount, owners.

Read-only: this module reads ``/proc``, the mqueue file system and the user
database, and never opens a queue (closing any descriptor of a queue would
cancel this process's notification request on it). It loads no binding, so
that errors can be explained, and the command line can start, without it.
"""

from __future__ import annotations

import errno
import grp
import os
import pwd
import resource
from typing import NamedTuple, Optional

# The kernel's own ceilings, which bind even privileged users (ipc/mqueue.c).
HARD_MSGMAX = 65536
HARD_MSGSIZEMAX = 16 * 1024 * 1024
# Per-message bookkeeping the kernel charges to RLIMIT_MSGQUEUE (64-bit).
KERNEL_BYTES_PER_MESSAGE = 96
#: Permission bits as this package shows and compares them, everywhere
#: (fstat in C masks the same): the set-id and sticky bits included.
MODE_BITS = 0o7777
#: How to mount the mqueue file system, which shows queues' names and owners.
MOUNT_COMMAND = "mkdir -p /dev/mqueue && mount -t mqueue none /dev/mqueue"


def read_sysctl(name: str) -> Optional[int]:
    """The value of ``fs.mqueue.<name>``, or None if it cannot be read."""
    try:
        with open(f"/proc/sys/fs/mqueue/{name}") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def msgqueue_rlimit() -> int:
    """The soft ``ulimit -q`` (RLIMIT_MSGQUEUE) of this process, in bytes."""
    from baseplate.message_queue.binding import lib  # PyPy's resource does not name it

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


def mqueue_path(name: str) -> Optional[str]:
    """Where queue ``name`` shows in the mqueue file system, if it is mounted."""
    mount = mqueue_mount()
    return None if mount is None else os.path.join(mount, name.lstrip("/"))


class Owner(NamedTuple):
    """Who owns a queue, and its mode."""

    uid: int
    gid: int
    mode: int
    user: Optional[str]  # the user's name, if the user database has one


def queue_owner(name: str) -> Optional[Owner]:
    """Who owns queue ``name``, read from the mqueue file system (the only
    place that shows it without opening the queue), or None if it cannot be
    read: not mounted, or gone."""
    path = mqueue_path(name)
    if path is None:
        return None
    try:
        facts = os.stat(path)
    except OSError:
        return None
    return Owner(facts.st_uid, facts.st_gid, facts.st_mode & MODE_BITS, user_name(facts.st_uid))


def user_name(uid: int) -> Optional[str]:
    """The name of user ``uid``, or None."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None


def group_name(gid: int) -> Optional[str]:
    """The name of group ``gid``, or None."""
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return None
