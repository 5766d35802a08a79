"""The queue: :class:`MessageQueue`, its fast paths, and :func:`unlink`.

How a call runs: its arguments are checked first
(:mod:`~baseplate.message_queue.checks`), then it *tries*, whatever its
timeout: one call into C, a plain ``mq_send``/``mq_receive`` on the queue's
non-blocking descriptor, which keeps the GIL (see ``build_ffi.KEEPS_GIL``).
Only if that would block does it go on to wait, in one place,
:mod:`~baseplate.message_queue.waiting`. A failure becomes an exception in
one place too, :func:`~baseplate.message_queue.errors.error_for`.

This module owns the queue's descriptor (through the binding's ``bp_*``
helpers) and its life cycle: open, fork, close.
"""

from __future__ import annotations

import errno
import os
import warnings
import weakref
from collections import deque
from typing import TYPE_CHECKING, Any, NoReturn, Optional, Union

from baseplate.message_queue._mqueue import ffi, lib

from baseplate.message_queue import event_loop, notification, waiting
from baseplate.message_queue.batches import BatchBuffer, BatchCalls
from baseplate.message_queue.checks import (
    PRIORITY_MAX,
    TIMEOUT_MAX,
    TIMEOUT_MAX_INT,
    MessageData,
    as_bytes_like,
    check_mode,
    check_priority,
    check_size,
    check_timeout,
    encode_name,
    not_writable,
)
from baseplate.message_queue.errors import MessageQueueError, closed_error, error_for, invalid
from baseplate.message_queue.message import LENGTH_MASK, PACK_SHIFT, Message, message_at

if TYPE_CHECKING:  # pragma: no cover
    from types import TracebackType

# put()'s default priority: a fast path tests `priority is _LOWEST` first.
_LOWEST = 0

_from_buffer = ffi.from_buffer
_CHAR_ARRAY = ffi.typeof("char[]")
_Buffer = Any  # (data pointer for the helpers, a cffi buffer over it, its owner)
# The first attempts, bound once: looking them up on `lib` costs on every call.
_bp_try_put = lib.bp_try_put
_bp_try_get = lib.bp_try_get
_bp_try_get_into = lib.bp_try_get_into
_BUFFER_HEADER = ffi.offsetof("struct bp_buffer", "data")
# Receive buffers are filled by the kernel: zeroing them first is wasted work.
_alloc = ffi.new_allocator(should_clear_after_alloc=False)


def unlink(name: Union[str, bytes]) -> None:
    """Remove the queue called ``name``.

    Processes that have it open keep using it; it is destroyed once the last
    of them closes it. Raises :class:`QueueNotFoundError` if there is none.
    """
    raw = encode_name(name)
    if lib.mq_unlink(raw) != 0:
        raise error_for(ffi.errno, os.fsdecode(raw), "unlink")


# The ways to open a queue, tried in turn: both directions, else the one its
# mode grants this user.
_ACCESSES = (lib.O_RDWR, lib.O_RDONLY, lib.O_WRONLY)


def _open(
    handle: Any, raw: bytes, flags: int, mode: int, sizes: tuple[int, int]
) -> tuple[int, int]:
    """Open queue ``raw`` into ``handle``: (result, access), result 0 or -errno."""
    for access in _ACCESSES:
        result: int = lib.bp_open(handle, raw, flags | access, mode, *sizes)
        if result != -errno.EACCES:
            break
    return result, access


# For the fork handler below: every open queue object; and every handle
# whose descriptors may still be open, with or without its object (one being
# opened by MessageQueue() in some thread, or whose object is gone while a
# call in another thread still uses it).
_open_queues: weakref.WeakSet[MessageQueue] = weakref.WeakSet()
_handles: set[Any] = set()


def _track(handle: Any) -> None:
    """Count ``handle`` among those the fork handler looks at, and forget
    those already released."""
    for done in [h for h in _handles if h.mqd < 0 and lib.bp_is_closed(h)]:
        _handles.discard(done)
    _handles.add(handle)


def _after_fork_in_child() -> None:
    """A child has its own wake descriptors, none of its parent's requests for
    notification, and only the forking thread: the uses that other threads'
    greenlets and every event loop held there are dropped, without touching
    a loop (the child shares the parent's epoll instances)."""
    # Through its guarded iterator: list() would ask len() first, which on
    # PyPy walks the set unguarded, and a weakref callback run by a garbage
    # collection meanwhile makes it raise (and the fork hook do nothing).
    queues = [queue for queue in _open_queues]
    notification.after_fork_in_child(queues)
    # Handles no object of the child can reach: nobody there will close them.
    reachable = {queue._queue for queue in queues}
    for handle in list(_handles):
        if handle not in reachable and handle.mqd >= 0:
            lib.bp_after_fork(handle, 0)
            lib.bp_close(handle)
    for queue in queues:
        queue._async_waits.after_fork_in_child()
        kept = waiting.keep_this_threads_holds(queue._python_holds)
        lib.bp_after_fork(queue._queue, kept)
        if queue._closed and not lib.bp_is_closed(queue._queue):
            lib.bp_close(queue._queue)  # a close() another thread had begun


os.register_at_fork(after_in_child=_after_fork_in_child)


class MessageQueue(BatchCalls):
    """A POSIX message queue, opened (and by default created) by name.

    :param name: ``"/"`` followed by up to 255 bytes, none of them ``"/"``.
    :param max_messages: how many messages the queue holds; used only when
        this call creates the queue.
    :param max_message_size: the longest message in bytes; used only when
        this call creates the queue.
    :param mode: permission bits for a queue this call creates, filtered by
        the process umask as :func:`os.open` does. The default 0o600 keeps
        other users out. To share a queue with its group, create it with
        0o660 and set the mode exactly, whatever the umask:
        ``os.fchmod(queue.fileno(), 0o660)`` (the command line's ``--mode``
        does that). Write it in octal: ``mode=600`` is refused, naming
        0o600; a slip up to 511 cannot be caught, being valid bits
        (``mode=400`` is 0o620). (The posix_ipc-based module created queues
        0o644: every user could take their messages.)
    :param create: create the queue if it does not exist (else
        :class:`QueueNotFoundError`).
    :param exclusive: fail with :class:`QueueExistsError` if it exists.

    An existing queue keeps its own sizes, whatever this call asks for, and
    says nothing: :attr:`max_messages` and :attr:`max_message_size` give
    them (``baseplate-mq info`` too). If the queue's mode lets this user
    read but not write (or the reverse), it is opened for that direction
    alone (:meth:`readable`, :meth:`writable`), and the other raises
    :class:`QueuePermissionError`.

    Every argument is checked before any system call: a bad value raises
    :class:`InvalidParametersError`, a bad type :class:`TypeError`, and
    nothing is created, sent or received. Methods may be called from many
    threads at once, and :meth:`close` from any of them, or from a signal
    handler, wakes the others' waits. Objects are not picklable; a queue
    opened before ``fork()`` works in the child, whatever other threads were
    doing, and the child's :meth:`close` releases its descriptors.
    """

    _closed = True  # so that __del__ works even if __init__ failed
    # This object's notification request: the callback's token, -1 for a
    # signal, 0 for none; and the queue's (device, inode) while it holds one.
    _notify_token = 0
    _notify_key: Optional[tuple[int, int]] = None

    def __init__(
        self,
        name: Union[str, bytes],
        max_messages: int = 10,
        max_message_size: int = 8192,
        *,
        mode: int = 0o600,
        create: bool = True,
        exclusive: bool = False,
    ) -> None:
        raw = encode_name(name)
        max_messages = check_size(max_messages, "max_messages")
        max_message_size = check_size(max_message_size, "max_message_size")
        mode = check_mode(mode)
        if exclusive and not create:
            raise invalid("exclusive=True needs create=True")
        #: The queue's name, as given.
        self.name: str = name if isinstance(name, str) else os.fsdecode(name)

        # What the C helpers see: the descriptor, and the state that makes
        # close() safe while other threads use the queue (mqueue_helpers.c).
        queue = ffi.new("struct bp_queue *")
        queue.mqd = -1  # until opened
        _track(queue)
        try:
            self._open(queue, raw, mode, create, exclusive, max_messages, max_message_size)
        except BaseException:
            _handles.discard(queue)  # nothing was opened
            raise

    def _open(
        self,
        queue: Any,
        raw: bytes,
        mode: int,
        create: bool,
        exclusive: bool,
        max_messages: int,
        max_message_size: int,
    ) -> None:
        """Open the queue into ``queue`` (its handle) and set this object up."""
        flags = (lib.O_CREAT if create else 0) | (lib.O_EXCL if exclusive else 0)
        sizes = (max_messages, max_message_size)
        result, access = _open(queue, raw, flags, mode, sizes)
        operation = "create" if create else "open"
        if result == -errno.EACCES and create and not exclusive:
            # Refused with O_CREAT: opening one that exists, or creating one?
            # Ask without: that never creates, and refused, opens nothing (a
            # probe opened and closed would cancel this process's request for
            # notification on the queue).
            result, access = _open(queue, raw, 0, mode, sizes)
            operation = "create" if result == -errno.ENOENT else "open"
            result = -errno.EACCES if result == -errno.ENOENT else result
        if result < 0:
            raise error_for(
                -result,
                self.name,
                operation,
                max_messages=max_messages,
                max_message_size=max_message_size,
            )
        self._queue = queue
        attr = ffi.new("struct mq_attr *")
        lib.bp_getattr(queue, attr)
        self._maxmsg: int = attr.mq_maxmsg
        self._msgsize: int = queue.msgsize
        self._access = access
        # Event-loop waits on this queue, and the uses that greenlets hold
        # while they wait, by thread (both for the fork handler).
        self._async_waits = event_loop.AsyncWaits(queue)
        self._python_holds: dict[int, int] = {}
        # Receive buffers not in use: each get() takes its own, so threads
        # never share one, and puts it back, so none is allocated per call.
        # (A deque: unlike a list, popping its last item frees nothing.)
        self._buffers: deque[_Buffer] = deque()
        self._batch_buffers: deque[BatchBuffer] = deque()
        self._closed = False
        _open_queues.add(self)

    def _error(self, err: int, operation: str, size: int = 0) -> MessageQueueError:
        """The exception for ``errno`` ``err`` from ``operation`` on this queue."""
        opened_for = {lib.O_RDONLY: "reading", lib.O_WRONLY: "writing"}.get(self._access)
        return error_for(
            err,
            self.name,
            operation,
            closed=self._closed,
            opened_for=opened_for,
            size=size,
            max_message_size=self._msgsize,
        )

    def _new_buffer(self) -> _Buffer:
        """A receive buffer: (pointer to its data, a cffi buffer over the data
        to slice messages out of, the memory that owns both)."""
        memory = _alloc("char[]", _BUFFER_HEADER + self._msgsize)
        header = ffi.cast("struct bp_buffer *", memory)
        header.queue = self._queue
        return (header.data, ffi.buffer(header.data, self._msgsize), memory)

    # -- attributes --------------------------------------------------------

    @property
    def max_messages(self) -> int:
        """How many messages the queue holds (the kernel's value for this queue)."""
        return self._maxmsg

    @property
    def max_message_size(self) -> int:
        """The longest message the queue takes, in bytes (the kernel's value)."""
        return self._msgsize

    @property
    def current_messages(self) -> int:
        """How many messages are in the queue right now."""
        attr = ffi.new("struct mq_attr *")
        result = lib.bp_getattr(self._queue, attr)
        if result < 0:
            raise self._error(-result, "inspect")
        return int(attr.mq_curmsgs)

    def _ownership(self) -> tuple[int, int, int]:
        """(mode, uid, gid) of the queue, from fstat() on its descriptor."""
        cells = ffi.new("unsigned int[3]")
        result = lib.bp_fstat(self._queue, cells, cells + 1, cells + 2)
        if result < 0:
            raise self._error(-result, "inspect")
        return cells[0], cells[1], cells[2]

    @property
    def mode(self) -> int:
        """The queue's permission bits, such as ``0o600`` (whoever created it)."""
        return self._ownership()[0]

    @property
    def uid(self) -> int:
        """The user ID of the queue's owner."""
        return self._ownership()[1]

    @property
    def gid(self) -> int:
        """The group ID of the queue."""
        return self._ownership()[2]

    def readable(self) -> bool:
        """Whether this object may receive: False when the queue's mode let this
        user open it for writing only."""
        return bool(self._access != lib.O_WRONLY)

    def writable(self) -> bool:
        """Whether this object may send: False when the queue's mode let this
        user open it for reading only (then nothing received can be put back)."""
        return bool(self._access != lib.O_RDONLY)

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def notify(self, how: notification.How) -> None:
        """Ask to be told when a message arrives in the queue while it is empty.

        :param how: a signal number, which the kernel then sends this process;
            or a callable, which then runs once, with no argument, in a new
            thread (an exception in it goes to :func:`threading.excepthook`);
            or None, which cancels the request.

        The request is used up when it fires: call again to be told again (a
        callback may do that itself). Only one process at a time may hold the
        request for a queue: if another does, :class:`MessageQueueOSError`
        (``EBUSY``) says which (another object in this process, too). The
        kernel's rules hold: closing this object cancels its request, and so
        does closing, in this process, *any* other descriptor of the same
        queue (another object, ``baseplate-mq ls`` run in-process); replacing
        a request is a cancel and a new request, so another process may take
        the queue's request in between. ``notify(None)`` on an object that
        holds no request changes nothing.

        For most uses, waiting on :meth:`fileno` with :mod:`selectors`, or
        :meth:`get_async` under asyncio, is simpler and has no such limits;
        ``notify`` suits a process that must not keep a thread or a loop
        waiting (it is what posix_ipc calls ``request_notification``). The
        first callback starts glibc's notification thread, which lives as long
        as the process: Python 3.12 and later then warn that ``fork()`` in a
        process with threads may deadlock (glibc itself copes with it). A
        child holds none of its parent's requests.
        """
        notification.request(self, how)

    def fileno(self) -> int:
        """The queue descriptor, for :mod:`select`, :mod:`selectors` or an event loop.

        It is readable when a message is waiting, and writable when there is
        room. It is non-blocking; it stays valid until :meth:`close`.
        """
        if self._closed:
            raise closed_error(self.name)
        return int(self._queue.mqd)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._queue.mqd}"
        return (
            f"<MessageQueue {self.name!r} {state} max_messages={getattr(self, '_maxmsg', '?')} "
            f"max_message_size={getattr(self, '_msgsize', '?')}>"
        )

    # -- sending -----------------------------------------------------------

    def put(self, message: MessageData, timeout: Optional[float] = None, priority: int = 0) -> None:
        """Send ``message``, waiting for room per ``timeout``.

        :param message: bytes-like data, or a str (sent as UTF-8).
        :param timeout: None waits as long as it takes, 0 does not wait, a
            positive number waits up to that many seconds; then
            :class:`TimedOutError`.
        :param priority: 0 to ``PRIORITY_MAX - 1``; higher priorities are
            received first, equal ones in the order sent.
        :raises MessageTooLargeError: the message is longer than
            :attr:`max_message_size`; nothing was sent.
        """
        data = message if type(message) is bytes else as_bytes_like(message)
        if priority is not _LOWEST and (
            type(priority) is not int or not 0 <= priority < PRIORITY_MAX
        ):
            priority = check_priority(priority)
        # Every argument is checked before anything is sent.
        if timeout is not None and not (
            (type(timeout) is float and 0.0 <= timeout <= TIMEOUT_MAX)
            or (type(timeout) is int and 0 <= timeout <= TIMEOUT_MAX_INT)
        ):
            check_timeout(timeout)
        # The first attempt never blocks, whatever the timeout: one call into
        # C that keeps the GIL. Only a full queue goes on to wait.
        result = _bp_try_put(self._queue, data, len(data), priority)
        if result:
            waiting.send(self, data, timeout, priority, -result)

    # -- receiving ---------------------------------------------------------

    def get(self, timeout: Optional[float] = None) -> Message:
        """Take the oldest message of the highest priority, waiting per ``timeout``.

        :param timeout: None waits as long as it takes, 0 does not wait, a
            positive number waits up to that many seconds; then
            :class:`TimedOutError`.
        """
        if timeout is not None and not (
            (type(timeout) is float and 0.0 <= timeout <= TIMEOUT_MAX)
            or (type(timeout) is int and 0 <= timeout <= TIMEOUT_MAX_INT)
        ):
            check_timeout(timeout)
        buffers = self._buffers
        try:
            buffer = buffers.pop()
        except IndexError:
            buffer = self._new_buffer()
        result = _bp_try_get(buffer[0])  # never blocks: see put()
        if result < 0:
            result = self._get_slowly(buffer, timeout, -result)
        if result <= LENGTH_MASK:  # priority 0, the common case
            message = Message(buffer[1][:result])
        else:
            message = message_at(buffer[1], 0, result)
        buffers.append(buffer)
        return message

    def _get_slowly(self, buffer: _Buffer, timeout: Any, err: int) -> int:
        """The rest of :meth:`get`, once its first attempt failed with ``err``.
        On an error the buffer goes back to the pool: nothing is using it."""
        try:
            return waiting.receive(self, buffer[0], timeout, err)
        except BaseException:
            self._buffers.append(buffer)
            raise

    def get_into(self, buffer: Any, timeout: Optional[float] = None) -> tuple[int, int]:
        """Receive the next message into ``buffer``; return ``(number of bytes, priority)``.

        The path without a :class:`Message`: nothing is allocated for the
        message, which the kernel copies straight into ``buffer``, any
        writable, C-contiguous buffer (``bytearray``, a ``memoryview`` slice
        of one, ``array.array``, ``mmap``, a NumPy array). As with
        :meth:`socket.socket.recv_into`, the caller owns the buffer: threads
        use their own. Waits per ``timeout`` as :meth:`get` does.

        :raises InvalidParametersError: the buffer is smaller than
            :attr:`max_message_size`, which the kernel requires whatever the
            message's length; nothing was received.
        :raises TypeError: the buffer is read-only, not contiguous, or not a buffer.
        """
        if timeout is not None and not (
            (type(timeout) is float and 0.0 <= timeout <= TIMEOUT_MAX)
            or (type(timeout) is int and 0 <= timeout <= TIMEOUT_MAX_INT)
        ):
            check_timeout(timeout)
        try:
            memory = _from_buffer(_CHAR_ARRAY, buffer, True)
        except (TypeError, ValueError, BufferError):
            raise not_writable(buffer) from None
        if len(memory) < self._msgsize:
            raise invalid(
                "get_into() needs a buffer of at least max_message_size={limit} bytes for "
                "queue {queue}, which the kernel requires; this one has {size}. Nothing was "
                "received",
                limit=self._msgsize,
                queue=self.name,
                size=len(memory),
            )
        result = _bp_try_get_into(self._queue, memory)
        if result < 0:
            result = waiting.receive(self, memory, timeout, -result)
        if result <= LENGTH_MASK:
            return result, 0
        return result & LENGTH_MASK, result >> PACK_SHIFT

    # -- asyncio -----------------------------------------------------------

    async def get_async(self, timeout: Optional[float] = None) -> Message:
        """Like :meth:`get`, for asyncio: waits on the event loop, never blocks it."""
        deadline = waiting.deadline_cell(timeout)
        buffer = self._new_buffer()  # not pooled: a task may be cancelled while it waits
        data = buffer[0]
        result = _bp_try_get(data)
        if result < 0:
            result = await event_loop.receive(self, self._async_waits, data, deadline, -result)
        return message_at(buffer[1], 0, result)

    async def put_async(
        self, message: MessageData, timeout: Optional[float] = None, priority: int = 0
    ) -> None:
        """Like :meth:`put`, for asyncio: waits on the event loop, never blocks it."""
        data = message if type(message) is bytes else as_bytes_like(message)
        priority = check_priority(priority)
        deadline = waiting.deadline_cell(timeout)
        result = _bp_try_put(self._queue, data, len(data), priority)
        if result:
            await event_loop.send(self, self._async_waits, data, priority, deadline, -result)

    # -- life cycle --------------------------------------------------------

    def close(self) -> None:
        """Release the queue: every call waiting on it, in any thread, greenlet
        or task, raises :class:`QueueClosedError` at once, as does any later
        call. A call that already took its message returns it. Closing again
        does nothing. The queue itself lives on (see :meth:`unlink`).

        It takes no lock, so that it may be called from anywhere, a signal
        handler included, whatever the interrupted code was doing: the calls
        it races with check again, after their own step, that the queue is
        still open.
        """
        if self._closed:
            return
        self._closed = True
        # Marks the queue closed and wakes the waits in C and gevent; the
        # descriptors are released by the last call still using them.
        lib.bp_close(self._queue)
        self._async_waits.shut(closed_error(self.name, was=True))
        # The kernel drops the request as the descriptor closes; a late
        # notification finds no callback.
        notification.release(self)

    def unlink(self) -> None:
        """Remove the queue's name from the system.

        This object (and any other process that has the queue open) keeps
        working; the queue is destroyed when the last descriptor is closed.
        """
        unlink(self.name)

    def __enter__(self) -> MessageQueue:
        return self

    def __exit__(
        self,
        exc_type: Optional[type[BaseException]],
        exc: Optional[BaseException],
        tb: Optional[TracebackType],
    ) -> None:
        self.close()

    def __del__(self) -> None:
        if not self._closed:
            try:
                warnings.warn(f"unclosed {self!r}", ResourceWarning, source=self, stacklevel=2)
            except Exception:
                pass
            self.close()

    def __reduce__(self) -> NoReturn:
        raise TypeError("MessageQueue objects cannot be pickled: open the queue by name instead")
