"""The queue: :class:`MessageQueue`, its fast paths, and :func:`unlink`.

How a call runs: its arguments are checked first
(:mod:`~baseplate.message_queue.checks`), then it *tries*, whatever its
timeout: one call into C, a plain ``mq_send``/``mq_receive`` on the queue's
non-blocking descriptor, which keeps the GIL (see ``build_ffi.KEEPS_GIL``).
Only if that would block does it go on to wait, in one place,
:mod:`~baseplate.message_queue.waiting`. A failure becomes an exception in
one place too, :func:`~baseplate.message_queue.diagnoses.error_for`.

:class:`MessageQueue` is the Python-facing layer: it checks arguments,
makes each fast path one call into C (``bp_try_*``, with what it needs
bound on the object: the ``struct bp_queue *``, the message size, the
receive-buffer pool of :meth:`get`), and hands the rest down. The queue's
state lives in its :class:`~baseplate.message_queue.handle.Handle`, which
opens and closes it; this module decides when, and registers the fork
handler, which walks every handle (:func:`~baseplate.message_queue.handle.open_handles`).
It calls the binding for the first attempts and ``mq_unlink``, and raises
:class:`MessageTooLargeError`, :class:`InvalidParametersError` and
:class:`QueueClosedError` for its own checks.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from typing import TYPE_CHECKING, Any, AsyncIterator, Iterator, NoReturn, Optional, Union

from baseplate.message_queue import event_loop, notification, waiting
from baseplate.message_queue import handle as handles
from baseplate.message_queue.batches import BatchCalls
from baseplate.message_queue.binding import ffi, lib
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
from baseplate.message_queue.diagnoses import error_for
from baseplate.message_queue.errors import QueueClosedError, TimedOutError, closed_error, invalid
from baseplate.message_queue.handle import Handle, open_handle
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


def unlink(name: Union[str, bytes]) -> None:
    """Remove the queue called ``name``.

    Processes that have it open keep using it; it is destroyed once the last
    of them closes it. Raises :class:`QueueNotFoundError` if there is none.
    """
    raw = encode_name(name)
    if lib.mq_unlink(raw) != 0:
        raise error_for(ffi.errno, os.fsdecode(raw), "unlink")


def _after_fork_in_child() -> None:
    """A child has its own wake descriptors, none of its parent's requests for
    notification, and only the forking thread: each handle still in use
    carries all the state to put right."""
    opened = handles.open_handles()
    notification.after_fork_in_child(opened)
    handles.after_fork_in_child(opened)


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
    :param read: open for receiving: True requires it, False refuses it,
        None (the default) takes it if the queue's mode grants it.
    :param write: open for sending, likewise. With both None, the queue
        is opened in both directions, else in the one its mode grants;
        ``read=True`` (or ``write=True``) alone opens both if granted, else
        that direction only; ``read=True, write=True`` both or nothing;
        ``read=True, write=False`` reading only (``read=False, write=True``
        writing only); ``read=False, write=False`` is
        :class:`InvalidParametersError`. A refusal raises
        :class:`QueuePermissionError` here, naming the queue's owner, group
        and mode and the fix (or how to mount ``/dev/mqueue`` to see them).

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

    def __init__(
        self,
        name: Union[str, bytes],
        max_messages: int = 10,
        max_message_size: int = 8192,
        *,
        mode: int = 0o600,
        create: bool = True,
        exclusive: bool = False,
        read: Optional[bool] = None,
        write: Optional[bool] = None,
    ) -> None:
        raw = encode_name(name)
        for what, value in (("read", read), ("write", write)):
            if value is not None and not isinstance(value, bool):
                raise TypeError(f"{what}= takes True, False or None, not {type(value).__name__}")
        max_messages = check_size(max_messages, "max_messages")
        max_message_size = check_size(max_message_size, "max_message_size")
        mode = check_mode(mode)
        if exclusive and not create:
            raise invalid("exclusive=True needs create=True")
        #: The queue's name, as given.
        self.name: str = name if isinstance(name, str) else os.fsdecode(name)

        handle = open_handle(
            self.name, raw, mode, create, exclusive, max_messages, max_message_size, read, write
        )
        event_loop.set_up(handle)
        #: The queue's state: the notification request, the holds, the
        #: event-loop waits (see :mod:`~baseplate.message_queue.handle`).
        self._handle = handle
        # Bound here for the fast paths: one attribute each, no lookup chain.
        self._queue = handle.raw
        self._msgsize = handle.msgsize
        # Receive buffers not in use, this object's own: each get() takes its
        # own, so threads never share one, and puts it back, so none is
        # allocated per call. (A deque: unlike a list, popping its last item
        # frees nothing.) The batch calls keep theirs (BatchCalls).
        self._buffers: deque[_Buffer] = deque()
        self._set_up_batches()
        self._closed = False

    # -- attributes --------------------------------------------------------

    @property
    def max_messages(self) -> int:
        """How many messages the queue holds (the kernel's value for this queue)."""
        return self._handle.maxmsg

    @property
    def max_message_size(self) -> int:
        """The longest message the queue takes, in bytes (the kernel's value)."""
        return self._msgsize

    @property
    def current_messages(self) -> int:
        """How many messages are in the queue right now."""
        return self._handle.current_messages()

    @property
    def mode(self) -> int:
        """The queue's permission bits, such as ``0o600`` (whoever created it)."""
        return self._handle.ownership()[0]

    @property
    def uid(self) -> int:
        """The user ID of the queue's owner."""
        return self._handle.ownership()[1]

    @property
    def gid(self) -> int:
        """The group ID of the queue."""
        return self._handle.ownership()[2]

    def readable(self) -> bool:
        """Whether this object may receive: False when the queue's mode let this
        user open it for writing only."""
        return bool(self._handle.access != lib.O_WRONLY)

    def writable(self) -> bool:
        """Whether this object may send: False when the queue's mode let this
        user open it for reading only (then nothing received can be put back)."""
        return bool(self._handle.access != lib.O_RDONLY)

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
        notification.request(self._handle, how)

    def fileno(self) -> int:
        """The queue descriptor, for :mod:`select`, :mod:`selectors` or an event loop.

        It is readable when a message is waiting, and writable when there is
        room. It is non-blocking; it stays valid until :meth:`close`.
        """
        if self._closed:
            raise closed_error(self.name)
        return int(self._queue.mqd)

    def __repr__(self) -> str:
        handle: Optional[Handle] = getattr(self, "_handle", None)
        state = "closed" if self._closed or handle is None else f"fd={handle.raw.mqd}"
        maxmsg = "?" if handle is None else handle.maxmsg
        msgsize = "?" if handle is None else handle.msgsize
        return (
            f"<MessageQueue {self.name!r} {state} max_messages={maxmsg} max_message_size={msgsize}>"
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
            waiting.send(self._handle, data, timeout, priority, -result)

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
            buffer = self._handle.new_buffer()
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
            return waiting.receive(self._handle, buffer[0], timeout, err)
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
            result = waiting.receive(self._handle, memory, timeout, -result)
        if result <= LENGTH_MASK:
            return result, 0
        return result & LENGTH_MASK, result >> PACK_SHIFT

    # -- asyncio -----------------------------------------------------------

    async def get_async(self, timeout: Optional[float] = None) -> Message:
        """Like :meth:`get`, for asyncio: waits on the event loop, never blocks it."""
        deadline = waiting.deadline_cell(timeout)
        buffer = self._handle.new_buffer()  # not pooled: a task may be cancelled while it waits
        data = buffer[0]
        result = _bp_try_get(data)
        if result < 0:
            result = await event_loop.receive(self._handle, data, deadline, -result)
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
            await event_loop.send(self._handle, data, priority, deadline, -result)

    # -- iteration ---------------------------------------------------------

    def __iter__(self) -> Iterator[Message]:
        """``for message in queue``: each next message, as :meth:`get` takes
        it (waiting as long as it takes), priority included.

        The loop ends, with no exception, once the queue is closed: by
        :meth:`close` from another thread, or from a signal handler in the
        iterating thread. A queue already closed raises
        :class:`QueueClosedError` here, at once. ``list(queue)`` (and
        ``put_many(queue)``, which takes a list of it) waits until the queue
        is closed: use :meth:`drain` to take only what is there. Each thread
        iterates with its own ``for``.
        """
        if self._closed:
            raise closed_error(self.name)
        return self._messages()

    def _messages(self) -> Iterator[Message]:
        """The iterator of :meth:`__iter__`: :meth:`get`'s body, one call into
        C per message, until the queue is closed."""
        buffers = self._buffers
        while True:
            try:
                buffer = buffers.pop()
            except IndexError:
                buffer = self._handle.new_buffer()
            result = _bp_try_get(buffer[0])
            if result < 0:
                try:
                    result = self._get_slowly(buffer, None, -result)
                except QueueClosedError:
                    return
            if result <= LENGTH_MASK:
                message = Message(buffer[1][:result])
            else:
                message = message_at(buffer[1], 0, result)
            buffers.append(buffer)
            yield message

    def drain(self, timeout: Optional[float] = 0) -> Iterator[Message]:
        """Iterate over the messages that come within ``timeout`` of each other.

        Each next message is taken as ``get(timeout)`` takes it; the iterator
        stops, with no exception, at the first wait that runs out (with the
        default 0: as soon as the queue is empty), or once the queue is
        closed. ``timeout=None`` waits as ``for message in queue`` does. The
        timeout is checked here, as is whether the queue is closed
        (:class:`QueueClosedError`); ``put_many(other.drain())`` moves what
        ``other`` holds now.
        """
        check_timeout(timeout)
        if self._closed:
            raise closed_error(self.name)
        return self._drained(timeout)

    def _drained(self, timeout: Optional[float]) -> Iterator[Message]:
        get = self.get
        while True:
            try:
                message = get(timeout)
            except (TimedOutError, QueueClosedError):
                return
            yield message

    def __aiter__(self) -> AsyncIterator[Message]:
        """``async for message in queue``: each next message, as
        :meth:`get_async` takes it, on the running event loop; ends, with no
        exception, once the queue is closed (from any thread or task). A
        queue already closed raises :class:`QueueClosedError` here, at once."""
        if self._closed:
            raise closed_error(self.name)
        return self._messages_async()

    async def _messages_async(self) -> AsyncIterator[Message]:
        get_async = self.get_async
        while True:
            try:
                message = await get_async()
            except QueueClosedError:
                return
            yield message

    def __contains__(self, item: object) -> bool:
        """``x in queue`` would take messages until it found ``x``, and wait
        for more: refused."""
        raise TypeError(
            "'in' is not supported by MessageQueue: it would take (and lose) messages, "
            "and wait for more; receive them with get() or a for loop"
        )

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
        handle = self._handle
        handle.closed = True  # first: a fork meanwhile closes it in the child
        self._closed = True
        # Marks the queue closed and wakes the waits in C, gevent and event
        # loops; the descriptors are released by the last call still using them.
        handle.close()
        # The kernel drops the request as the descriptor closes; a late
        # notification finds no callback.
        notification.release(handle)

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
