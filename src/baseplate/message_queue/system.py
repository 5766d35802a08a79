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


def mount_device(mount: str) -> Optional[int]:
    """The device number (``st_dev``) of the file system mounted at ``mount``:
    the mqueue file system of one IPC namespace, whose queues' descriptors
    all have it (``fstat``), or None if it cannot be read."""
    try:
        return os.stat(mount).st_dev
    except OSError:
        return None


class Notification(NamedTuple):
    """What the mqueue file system says of a queue: its one line,
    ``QSIZE:5 NOTIFY:0 SIGNO:0 NOTIFY_PID:0``."""

    queued_bytes: int  # QSIZE: bytes of messages waiting, not messages
    notify_pid: int  # the process registered for notification; 0: none


def queue_notification(path: str) -> Optional[Notification]:
    """Read ``path`` in the mqueue file system (needs read permission), or
    None if it cannot be read or parsed. NOTIFY is ``sigev_notify``, where
    0 is SIGEV_SIGNAL: a registration shows as NOTIFY_PID other than 0."""
    try:
        with open(path, "rb") as f:
            line = f.read(256)
        fields = dict(item.split(b":", 1) for item in line.split())
        return Notification(int(fields[b"QSIZE"]), int(fields[b"NOTIFY_PID"]))
    except (OSError, ValueError, KeyError):
        return None


class Holder(NamedTuple):
    """A process that has a queue open."""

    pid: int
    uid: Optional[int]
    user: Optional[str]  # the user's name, if the user database has one
    argv: tuple[str, ...]  # its command line (another user's text: show it escaped)


class Holders(NamedTuple):
    """What one walk of ``/proc`` found: the holders of each queue, by its
    ``(st_dev, st_ino)``, and how many processes this user could not inspect
    (other users' descriptors are visible to root only; ``hidepid`` hides
    even their processes, and those are not counted)."""

    by_queue: dict[tuple[int, int], list[Holder]]
    uninspected: int


def queue_holders(queues: set[tuple[int, int]]) -> Holders:
    """The processes that have any of ``queues`` (``(st_dev, st_ino)`` pairs)
    open, in one walk of ``/proc/*/fd``: a descriptor whose ``stat()`` has a
    queue's device and inode holds it (not its link's text, which a file of
    the same name could have). This process, which opens every queue it
    lists, is left out; processes that exit meanwhile are skipped."""
    found: dict[tuple[int, int], list[Holder]] = {}
    uninspected = 0
    if not queues:
        return Holders(found, 0)
    me = os.getpid()
    try:
        entries = os.listdir("/proc")
    except OSError:
        return Holders(found, 0)
    for entry in entries:
        if not entry.isdigit() or int(entry) == me:
            continue
        fd_dir = f"/proc/{entry}/fd"
        try:
            fds = os.listdir(fd_dir)
        except PermissionError:
            uninspected += 1
            continue
        except OSError:  # exited meanwhile
            continue
        held = set()
        for fd in fds:
            try:
                facts = os.stat(f"{fd_dir}/{fd}")
            except OSError:  # closed, or the process exited, meanwhile
                continue
            key = (facts.st_dev, facts.st_ino)
            if key in queues:
                held.add(key)
        if held:
            holder = process(int(entry))
            if holder is None:
                continue  # exited meanwhile
            for key in held:
                found.setdefault(key, []).append(holder)
    for holders in found.values():
        holders.sort()
    return Holders(found, uninspected)


def process(pid: int) -> Optional[Holder]:
    """Process ``pid``'s user and command line, or None if it is gone. A
    process with no command line (a kernel thread, a zombie) gets its name
    in brackets, as ``ps`` shows it."""
    try:
        uid: Optional[int] = os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return None
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read(64 * 1024)
        argv = tuple(os.fsdecode(arg) for arg in raw.rstrip(b"\0").split(b"\0") if raw)
        if not argv:
            with open(f"/proc/{pid}/comm", "rb") as f:
                argv = ("[" + os.fsdecode(f.read().rstrip(b"\n")) + "]",)
    except OSError:
        return None
    return Holder(pid, uid, None if uid is None else user_name(uid), argv)
