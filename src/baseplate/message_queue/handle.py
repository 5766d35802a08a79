"""The handle: one open queue's raw state, below every module that uses it.

A :class:`Handle` owns what the C helpers see (the ``struct bp_queue *``:
the descriptor and the state that makes close() safe while other threads
use the queue, ``mqueue_helpers.c``), and the Python state about it: its
name, sizes and access, the closed flag, the uses Python code holds
(:meth:`Handle.holding`), the notification request's token and key (which
:mod:`~baseplate.message_queue.notification` alone changes) and the
event-loop waits (an :class:`~baseplate.message_queue.event_loop.AsyncWaits`,
which :mod:`~baseplate.message_queue.event_loop` alone drives). The receive
buffer pools are not here: the one of :meth:`MessageQueue.get` is the queue
object's, the one of :meth:`MessageQueue.get_many` its batch calls'
(:mod:`~baseplate.message_queue.batches`).

This module opens queues (``bp_open``, probing which access the queue's
mode grants, and again after ``EACCES``), reads their attributes and
ownership (``bp_getattr``, ``bp_fstat``), closes them (``bp_close``), and
makes their exceptions (:meth:`Handle.error`, through
:func:`~baseplate.message_queue.diagnoses.error_for`). It keeps the registry of
handles the fork handler walks (:func:`open_handles`,
:func:`after_fork_in_child`); it neither sends, receives nor waits.
"""

from __future__ import annotations

import contextlib
import errno
import threading
import weakref
from typing import Any, Dict, Iterator, List, Optional, Set, Tuple

from baseplate.message_queue.binding import ffi, lib
from baseplate.message_queue.diagnoses import error_for
from baseplate.message_queue.errors import MessageQueueError, closed_error, invalid

_Buffer = Any  # (data pointer for the helpers, a cffi buffer over it, its owner)
_BUFFER_HEADER = ffi.offsetof("struct bp_buffer", "data")
# Receive buffers are filled by the kernel: zeroing them first is wasted work.
_alloc = ffi.new_allocator(should_clear_after_alloc=False)

# The ways to open a queue, tried in turn, by what the caller asked for
# (read=, write=: None is "if the mode grants it"): both directions first,
# then the one its mode grants this user. Each refused try opens nothing.
_ACCESSES: Dict[Tuple[Optional[bool], Optional[bool]], Tuple[int, ...]] = {
    (None, None): (lib.O_RDWR, lib.O_RDONLY, lib.O_WRONLY),
    (True, None): (lib.O_RDWR, lib.O_RDONLY),
    (None, True): (lib.O_RDWR, lib.O_WRONLY),
    (True, True): (lib.O_RDWR,),
    (True, False): (lib.O_RDONLY,),
    (None, False): (lib.O_RDONLY,),
    (False, True): (lib.O_WRONLY,),
    (False, None): (lib.O_WRONLY,),
}
# What a refusal says was asked for.
_WANTED = {
    (lib.O_RDWR,): "reading and writing",
    (lib.O_RDONLY,): "reading",
    (lib.O_WRONLY,): "writing",
    (lib.O_RDWR, lib.O_RDONLY): "reading",
    (lib.O_RDWR, lib.O_WRONLY): "writing",
}


class AsyncWaiting:
    """What a handle needs of its event-loop waits, whatever drives them
    (:class:`~baseplate.message_queue.event_loop.AsyncWaits`): to fail them
    on close, and to forget them in a child after fork(). Waits nothing itself."""

    def shut(self, error: BaseException) -> None:
        """The queue was closed: fail every waiting task with ``error``."""

    def after_fork_in_child(self) -> None:
        """Forget every registration, touching no loop."""


_NO_ASYNC_WAITS = AsyncWaiting()


class Handle:
    """One open queue: the ``struct bp_queue *`` and the state about it.

    Made by :func:`open_handle`; the attributes are read by the modules
    above (waiting, event_loop, notification, batches, queue), and written
    only where this class's docstring of each says.
    """

    __slots__ = (
        "__weakref__",
        "access",
        "async_waits",
        "closed",
        "maxmsg",
        "msgsize",
        "name",
        "notify_key",
        "notify_token",
        "python_holds",
        "raw",
    )

    def __init__(self, raw: Any, name: str, access: int, maxmsg: int, msgsize: int) -> None:
        #: The ``struct bp_queue *`` the helpers take.
        self.raw = raw
        #: The queue's name, as given.
        self.name = name
        #: How it was opened: ``O_RDWR``, or one direction its mode granted.
        self.access = access
        #: The kernel's sizes for this queue.
        self.maxmsg = maxmsg
        self.msgsize = msgsize
        #: Set by :meth:`close`, before anything else; never cleared.
        self.closed = False
        #: Uses held by Python code (:meth:`holding`), by thread: after fork()
        #: the child keeps those of its own thread (its greenlets) only.
        self.python_holds: Dict[int, int] = {}
        #: This handle's notification request: the callback's token, -1 for a
        #: signal, 0 for none; and the queue's (device, inode) while it holds
        #: one. Written by :mod:`~baseplate.message_queue.notification` only.
        self.notify_token = 0
        self.notify_key: Optional[Tuple[int, int]] = None
        #: Event-loop waits on this queue; set by the queue object, driven by
        #: :mod:`~baseplate.message_queue.event_loop` only.
        self.async_waits: AsyncWaiting = _NO_ASYNC_WAITS

    def error(self, err: int, operation: str, size: int = 0) -> MessageQueueError:
        """The exception for ``errno`` ``err`` from ``operation`` on this queue."""
        opened_for = {lib.O_RDONLY: "reading", lib.O_WRONLY: "writing"}.get(self.access)
        ownership = None
        if err == errno.EBADF and opened_for is not None and not self.closed:
            with contextlib.suppress(MessageQueueError):
                ownership = self.ownership()  # fstat: needs no mount
        return error_for(
            err,
            self.name,
            operation,
            closed=self.closed,
            opened_for=opened_for,
            size=size,
            max_message_size=self.msgsize,
            ownership=ownership,
        )

    def new_buffer(self) -> _Buffer:
        """A receive buffer: (pointer to its data, a cffi buffer over the data
        to slice messages out of, the memory that owns both)."""
        memory = _alloc("char[]", _BUFFER_HEADER + self.msgsize)
        header = ffi.cast("struct bp_buffer *", memory)
        header.queue = self.raw
        return (header.data, ffi.buffer(header.data, self.msgsize), memory)

    def current_messages(self) -> int:
        """How many messages are in the queue right now."""
        attr = ffi.new("struct mq_attr *")
        result = lib.bp_getattr(self.raw, attr)
        if result < 0:
            raise self.error(-result, "inspect")
        return int(attr.mq_curmsgs)

    def ownership(self) -> Tuple[int, int, int]:
        """(mode, uid, gid) of the queue, from fstat() on its descriptor."""
        cells = ffi.new("unsigned int[3]")
        result = lib.bp_fstat(self.raw, cells, cells + 1, cells + 2)
        if result < 0:
            raise self.error(-result, "inspect")
        return cells[0], cells[1], cells[2]

    @contextlib.contextmanager
    def holding(self) -> Iterator[bool]:
        """Hold a use of the queue while Python code works with its descriptor
        (a cooperative wait, a notification request), so that the descriptor
        stays open, and is not reused, even if close() runs meanwhile from a
        signal handler or another thread. Yields False if it is closed already.

        Counted by thread, before it is taken: after fork() the child keeps the
        holds of its own thread (its greenlets) only.
        """
        raw, holds = self.raw, self.python_holds
        thread = threading.get_ident()
        holds[thread] = holds.get(thread, 0) + 1
        if not lib.bp_hold(raw):
            _let_go(holds, thread)
            yield False
            return
        try:
            yield True
        finally:
            lib.bp_unhold(raw)
            _let_go(holds, thread)

    def close(self) -> None:
        """Mark the queue closed and wake every wait on it, in C, gevent and
        event loops; the descriptors are released by the last call still
        using them. Takes no lock: a signal handler may call it."""
        self.closed = True
        lib.bp_close(self.raw)
        self.async_waits.shut(closed_error(self.name, was=True))


def _let_go(holds: Dict[int, int], thread: int) -> None:
    """One hold fewer for ``thread``."""
    left = holds.pop(thread, 1) - 1
    if left:
        holds[thread] = left


# --------------------------------------------------------------------------
# Opening


def accesses(read: Optional[bool], write: Optional[bool]) -> Tuple[int, ...]:
    """The ways to open a queue for ``read=`` and ``write=``, in the order tried."""
    if read is False and write is False:
        raise invalid("read=False and write=False: a queue must be opened for one of them")
    return _ACCESSES[read, write]


def _open(
    raw: Any, name: bytes, flags: int, mode: int, sizes: Tuple[int, int], ways: Tuple[int, ...]
) -> Tuple[int, int]:
    """Open queue ``name`` into ``raw``: (result, access), result 0 or -errno."""
    access = ways[0]
    for access in ways:
        result: int = lib.bp_open(raw, name, flags | access, mode, *sizes)
        if result != -errno.EACCES:
            break
    return result, access


def open_handle(
    name: str,
    raw_name: bytes,
    mode: int,
    create: bool,
    exclusive: bool,
    max_messages: int,
    max_message_size: int,
    read: Optional[bool] = None,
    write: Optional[bool] = None,
) -> Handle:
    """Open (or create) the queue, in both directions if its mode allows,
    else in the one it grants, as ``read`` and ``write`` allow (None: if
    granted; see :class:`~baseplate.message_queue.MessageQueue`); raise the
    error for a refusal. A refused direction is never probed by opening
    another: closing that descriptor would cancel this process's
    notification request on the queue."""
    ways = accesses(read, write)
    raw = ffi.new("struct bp_queue *")
    raw.mqd = -1  # until opened
    _track(raw)
    try:
        flags = (lib.O_CREAT if create else 0) | (lib.O_EXCL if exclusive else 0)
        sizes = (max_messages, max_message_size)
        result, access = _open(raw, raw_name, flags, mode, sizes, ways)
        operation = "create" if create else "open"
        if result == -errno.EACCES and create and not exclusive:
            # Refused with O_CREAT: opening one that exists, or creating one?
            # Ask without: that never creates, and refused, opens nothing (a
            # probe opened and closed would cancel this process's request for
            # notification on the queue).
            result, access = _open(raw, raw_name, 0, mode, sizes, ways)
            operation = "create" if result == -errno.ENOENT else "open"
            result = -errno.EACCES if result == -errno.ENOENT else result
        if result < 0:
            raise error_for(
                -result,
                name,
                operation,
                max_messages=max_messages,
                max_message_size=max_message_size,
                wanted=_WANTED.get(ways),
            )
    except BaseException:
        _handles.discard(raw)  # nothing was opened
        raise
    attr = ffi.new("struct mq_attr *")
    lib.bp_getattr(raw, attr)
    handle = Handle(raw, name, access, attr.mq_maxmsg, raw.msgsize)
    _open_handles.add(handle)
    return handle


# --------------------------------------------------------------------------
# The registry the fork handler walks: every handle in use; and every raw
# handle whose descriptors may still be open, with or without its Handle (one
# being opened in some thread, or whose Handle is gone while a call in
# another thread still uses it).

_open_handles: weakref.WeakSet[Handle] = weakref.WeakSet()
_handles: Set[Any] = set()


def _track(raw: Any) -> None:
    """Count ``raw`` among those the fork handler looks at, and forget
    those already released."""
    for done in [h for h in _handles if h.mqd < 0 and lib.bp_is_closed(h)]:
        _handles.discard(done)
    _handles.add(raw)


def open_handles() -> List[Handle]:
    """Every handle still in use: the fork handler's one way in to the state
    of every open queue (each handle carries all of it)."""
    # Through its guarded iterator: list() would ask len() first, which on
    # PyPy walks the set unguarded, and a weakref callback run by a garbage
    # collection meanwhile makes it raise (and the fork hook do nothing).
    return [handle for handle in _open_handles]


def after_fork_in_child(handles: List[Handle]) -> None:
    """In a child after fork(): it has its own wake descriptors and only the
    forking thread. The uses that other threads' greenlets and every event
    loop held there are dropped, without touching a loop (the child shares
    the parent's epoll instances); descriptors no handle of the child can
    reach are closed: nobody there will close them."""
    reachable = {handle.raw for handle in handles}
    for raw in list(_handles):
        if raw not in reachable and raw.mqd >= 0:
            lib.bp_after_fork(raw, 0)
            lib.bp_close(raw)
    for handle in handles:
        handle.async_waits.after_fork_in_child()
        kept = _keep_this_threads_holds(handle.python_holds)
        lib.bp_after_fork(handle.raw, kept)
        if handle.closed and not lib.bp_is_closed(handle.raw):
            lib.bp_close(handle.raw)  # a close() another thread had begun


def _keep_this_threads_holds(holds: Dict[int, int]) -> int:
    """Forget the holds of the threads that did not come along; return how
    many this thread's greenlets keep."""
    mine = holds.get(threading.get_ident(), 0)
    holds.clear()
    if mine:
        holds[threading.get_ident()] = mine
    return mine
