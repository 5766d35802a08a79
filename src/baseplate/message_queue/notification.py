"""Notification: ``mq_notify`` requests, and the callbacks they run.

The kernel keeps at most one request per queue, for one process. A request
by signal needs nothing here once made; a request by callback leaves its
callback in this process's registry, under a token that C hands back to
:func:`bp_notified` when it fires, in a thread glibc starts.

This module calls the binding's ``bp_notify`` only; the queue object decides
when (:meth:`MessageQueue.notify`, :meth:`MessageQueue.close`).
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import threading
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from baseplate.message_queue._mqueue import ffi, lib

from baseplate.message_queue.errors import (
    InvalidParametersError,
    MessageQueueError,
    MessageQueueOSError,
    about,
    closed_error,
)
from baseplate.message_queue.system import mqueue_mount

if TYPE_CHECKING:  # pragma: no cover
    from typing import Protocol

    class Notifiable(Protocol):
        """What a request needs of a queue object."""

        name: str
        _queue: Any  # its struct bp_queue *
        _closed: bool
        _close_lock: threading.Lock
        _notify_token: int

        def _error(self, err: int, operation: str, size: int = 0) -> MessageQueueError: ...


#: What :meth:`MessageQueue.notify` takes: a signal number, a callable or None.
How = Union[int, Callable[[], object], None]

# Callbacks of the notifications by thread now registered, by their token.
_callbacks: dict[int, Callable[[], object]] = {}
_tokens = itertools.count(1)


@ffi.def_extern()  # type: ignore[untyped-decorator]
def bp_notified(token: int) -> None:
    """Run by glibc in a thread of its own when a notification fires: hands the
    callback to a Python thread, whose exceptions go to threading.excepthook."""
    callback = _callbacks.pop(token, None)
    if callback is not None:
        threading.Thread(target=callback, name=f"baseplate-mq notify {token}").start()


def _parse(how: How) -> tuple[int, Optional[Callable[[], object]]]:
    """(signal number, callback) of a request; (0, None) cancels."""
    if how is None:
        return 0, None
    if isinstance(how, int) and not isinstance(how, bool):
        if not 0 < how < lib.NSIG:
            raise InvalidParametersError(
                f"notify({how}): a signal number is 1 to {lib.NSIG - 1}, such as signal.SIGUSR1"
            )
        return how, None
    if callable(how):
        return 0, how
    raise TypeError(f"notify() takes a signal number, a callable or None, not {type(how).__name__}")


def request(queue: Notifiable, how: How) -> None:
    """Make, replace or (``how`` None) cancel ``queue``'s notification request."""
    signum, callback = _parse(how)
    with queue._close_lock:
        if queue._closed:
            raise closed_error(queue.name)
        previous, queue._notify_token = queue._notify_token, 0
        if previous:  # this object's own request: replace it
            _callbacks.pop(previous, None)
            lib.bp_notify(queue._queue, 0, 0)
        token = 0
        if callback is not None:
            token = next(_tokens)
            _callbacks[token] = callback
        result = lib.bp_notify(queue._queue, signum, token)
        if result < 0:
            _callbacks.pop(token, None)
            if result == -errno.EBUSY:
                raise about(
                    MessageQueueOSError(
                        errno.EBUSY,
                        f"queue {queue.name!r} already has a notification request, from "
                        f"{_holder(queue.name)}: only one at a time is allowed. It ends when "
                        "that one fires, is cancelled (notify(None)) or its queue is closed",
                    ),
                    queue.name,
                )
            raise queue._error(-result, "request notification of")
        queue._notify_token = token if callback is not None else -1 if signum else 0


def forget(token: int) -> None:
    """Drop the callback of a request that can no longer fire (its queue closed)."""
    _callbacks.pop(token, None)


def _holder(name: str) -> str:
    """Which process holds the notification of queue ``name``, if the mqueue
    file system shows it (its NOTIFY_PID field)."""
    mount = mqueue_mount()
    if mount is not None:
        try:
            with open(os.path.join(mount, name.lstrip("/"))) as status:
                found = re.search(r"NOTIFY_PID:(\d+)", status.read())
        except OSError:
            found = None
        if found and found.group(1) != "0":
            return f"process {found.group(1)}"
    return "another process (or another object in this one)"
