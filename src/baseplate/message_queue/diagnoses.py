"""Diagnoses: :func:`error_for`, the one place where an ``errno`` becomes an
exception of :mod:`~baseplate.message_queue.errors`, worded to say why and
what to do.

To explain a refusal it reads system facts through
:mod:`~baseplate.message_queue.system` (the queue's owner and mode in the
mqueue file system, the fs.mqueue sysctls, ``RLIMIT_MSGQUEUE``, the
descriptor limit); it never calls into a queue, and writes nothing.
"""

from __future__ import annotations

import errno
import os
from typing import Any, Dict, Optional, Tuple

from baseplate.message_queue import system
from baseplate.message_queue.errors import (
    InvalidParametersError,
    MessageQueueError,
    MessageQueueOSError,
    MessageTooLargeError,
    QueueExistsError,
    QueueNotFoundError,
    QueuePermissionError,
    Wording,
    closed_error,
    invalid,
    os_error,
    worded,
)


def error_for(
    err: int,
    name: str,
    operation: str,
    *,
    closed: bool = False,
    opened_for: Optional[str] = None,
    size: int = 0,
    max_messages: int = 0,
    max_message_size: int = 0,
    wanted: Optional[str] = None,
    ownership: Optional[Tuple[int, int, int]] = None,
) -> MessageQueueError:
    """Build the exception for ``errno`` ``err`` from ``operation`` on queue ``name``.

    ``closed`` and ``opened_for`` ("reading" or "writing" when the object was
    opened for one direction only) explain an ``EBADF`` from an object;
    ``size`` is the message's, the sizes those of the queue (asked for, when
    creating; else its own ``max_message_size``). ``wanted`` is what the
    caller asked to open it for (``read=``, ``write=``), for a refusal;
    ``ownership`` the queue's (mode, uid, gid) from its descriptor, for an
    object opened for one direction only.
    """
    if err == errno.EBADF and closed:
        return closed_error(name)
    if err == errno.EBADF and opened_for is not None:
        whose = ""
        fields: Dict[str, Any] = {}
        if ownership is not None:
            mode, uid, gid = ownership
            whose = " (it belongs to {owner}, uid {uid}, group {group}, mode {queue_mode:04o})"
            fields = {
                "owner": system.user_name(uid) or str(uid),
                "uid": uid,
                "group": system.group_name(gid) or str(gid),
                "queue_mode": mode,
            }
        return os_error(
            QueuePermissionError,
            errno.EACCES,
            "cannot {operation} on queue {queue}: it was opened for {direction} only, "
            "because read=/write= asked so, or its mode does not grant this user both read "
            "and write access" + whose,
            operation=operation,
            queue=name,
            direction=opened_for,
            **fields,
        )
    if err == errno.EMSGSIZE:
        words = Wording(
            "message of {size} bytes is longer than queue {queue} allows "
            "(max_message_size={limit}); nothing was sent",
            size=size,
            queue=name,
            limit=max_message_size,
        )
        return worded(MessageTooLargeError(str(words), size, max_message_size), words)
    if err == errno.ENOENT:
        advice = "" if operation == "unlink" else ": create it first, or open it with create=True"
        return os_error(
            QueueNotFoundError, err, "queue {queue} does not exist" + advice, queue=name
        )
    if err == errno.EEXIST:
        return os_error(
            QueueExistsError, err, "queue {queue} already exists (exclusive=True)", queue=name
        )
    if err in (errno.EACCES, errno.EPERM):
        return _refused(err, name, operation, wanted)
    if operation == "create" and err == errno.EINVAL:
        return _invalid_sizes(name, max_messages, max_message_size)
    if operation == "create" and err in (errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.ENOMEM):
        return _no_room(err, name, max_messages, max_message_size)
    return os_error(
        MessageQueueOSError,
        err,
        "{operation} on queue {queue} failed: {reason}",
        operation=operation,
        queue=name,
        reason=os.strerror(err),
    )


def _refused(
    err: int, name: str, operation: str, wanted: Optional[str] = None
) -> QueuePermissionError:
    """Permission denied: say whose queue it is, with what mode, and what to do.

    Without the mqueue mount the owner and mode cannot be read (``ls`` shows
    ``?``): then say how to mount it. Never probe by opening the queue.
    """
    owner = system.queue_owner(name)
    asked = "" if wanted is None else f" for {wanted}"
    use = "read and write it" if wanted is None else f"open it for {wanted}"
    if owner is None:
        return os_error(
            QueuePermissionError,
            err,
            "permission denied to {operation} queue {queue}"
            + asked
            + ": its mode does not allow this "
            "user (mount the mqueue file system to see its owner and mode: {mount}). A "
            "queue is shared by creating it with mode=0o660 (--mode 660) and giving it a "
            "group this user is in",
            operation=operation,
            queue=name,
            mount=system.MOUNT_COMMAND,
        )
    # The fields both refusals below name: the queue, and whose it is.
    whose: Dict[str, Any] = {
        "operation": operation,
        "queue": name,
        "owner": owner.user or str(owner.uid),
        "uid": owner.uid,
        "group": system.group_name(owner.gid) or str(owner.gid),
        "queue_mode": owner.mode,
    }
    if owner.uid == os.geteuid():
        return os_error(
            QueuePermissionError,
            err,
            "permission denied to {operation} queue {queue}" + asked + ": it is this user's own "
            "({owner}, uid {uid}, group {group}), but its mode {queue_mode:04o} does not allow "
            "even its owner to " + use + ". Its owner may change that (chmod 600 {path}), or "
            "re-create the queue",
            path=system.mqueue_path(name),
            **whose,
        )
    return os_error(
        QueuePermissionError,
        err,
        "permission denied to {operation} queue {queue}" + asked + ": it belongs to {owner} "
        "(uid {uid}), "
        "group {group} (gid {gid}), mode {queue_mode:04o}. To share a queue, its owner "
        "creates it with mode=0o660 (--mode 660) and gives it a group this user is in, or "
        "the consumer runs as {owner} too",
        gid=owner.gid,
        **whose,
    )


def _invalid_sizes(name: str, max_messages: int, max_message_size: int) -> InvalidParametersError:
    """Say which size the kernel refused on create, and which limit it hit.

    The fs.mqueue sysctls bind every process without CAP_SYS_RESOURCE in the
    initial user namespace, which includes root in most containers.
    """
    problems = []
    fields: Dict[str, Any] = {"queue": name}
    for what, value, sysctl, hard in (
        ("max_messages", max_messages, "msg_max", system.HARD_MSGMAX),
        ("max_message_size", max_message_size, "msgsize_max", system.HARD_MSGSIZEMAX),
    ):
        limit = system.read_sysctl(sysctl)
        fields[what] = value
        if value > hard:
            problems.append(
                f"{{{what}}} exceeds the kernel's hard limit of {hard}, which no setting raises"
            )
        elif limit is not None and value > limit:
            problems.append(
                f"{{{what}}} exceeds fs.mqueue.{sysctl}={limit}: ask for at most {limit}, "
                f"or raise the limit as root (sysctl -w fs.mqueue.{sysctl}={value})"
            )
    if not problems:
        problems.append("the kernel refused {max_messages}, {max_message_size} (EINVAL)")
    return invalid("cannot create queue {queue}: " + "; ".join(problems), **fields)


def _no_room(err: int, name: str, max_messages: int, max_message_size: int) -> MessageQueueOSError:
    """Explain EMFILE / ENFILE / ENOSPC / ENOMEM from mq_open."""
    if err == errno.EMFILE:
        descriptors = system.descriptors_exhausted()
        if descriptors is not None:
            return os_error(
                MessageQueueOSError,
                err,
                "cannot open queue {queue}: this process has all {descriptors} of its file "
                "descriptors open (ulimit -n); close some or raise the limit",
                queue=name,
                descriptors=descriptors,
            )
        return _allowance_used(err, name, max_messages, max_message_size)
    if err == errno.ENOSPC:
        return os_error(
            MessageQueueOSError,
            err,
            "cannot create queue {queue}: the system already has the most queues allowed "
            "(fs.mqueue.queues_max={limit}). Unlink unused queues (baseplate-mq ls lists "
            "them, once mqueue is mounted) or raise the limit as root",
            queue=name,
            limit=system.read_sysctl("queues_max"),
        )
    if err == errno.ENFILE:
        return os_error(
            MessageQueueOSError,
            err,
            "cannot open queue {queue}: the system-wide limit on open files is reached",
            queue=name,
        )
    return os_error(
        MessageQueueOSError,
        err,
        "cannot create queue {queue}: the kernel is out of memory for it",
        queue=name,
    )


def _allowance_used(
    err: int, name: str, max_messages: int, max_message_size: int
) -> MessageQueueOSError:
    """EMFILE for want of ``ulimit -q``: what this queue needs against the allowance."""
    needed = system.queue_bytes(max_messages, max_message_size)
    allowance = system.msgqueue_rlimit()
    fields = {
        "queue": name,
        "max_messages": max_messages,
        "max_message_size": max_message_size,
        "needed": needed,
        "allowance": allowance,
    }
    if needed > allowance:
        return os_error(
            MessageQueueOSError,
            err,
            "cannot create queue {queue}: with {max_messages} and {max_message_size} it "
            "needs about {needed} bytes, more than this user's whole message queue allowance "
            "(RLIMIT_MSGQUEUE, ulimit -q = {allowance} bytes). Create a smaller queue, or "
            "raise the limit (ulimit -q, or LimitMSGQUEUE= for a systemd service)",
            **fields,
        )
    return os_error(
        MessageQueueOSError,
        err,
        "cannot create queue {queue}: it needs about {needed} bytes of this user's message "
        "queue allowance (RLIMIT_MSGQUEUE, ulimit -q = {allowance} bytes), and the user's "
        "other queues (open in any process, unlinked or not) hold the rest. Unlink or close "
        "queues that are no longer needed, create a smaller one, or raise the limit (ulimit "
        "-q, or LimitMSGQUEUE= for a systemd service)",
        **fields,
    )
