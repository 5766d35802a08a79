"""Notification: ``mq_notify`` requests, and the callbacks they run.

The kernel keeps at most one request per queue, for one process, and its
rules are easy to trip over (``mq_notify(3)``, ``mq_overview(7)``):

- a request is used up when it fires;
- any close, by this process, of *any* descriptor of the queue cancels this
  process's request: closing another object on the same queue, or a
  listing that opens it, ends a request made through this one;
- replacing a request is a cancel and a new request: another process may
  take the queue's request in between.

So this module never opens or closes a queue itself: to name the holder of
a request it reads ``NOTIFY_PID`` through the object's own descriptor. It
remembers which of this process's objects holds the request on each queue
(by device and inode), so that one object never cancels another's. A
request by callback leaves its callback in this process's registry, under a
token that C hands back to :func:`bp_notified` when it fires, in a thread
glibc starts, and hands the callback to a new Python thread.

It takes a :class:`~baseplate.message_queue.handle.Handle`, and alone
writes its notification token and key. It calls the binding's ``bp_notify``
and reads through the descriptor (``fstat``, ``pread``), holding a use of
the queue (:meth:`~baseplate.message_queue.handle.Handle.holding`) while it
does; the queue object decides when (:meth:`MessageQueue.notify`,
:meth:`MessageQueue.close`, and the fork handler).
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import threading
import weakref
from typing import Callable, Dict, Iterable, Optional, Tuple, Union

from baseplate.message_queue.binding import ffi, lib
from baseplate.message_queue.checks import shown
from baseplate.message_queue.errors import (
    MessageQueueOSError,
    Wording,
    closed_error,
    invalid,
    worded,
)
from baseplate.message_queue.handle import Handle

#: What :meth:`MessageQueue.notify` takes: a signal number, a callable or None.
How = Union[int, Callable[[], object], None]

# Callbacks of the notifications by thread now registered, by their token,
# with the object that asked (to mark it as holding none once it fired).
_callbacks: Dict[int, Tuple[Callable[[], object], weakref.ref[Handle]]] = {}
# Which object of this process holds the request on each queue, by
# (device, inode): its token.
_holders: Dict[Tuple[int, int], int] = {}
_tokens = itertools.count(1)
# Requests are made and cancelled one at a time, in this process: a request
# and the bookkeeping above change together. Reentrant, for a signal handler
# that asks while the code it interrupted holds it; close() takes no lock at
# all (release(), below).
_lock = threading.RLock()


@ffi.def_extern()  # type: ignore[untyped-decorator]
def bp_notified(token: int) -> None:
    """Run by glibc in a thread of its own when a notification fires: hands the
    callback to a Python thread, whose exceptions go to threading.excepthook."""
    with _lock:
        entry = _callbacks.pop(token, None)
        if entry is not None:
            queue = entry[1]()
            if queue is not None and queue.notify_token == token:
                _forget(queue)
    if entry is not None:
        threading.Thread(target=entry[0], name=f"baseplate-mq notify {token}").start()


def _parse(how: How) -> tuple[int, Optional[Callable[[], object]]]:
    """(signal number, callback) of a request; (0, None) cancels."""
    if how is None:
        return 0, None
    if isinstance(how, int) and not isinstance(how, bool):
        if not 0 < how < lib.NSIG:
            raise invalid(
                f"notify({shown(how)}): a signal number is 1 to {lib.NSIG - 1}, "
                "such as signal.SIGUSR1"
            )
        return how, None
    if callable(how):
        return 0, how
    raise TypeError(f"notify() takes a signal number, a callable or None, not {type(how).__name__}")


def request(queue: Handle, how: How) -> None:
    """Make, replace or (``how`` None) cancel ``queue``'s notification request."""
    signum, callback = _parse(how)
    # The use held keeps the descriptor open, and its number ours, while this
    # reads through it: close() may run meanwhile, from a signal handler.
    with _lock, queue.holding() as held:
        if not held or queue.closed:
            raise closed_error(queue.name)
        key = _identity(queue)
        if queue.notify_token:  # this object's own request: cancel it first
            if _holders.get(key) == queue.notify_token and _holder_pid(queue) == os.getpid():
                lib.bp_notify(queue.raw, 0, 0)
            _forget(queue)
        if how is None:
            return  # holding none, this object cancels nothing: not another's request
        token = next(_tokens) if callback is not None else -1
        result = lib.bp_notify(queue.raw, signum, max(token, 0))
        if result == -errno.EBUSY:
            words = Wording(
                "queue {queue} already has a notification request, from {holder}: only one "
                "at a time is allowed. It ends when that one fires, is cancelled "
                "(notify(None)) or its queue is closed",
                queue=queue.name,
                holder=_holder(queue, key),
            )
            raise worded(MessageQueueOSError(errno.EBUSY, str(words)), words)
        if result < 0:
            raise queue.error(-result, "request notification of")
        if callback is not None:
            _callbacks[token] = (callback, weakref.ref(queue))
        queue.notify_token, queue.notify_key = token, key
        _holders[key] = token
        if queue.closed:  # by a signal handler, or another thread, meanwhile
            _forget(queue)


def release(queue: Handle) -> None:
    """``queue`` is being closed: the kernel drops its request with the
    descriptor, and a late notification finds no callback. Takes no lock,
    so that close() works from a signal handler: a request() it interrupts
    looks again, once done, whether its queue was closed."""
    _forget(queue)


def after_fork_in_child(queues: Iterable[Handle]) -> None:
    """A child holds no request (the kernel registers a process, not a
    descriptor), whatever its parent held."""
    global _lock
    _lock = threading.RLock()  # the parent's may have been held by another thread
    _callbacks.clear()
    _holders.clear()
    for queue in queues:
        queue.notify_token, queue.notify_key = 0, None


def _forget(queue: Handle) -> None:
    """Forget ``queue``'s request: each step on its own holds under the GIL,
    and doing it twice is doing it once."""
    token, key = queue.notify_token, queue.notify_key
    queue.notify_token, queue.notify_key = 0, None
    _callbacks.pop(token, None)
    if key is not None and _holders.get(key) == token:
        _holders.pop(key, None)


def _identity(queue: Handle) -> Tuple[int, int]:
    """The queue's (device, inode): which queue it is, whatever its name now."""
    facts = os.fstat(queue.raw.mqd)
    return facts.st_dev, facts.st_ino


def _holder_pid(queue: Handle) -> Optional[int]:
    """The process that holds the queue's request (0: none), read through this
    object's own descriptor: opening another would cancel this process's."""
    try:
        status = os.pread(queue.raw.mqd, 512, 0).decode("ascii", "replace")
    except OSError:  # opened for writing only
        return None
    found = re.search(r"NOTIFY_PID:(\d+)", status)
    return int(found.group(1)) if found else None


def _holder(queue: Handle, key: Tuple[int, int]) -> str:
    """Who holds the request on ``queue``, in words."""
    pid = _holder_pid(queue)
    if pid is None:
        return "another process (or another object in this one)"
    if pid != os.getpid():
        return f"process {pid}"
    if key in _holders:
        return "another MessageQueue object in this process"
    return "this process, through another library"
