"""A fast, safe wrapper around POSIX message queues (``mq_overview(7)``).

The layers: ``build_ffi.py`` declares the C surface, ``baseplate._mqueue`` is
the raw cffi binding it generates, and this module is the Python API. Every
``errno`` becomes an exception in one place, :func:`_error_for`.

How waiting works: every call first *tries*, whatever its timeout: one
call into C, a plain ``mq_send``/``mq_receive`` on the queue's non-blocking
descriptor, which keeps the GIL (see ``build_ffi.KEEPS_GIL``). Only if that
would block does it look at timeouts, gevent and asyncio, in one place,
:meth:`MessageQueue._retries`: normally one more call into C, with the GIL
released, keeps trying for up to 10 µs (a peer on another core usually
acts within that time, and a sleep plus a wake-up costs far more) and then
sleeps in ``ppoll`` until the queue is ready, its deadline passes, or
:meth:`MessageQueue.close` wakes it. When :mod:`select` has been
monkey-patched (gevent, eventlet), or under asyncio, calls instead wait for
the descriptor through the patched ``select.select`` or the event loop, so
other greenlets and tasks run, and try again.
"""

from __future__ import annotations

import errno
import itertools
import math
import operator
import os
import pwd
import re
import resource
import select
import threading
import time
import warnings
import weakref
from collections import deque
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    Generator,
    Iterable,
    List,
    NoReturn,
    Optional,
    Union,
)

from baseplate._mqueue import ffi, lib

if TYPE_CHECKING:  # pragma: no cover
    import asyncio
    from types import TracebackType

__all__ = [
    "InvalidParametersError",
    "Message",
    "MessageQueue",
    "MessageQueueError",
    "MessageQueueOSError",
    "MessageTooLargeError",
    "QueueClosedError",
    "QueueExistsError",
    "QueueNotFoundError",
    "QueuePermissionError",
    "TimedOutError",
    "mqueue_mount",
    "unlink",
    "validate_name",
]

if TYPE_CHECKING:  # pragma: no cover
    # Any object with the buffer protocol (PEP 688): array.array, mmap, numpy
    # arrays... Type checkers have typing_extensions without installing it.
    from typing_extensions import Buffer

    MessageData = Union[str, Buffer]
else:
    #: What :meth:`MessageQueue.put` accepts: text (sent as UTF-8) or any
    #: bytes-like object (anything with the buffer protocol).
    MessageData = Union[str, bytes, bytearray, memoryview]

#: Priorities run from 0 (lowest, the default) to ``PRIORITY_MAX - 1``.
PRIORITY_MAX: int = lib.MQ_PRIO_MAX
#: The longest name after the leading slash, in bytes.
NAME_MAX: int = lib.NAME_MAX
#: The per-user byte allowance for queues (``ulimit -q``), for :func:`resource.getrlimit`;
#: from ``<sys/resource.h>``, since PyPy's :mod:`resource` does not name it.
RLIMIT_MSGQUEUE: int = lib.RLIMIT_MSGQUEUE
#: The largest timeout accepted, in seconds (about 292 years).
TIMEOUT_MAX: float = float((2**63 - 1) // 10**9 // 2)
# The calls test the usual timeouts, an int or a float in range, with these
# two cheap comparisons (no int-float mix); anything else gets the full check.
_TIMEOUT_MAX_INT = int(TIMEOUT_MAX)

_LONG_MAX = 2 ** (8 * ffi.sizeof("long") - 1) - 1
_WOULD_BLOCK = (errno.EAGAIN, errno.ETIMEDOUT)
# Deadlines, as the bp_* helpers take them: wait forever, do not wait, or
# a time.monotonic_ns() to give up at.
_FOREVER: int = lib.BP_FOREVER
_NOW: int = lib.BP_NOW
# Without a wake descriptor (none could be had), a wait looks again this often.
_BLIND_WAIT = 0.02
# The helpers pack results as (priority or errno) << _PACK_SHIFT | length or
# count; a result up to _LENGTH_MASK is a bare length (priority 0).
_PACK_SHIFT: int = lib.BP_PACK_SHIFT
_LENGTH_MASK = (1 << _PACK_SHIFT) - 1
# put()'s default priority: a fast path tests `priority is _LOWEST` first.
_LOWEST = 0
# Largest receive buffer get_many() allocates per call (it loops for more).
_BATCH_BUFFER_MAX = 1 << 20
# The kernel's own ceilings, which bind even privileged users (ipc/mqueue.c).
_HARD_MSGMAX = 65536
_HARD_MSGSIZEMAX = 16 * 1024 * 1024
# Per-message bookkeeping the kernel charges to RLIMIT_MSGQUEUE (64-bit).
_KERNEL_BYTES_PER_MESSAGE = 96

_unpack = ffi.unpack
_from_buffer = ffi.from_buffer
_CHAR_ARRAY = ffi.typeof("char[]")
_Buffer = Any  # (data pointer for the helpers, a cffi buffer over it, its owner)
# The first attempts, bound once: looking them up on `lib` costs on every call.
_bp_try_put = lib.bp_try_put
_bp_try_get = lib.bp_try_get
_bp_try_get_into = lib.bp_try_get_into
_bp_try_put_many = lib.bp_try_put_many
_bp_try_get_many = lib.bp_try_get_many
_BUFFER_HEADER = ffi.offsetof("struct bp_buffer", "data")
_monotonic_ns = time.monotonic_ns
# Receive buffers are filled by the kernel: zeroing them first is wasted work.
_alloc = ffi.new_allocator(should_clear_after_alloc=False)


def _native_select(candidate: Any) -> Any:
    """Return ``candidate`` if it is the interpreter's own ``select.select``."""
    return candidate if getattr(candidate, "__module__", None) == "select" else None


# When select.select is still this function, blocking in the kernel is fine;
# when gevent or eventlet has replaced it, waits must go through theirs.
_NATIVE_SELECT = _native_select(select.select)


# --------------------------------------------------------------------------
# Exceptions


class MessageQueueError(Exception):
    """Base class of every error raised by this module."""


class TimedOutError(MessageQueueError):
    """The operation did not complete before its timeout.

    ``sent`` is the number of messages :meth:`MessageQueue.put_many` had sent
    before the timeout ran out (0 for other operations).
    """

    def __init__(self, message: str = "timed out", sent: int = 0) -> None:
        super().__init__(message)
        self.sent = sent


class InvalidParametersError(MessageQueueError, ValueError):
    """A parameter was rejected: by our checks, or by the kernel (``EINVAL``)."""


class QueueClosedError(MessageQueueError, ValueError):
    """The queue object was closed (perhaps by another thread while this call
    waited); its descriptor is no longer used.

    ``sent`` is the number of messages :meth:`MessageQueue.put_many` had sent
    before the close (0 for other operations).
    """

    def __init__(self, message: str = "queue is closed", sent: int = 0) -> None:
        super().__init__(message)
        self.sent = sent


class MessageTooLargeError(MessageQueueError, ValueError):
    """A message is longer than the queue's ``max_message_size``; it was not sent.

    ``size`` and ``max_message_size`` give both lengths in bytes; ``index`` is
    the message's position for :meth:`MessageQueue.put_many`, else ``None``.
    """

    def __init__(
        self, message: str, size: int, max_message_size: int, index: Optional[int] = None
    ) -> None:
        super().__init__(message)
        self.size = size
        self.max_message_size = max_message_size
        self.index = index


class MessageQueueOSError(MessageQueueError, OSError):
    """A system call failed; ``errno`` says why and the message says what to do."""


class QueueNotFoundError(MessageQueueOSError, FileNotFoundError):
    """The named queue does not exist (and was not to be created)."""


class QueueExistsError(MessageQueueOSError, FileExistsError):
    """The named queue already exists (``exclusive=True``)."""


class QueuePermissionError(MessageQueueOSError, PermissionError):
    """The queue's mode does not allow this user the requested access."""


# --------------------------------------------------------------------------
# Messages


class Message(bytes):
    """A received message: its bytes, plus the ``priority`` it was sent with.

    It compares, hashes and slices like the :class:`bytes` it holds, while
    ``str(message)`` gives the UTF-8 text (undecodable bytes shown with
    backslash escapes) so that ``print("Got %s" % message)`` prints the text.
    It is built like bytes, ``Message(b"data")``; set ``priority`` afterwards.
    """

    #: The priority the message was sent with (0 to ``PRIORITY_MAX - 1``).
    priority: int = 0  # instances store their own only when it is not 0

    def __str__(self) -> str:
        return self.decode("utf-8", "backslashreplace")

    def __repr__(self) -> str:
        return f"Message({bytes.__repr__(self)}, priority={self.priority})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (_rebuild_message, (bytes(self), self.priority))


def _rebuild_message(data: bytes, priority: int) -> Message:
    """Unpickle a :class:`Message`."""
    message = Message(data)
    if priority:
        message.priority = _check_priority(priority)
    return message


# --------------------------------------------------------------------------
# Argument checks: all run before any system call, so nothing is created or sent.


def _encode_name(name: Any) -> bytes:
    """Check a queue name and return it as the bytes the kernel takes."""
    if isinstance(name, str):
        try:
            raw = os.fsencode(name)
        except UnicodeEncodeError:
            raise InvalidParametersError(
                f"queue name {name!r} cannot be encoded for the file system"
            ) from None
    elif isinstance(name, bytes):
        raw = name
    else:
        raise TypeError(f"queue name must be a str such as '/my-queue', not {type(name).__name__}")
    problem = None
    if not raw.startswith(b"/"):
        problem = "must start with '/'"
        if raw and b"/" not in raw and b"\0" not in raw:
            problem += f", as in {'/' + os.fsdecode(raw)!r}"
    elif len(raw) == 1:
        problem = "needs at least one character after the '/'"
    elif b"/" in raw[1:]:
        problem = "may contain no '/' after the first character"
    elif b"\0" in raw:
        problem = "may not contain a NUL character"
    elif len(raw) - 1 > NAME_MAX:
        problem = f"has {len(raw) - 1} bytes after the '/'; at most {NAME_MAX} are allowed"
    elif raw in (b"/.", b"/.."):
        problem = "is reserved"
    if problem:
        shown = name if len(raw) <= 80 else name[:40] + name[-10:]
        raise InvalidParametersError(f"invalid queue name {shown!r}: it {problem}")
    return raw


def validate_name(name: Union[str, bytes]) -> None:
    """Raise :class:`InvalidParametersError` (or :class:`TypeError`) unless
    ``name`` is a valid queue name; make no system call."""
    _encode_name(name)


def _check_int(value: Any, what: str) -> int:
    """Return ``value`` as an int, refusing bools, floats and strings."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return operator.index(value)


def _check_size(value: Any, what: str) -> int:
    """Check ``max_messages`` or ``max_message_size``."""
    number = _check_int(value, what)
    if number < 1:
        raise InvalidParametersError(f"{what}={number} must be at least 1")
    if number > _LONG_MAX:
        raise InvalidParametersError(f"{what}={number} is too large: the kernel takes a C long")
    return number


def _check_priority(priority: Any) -> int:
    """Check a message priority: an int in ``[0, PRIORITY_MAX)``."""
    number = _check_int(priority, "priority")
    if not 0 <= number < PRIORITY_MAX:
        raise InvalidParametersError(
            f"priority={number} is out of range: use 0 (lowest) to {PRIORITY_MAX - 1}"
        )
    return number


def _check_timeout(timeout: Any) -> int:
    """Convert a timeout in seconds to nanoseconds (``_FOREVER`` for None)."""
    if timeout is None:
        return _FOREVER
    if isinstance(timeout, bool):  # True is not "one second"
        raise TypeError("timeout must be a number of seconds or None, not bool")
    if not isinstance(timeout, (int, float)):
        try:
            if isinstance(timeout, (str, bytes, bytearray)):
                raise TypeError
            timeout = float(timeout)
        except (TypeError, ValueError):
            raise TypeError(
                f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
            ) from None
    if math.isnan(timeout) or timeout < 0:
        raise InvalidParametersError(
            f"timeout={timeout!r} is invalid: use None to wait forever, 0 to not wait, "
            "or a positive number of seconds"
        )
    if timeout > TIMEOUT_MAX:
        raise InvalidParametersError(
            f"timeout={timeout!r} is too large (at most {TIMEOUT_MAX:.0f} s); "
            "use None to wait forever"
        )
    seconds: float = timeout
    return math.ceil(seconds * 1_000_000_000)


def _deadline(timeout_ns: int) -> int:
    """The bp_* deadline for a checked timeout: forever, now, or a monotonic time."""
    if timeout_ns <= 0:
        return timeout_ns
    return _monotonic_ns() + timeout_ns


def _deadline_cell(timeout: Any) -> Any:
    """The deadline for ``timeout`` (checked), in a ``long long[1]`` that C can move."""
    return ffi.new("long long[1]", [_deadline(_check_timeout(timeout))])


def _as_buffer(message: Any, index: Optional[int] = None) -> Union[bytes, memoryview]:
    """Return a message as bytes or a contiguous memoryview, or raise TypeError."""
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        return message.encode("utf-8", "surrogateescape")
    try:
        view = memoryview(message)
    except TypeError:
        where = "" if index is None else f" (message {index})"
        raise TypeError(
            f"a message must be str, bytes or another buffer, not {type(message).__name__}{where}"
        ) from None
    return view if view.c_contiguous else view.tobytes()


def _nbytes(data: Any) -> int:
    """The size in bytes of a bytes-like object (len() counts items)."""
    return len(data) if type(data) is bytearray else memoryview(data).nbytes


def _as_bytes_like(message: Any) -> Any:
    """Return what cffi can pass as ``const char *`` (len() in bytes), or raise TypeError."""
    data = _as_buffer(message)
    return data if isinstance(data, bytes) else ffi.from_buffer(data)


# --------------------------------------------------------------------------
# errno -> exception, all in one place


def _read_sysctl(name: str) -> Optional[int]:
    try:
        with open(f"/proc/sys/fs/mqueue/{name}") as f:
            return int(f.read())
    except (OSError, ValueError):
        return None


def _explain_invalid_sizes(max_messages: int, max_message_size: int) -> str:
    """Say which size the kernel refused on create, and which limit it hit.

    The fs.mqueue sysctls bind every process without CAP_SYS_RESOURCE in the
    initial user namespace, which includes root in most containers.
    """
    problems = []
    for what, value, sysctl, hard in (
        ("max_messages", max_messages, "msg_max", _HARD_MSGMAX),
        ("max_message_size", max_message_size, "msgsize_max", _HARD_MSGSIZEMAX),
    ):
        limit = _read_sysctl(sysctl)
        if value > hard:
            problems.append(
                f"{what}={value} exceeds the kernel's hard limit of {hard}, which no setting raises"
            )
        elif limit is not None and value > limit:
            problems.append(
                f"{what}={value} exceeds fs.mqueue.{sysctl}={limit}: ask for at most {limit}, "
                f"or raise the limit as root (sysctl -w fs.mqueue.{sysctl}={value})"
            )
    if not problems:
        problems.append(
            f"the kernel refused max_messages={max_messages}, "
            f"max_message_size={max_message_size} (EINVAL)"
        )
    return "; ".join(problems)


def _explain_no_room(err: int, name: str, max_messages: int, max_message_size: int) -> str:
    """Explain EMFILE / ENFILE / ENOSPC / ENOMEM from mq_open."""
    if err == errno.EMFILE:
        soft_files, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
        try:
            descriptors_full = len(os.listdir("/proc/self/fd")) >= soft_files - 1
        except OSError as error:  # listing needs a descriptor too: none left proves it
            descriptors_full = error.errno == errno.EMFILE
        if soft_files != resource.RLIM_INFINITY and descriptors_full:
            return (
                f"cannot open queue {name!r}: this process has all {soft_files} of its file "
                "descriptors open (ulimit -n); close some or raise the limit"
            )
        soft_bytes, _ = resource.getrlimit(RLIMIT_MSGQUEUE)
        needed = max_messages * (max_message_size + _KERNEL_BYTES_PER_MESSAGE)
        return (
            f"cannot create queue {name!r}: it needs about {needed} bytes of this user's "
            f"message queue allowance (RLIMIT_MSGQUEUE, ulimit -q = {soft_bytes} bytes), "
            "which the user's other queues have used up. Unlink queues that are no longer "
            "needed, create smaller ones, or raise the limit (ulimit -q, or LimitMSGQUEUE= "
            "for a systemd service)"
        )
    if err == errno.ENOSPC:
        queues_max = _read_sysctl("queues_max")
        return (
            f"cannot create queue {name!r}: the system already has the most queues allowed "
            f"(fs.mqueue.queues_max={queues_max}). Unlink unused queues (see ls /dev/mqueue "
            "once mqueue is mounted there) or raise the limit as root"
        )
    if err == errno.ENFILE:
        return f"cannot open queue {name!r}: the system-wide limit on open files is reached"
    return f"cannot create queue {name!r}: the kernel is out of memory for it"


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


def _owner_and_mode(name: str) -> str:
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


def _error_for(
    err: int,
    queue: Optional[MessageQueue],
    name: str,
    operation: str,
    size: int = 0,
    max_messages: int = 0,
    max_message_size: int = 0,
) -> MessageQueueError:
    """Build the exception for ``errno`` ``err`` from ``operation`` on queue ``name``."""
    if err == errno.EBADF and queue is not None:
        if queue.closed:
            return QueueClosedError(f"queue {name!r} is closed")
        if queue._access != lib.O_RDWR:
            mode = "reading" if queue._access == lib.O_RDONLY else "writing"
            return QueuePermissionError(
                errno.EACCES,
                f"cannot {operation} on queue {name!r}: it was opened for {mode} only, "
                "because its mode does not grant this user both read and write access",
            )
    if err == errno.EMSGSIZE:
        limit = queue._msgsize if queue is not None else max_message_size
        return MessageTooLargeError(
            f"message of {size} bytes is longer than queue {name!r} allows "
            f"(max_message_size={limit}); nothing was sent",
            size,
            limit,
        )
    if err == errno.ENOENT:
        advice = "" if operation == "unlink" else ": create it first, or open it with create=True"
        return QueueNotFoundError(err, f"queue {name!r} does not exist{advice}")
    if err == errno.EEXIST:
        return QueueExistsError(err, f"queue {name!r} already exists (exclusive=True)")
    if err in (errno.EACCES, errno.EPERM):
        return QueuePermissionError(
            err,
            f"permission denied to {operation} queue {name!r}: {_owner_and_mode(name)} "
            "To share a queue, its owner creates it with mode=0o660 (--mode 660) and gives "
            "it a group this user is in, or runs the consumer as the same user",
        )
    if operation == "create" and err == errno.EINVAL:
        return InvalidParametersError(
            f"cannot create queue {name!r}: "
            + _explain_invalid_sizes(max_messages, max_message_size)
        )
    if operation == "create" and err in (errno.EMFILE, errno.ENFILE, errno.ENOSPC, errno.ENOMEM):
        return MessageQueueOSError(err, _explain_no_room(err, name, max_messages, max_message_size))
    return MessageQueueOSError(err, f"{operation} on queue {name!r} failed: {os.strerror(err)}")


def _queue_exists(raw: bytes) -> bool:
    """Whether queue ``raw`` exists, for an error's wording: mq_open's EACCES
    with O_CREAT may mean that opening or that creating was refused."""
    probe = ffi.new("struct bp_queue *")
    result: int = lib.bp_open(probe, raw, lib.O_RDONLY, 0, 0, 0)
    if result == 0:
        lib.bp_close(probe)
    return result != -errno.ENOENT


# --------------------------------------------------------------------------
# Waiting outside the kernel: through gevent's select, or an event loop


class _AsyncReadiness:
    """One event-loop reader (or writer) per queue and loop, shared by all waiting tasks.

    ``loop.add_reader`` keeps a single callback per descriptor, so two tasks
    waiting on the same queue must share it: each wake-up resolves every
    waiting future, and the losers of the race simply wait again. It holds a
    use of the queue (``bp_hold``), so the descriptor the loop watches stays
    open until the loop's thread has stopped watching it.
    """

    __slots__ = ("fd", "loop", "queue", "waiters", "writable")

    def __init__(
        self, queue: Any, loop: asyncio.AbstractEventLoop, fd: int, writable: bool
    ) -> None:
        self.queue = queue
        self.loop = loop
        self.fd = fd
        self.writable = writable
        self.waiters: list[asyncio.Future[None]] = []
        if writable:
            loop.add_writer(fd, self.wake)
        else:
            loop.add_reader(fd, self.wake)

    def wake(self) -> None:
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def stop(self) -> None:
        """Stop watching (in the loop's thread) and give the use back; once."""
        if self.queue is None:
            return
        if self.writable:
            self.loop.remove_writer(self.fd)
        else:
            self.loop.remove_reader(self.fd)
        queue, self.queue = self.queue, None
        lib.bp_unhold(queue)

    def shut(self, error: BaseException) -> None:
        """The queue was closed: fail every waiting task, and stop."""
        waiters, self.waiters = self.waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(error)
        self.stop()

    def shut_from_any_thread(self, error: BaseException) -> None:
        """:meth:`shut`, in the loop's own thread: at once if this is it, else handed over."""
        import asyncio

        try:
            running: Optional[asyncio.AbstractEventLoop] = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self.loop or self.loop.is_closed():
            self.shut(error)  # a closed loop watches nothing any more
            return
        try:
            self.loop.call_soon_threadsafe(self.shut, error)
        except RuntimeError:  # the loop was closed meanwhile
            self.shut(error)


# --------------------------------------------------------------------------
# The queue


def _message_at(view: Any, start: int, end: int) -> Message:
    """The message in ``view[start:stop]``, where ``end`` packs its priority
    above ``stop`` (the helpers' format)."""
    message = Message(view[start : end & _LENGTH_MASK])
    if end > _LENGTH_MASK:
        message.priority = end >> _PACK_SHIFT
    return message


def _not_writable(buffer: Any) -> TypeError:
    """The error for a get_into() buffer that cffi refused to write into."""
    try:
        view = memoryview(buffer)
    except TypeError:
        problem = "it has no buffer interface"
    else:
        problem = "it is read-only" if view.readonly else "it is not C-contiguous"
    return TypeError(
        "get_into() needs a writable, C-contiguous buffer such as a bytearray, "
        f"not {type(buffer).__name__}: {problem}"
    )


def unlink(name: Union[str, bytes]) -> None:
    """Remove the queue called ``name``.

    Processes that have it open keep using it; it is destroyed once the last
    of them closes it. Raises :class:`QueueNotFoundError` if there is none.
    """
    raw = _encode_name(name)
    if lib.mq_unlink(raw) != 0:
        raise _error_for(ffi.errno, None, os.fsdecode(raw), "unlink")


# Callbacks of the notifications by thread now registered, by their token.
_notify_callbacks: dict[int, Callable[[], object]] = {}
_notify_tokens = itertools.count(1)


@ffi.def_extern()  # type: ignore[untyped-decorator]
def bp_notified(token: int) -> None:
    """Run by glibc in a thread of its own when a notification fires: hands the
    callback to a Python thread, whose exceptions go to threading.excepthook."""
    callback = _notify_callbacks.pop(token, None)
    if callback is not None:
        threading.Thread(target=callback, name=f"baseplate-mq notify {token}").start()


def _notifier(name: str) -> str:
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


# Every open queue, for the fork handler below.
_open_queues: weakref.WeakSet[MessageQueue] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    """A child has its own wake descriptors, and none of its parent's threads."""
    for queue in list(_open_queues):
        lib.bp_after_fork(queue._queue)


os.register_at_fork(after_in_child=_after_fork_in_child)


class MessageQueue:
    """A POSIX message queue, opened (and by default created) by name.

    :param name: ``"/"`` followed by up to 255 bytes, none of them ``"/"``.
    :param max_messages: how many messages the queue holds; used only when
        this call creates the queue.
    :param max_message_size: the longest message in bytes; used only when
        this call creates the queue.
    :param mode: permission bits for a queue this call creates, filtered by
        the process umask as for files. The default 0o600 keeps other users
        out; 0o660 shares the queue with its group. (The posix_ipc-based
        module created queues 0o644: every user could take their messages.)
    :param create: create the queue if it does not exist (else
        :class:`QueueNotFoundError`).
    :param exclusive: fail with :class:`QueueExistsError` if it exists.

    If the queue's mode lets this user read but not write (or the reverse),
    it is opened for that direction alone, and the other raises
    :class:`QueuePermissionError`.

    Methods may be called from many threads at once, and :meth:`close` from
    any of them wakes the others' waits. Objects are not picklable; a queue
    opened before ``fork()`` works in the child.
    """

    _closed = True  # so that __del__ works even if __init__ failed
    _async: Optional[dict[Any, _AsyncReadiness]] = None
    # This object's notification request: the callback's token, -1 for a
    # signal, 0 for none.
    _notify_token = 0

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
        raw = _encode_name(name)
        max_messages = _check_size(max_messages, "max_messages")
        max_message_size = _check_size(max_message_size, "max_message_size")
        mode = _check_int(mode, "mode")
        if not 0 <= mode <= 0o777:
            raise InvalidParametersError(f"mode={mode:#o} must be permission bits, 0 to 0o777")
        if exclusive and not create:
            raise InvalidParametersError("exclusive=True needs create=True")
        #: The queue's name, as given.
        self.name: str = name if isinstance(name, str) else os.fsdecode(name)

        # What the C helpers see: the descriptor, and the state that makes
        # close() safe while other threads use the queue (mqueue_helpers.c).
        queue = ffi.new("struct bp_queue *")
        flags = (lib.O_CREAT if create else 0) | (lib.O_EXCL if exclusive else 0)
        for access in (lib.O_RDWR, lib.O_RDONLY, lib.O_WRONLY):
            result = lib.bp_open(queue, raw, flags | access, mode, max_messages, max_message_size)
            if result != -errno.EACCES:
                break
        if result < 0:
            raise _error_for(
                -result,
                None,
                self.name,
                # Refused with O_CREAT: was it creating, or opening one that exists?
                "open"
                if not create or (result == -errno.EACCES and _queue_exists(raw))
                else "create",
                max_messages=max_messages,
                max_message_size=max_message_size,
            )
        self._queue = queue
        attr = ffi.new("struct mq_attr *")
        lib.bp_getattr(queue, attr)
        self._maxmsg: int = attr.mq_maxmsg
        self._msgsize: int = queue.msgsize
        self._access = access
        self._close_lock = threading.Lock()
        # Receive buffers not in use: each get() takes its own, so threads
        # never share one, and puts it back, so none is allocated per call.
        # (A deque: unlike a list, popping its last item frees nothing.)
        self._buffers: deque[_Buffer] = deque()
        self._batch_buffers: deque[tuple[Any, Any, int, Any, int]] = deque()
        self._closed = False
        _open_queues.add(self)

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
            raise _error_for(-result, self, self.name, "inspect")
        return int(attr.mq_curmsgs)

    def _ownership(self) -> tuple[int, int, int]:
        """(mode, uid, gid) of the queue, from fstat() on its descriptor."""
        cells = ffi.new("unsigned int[3]")
        result = lib.bp_fstat(self._queue, cells, cells + 1, cells + 2)
        if result < 0:
            raise _error_for(-result, self, self.name, "inspect")
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

    @property
    def closed(self) -> bool:
        """True once :meth:`close` has been called."""
        return self._closed

    def notify(self, how: Union[int, Callable[[], object], None]) -> None:
        """Ask to be told when a message arrives in the queue while it is empty.

        :param how: a signal number, which the kernel then sends this process;
            or a callable, which then runs once, with no argument, in a new
            thread (an exception in it goes to :func:`threading.excepthook`);
            or None, which cancels the request.

        The request is used up when it fires: call again to be told again (a
        callback may do that itself). Closing the queue cancels it. Only one
        process at a time may hold the request for a queue: if another one
        does, :class:`MessageQueueOSError` (``EBUSY``) says which. For most
        uses, waiting on :meth:`fileno` with :mod:`selectors`, or
        :meth:`get_async` under asyncio, is simpler and has no such limit;
        ``notify`` suits a process that must not keep a thread or a loop
        waiting (it is what posix_ipc calls ``request_notification``). The
        first callback starts glibc's notification thread, which lives as long
        as the process: Python 3.12 and later then warn that ``fork()`` in a
        process with threads may deadlock (glibc itself copes with it).
        """
        if how is None:
            signum, callback = 0, None
        elif isinstance(how, int) and not isinstance(how, bool):
            if not 0 < how < lib.NSIG:
                raise InvalidParametersError(
                    f"notify({how}): a signal number is 1 to {lib.NSIG - 1}, such as signal.SIGUSR1"
                )
            signum, callback = how, None
        elif callable(how):
            signum, callback = 0, how
        else:
            raise TypeError(
                f"notify() takes a signal number, a callable or None, not {type(how).__name__}"
            )
        with self._close_lock:
            if self._closed:
                raise QueueClosedError(f"queue {self.name!r} is closed")
            previous, self._notify_token = self._notify_token, 0
            if previous:  # this object's own request: replace it
                _notify_callbacks.pop(previous, None)
                lib.bp_notify(self._queue, 0, 0)
            token = 0
            if callback is not None:
                token = next(_notify_tokens)
                _notify_callbacks[token] = callback
            result = lib.bp_notify(self._queue, signum, token)
            if result < 0:
                _notify_callbacks.pop(token, None)
                if result == -errno.EBUSY:
                    raise MessageQueueOSError(
                        errno.EBUSY,
                        f"queue {self.name!r} already has a notification request, from "
                        f"{_notifier(self.name)}: only one at a time is allowed. It ends when "
                        "that one fires, is cancelled (notify(None)) or its queue is closed",
                    )
                raise _error_for(-result, self, self.name, "request notification of")
            self._notify_token = token if callback is not None else -1 if signum else 0

    def fileno(self) -> int:
        """The queue descriptor, for :mod:`select`, :mod:`selectors` or an event loop.

        It is readable when a message is waiting, and writable when there is
        room. It is non-blocking; it stays valid until :meth:`close`.
        """
        if self._closed:
            raise QueueClosedError(f"queue {self.name!r} is closed")
        return int(self._queue.mqd)

    def __repr__(self) -> str:
        state = "closed" if self._closed else f"fd={self._queue.mqd}"
        return (
            f"<MessageQueue {self.name!r} {state} max_messages={getattr(self, '_maxmsg', '?')} "
            f"max_message_size={getattr(self, '_msgsize', '?')}>"
        )

    # -- waiting: the one home of every call that must wait ----------------

    def _retries(
        self,
        attempt: Callable[[bool], int],
        writable: bool,
        deadline: Any,
        err: int,
        size: int,
        cooperative: bool,
    ) -> Generator[int, None, int]:
        """The waiting loop of every call, after its first attempt failed with ``err``.

        ``attempt(may_wait)`` calls into C again: with ``may_wait`` it may
        also spin and sleep in the kernel until ``deadline[0]`` (a
        ``long long[1]``, which put_many's attempts move on). When waiting
        must happen outside the kernel (``cooperative``: gevent, asyncio),
        this yields the deadline, and the driver waits for the queue to be
        ready (or closed) before the next attempt. Returns the attempt's
        result once it is ``>= 0``; raises :class:`TimedOutError`, or the
        error for ``err``. After ``EINTR`` the loop's back edge runs Python's
        signal handlers (PEP 475): one that raises ends the call.
        """
        while True:
            if err in _WOULD_BLOCK:
                if deadline[0] == _NOW or 0 < deadline[0] <= _monotonic_ns():
                    what = "room in" if writable else "a message in"
                    raise TimedOutError(f"timed out waiting for {what} queue {self.name!r}")
                if cooperative:
                    yield deadline[0]
            elif err != errno.EINTR:
                raise _error_for(err, self, self.name, "send" if writable else "receive", size)
            result = attempt(not cooperative)
            if result >= 0:
                return result
            err = -result

    def _wait(
        self, attempt: Callable[[bool], int], writable: bool, deadline: Any, err: int, size: int = 0
    ) -> int:
        """Drive :meth:`_retries` in this thread: in the kernel, or through gevent's select."""
        cooperative = select.select is not _NATIVE_SELECT
        retries = self._retries(attempt, writable, deadline, err, size, cooperative)
        try:
            while True:
                self._wait_cooperatively(writable, next(retries))
        except StopIteration as done:
            result: int = done.value
            return result

    async def _wait_async(
        self, attempt: Callable[[bool], int], writable: bool, deadline: Any, err: int, size: int = 0
    ) -> int:
        """Drive :meth:`_retries` on the running event loop."""
        retries = self._retries(attempt, writable, deadline, err, size, True)
        try:
            while True:
                await self._until_ready(writable, next(retries))
        except StopIteration as done:
            result: int = done.value
            return result

    def _wait_cooperatively(self, writable: bool, deadline: int) -> None:
        """Wait through the monkey-patched ``select.select`` (gevent, eventlet)
        for the queue to be ready, for close(), or for the deadline."""
        queue = self._queue
        if not lib.bp_hold(queue):
            return  # closed: the next attempt says so
        try:
            wake = lib.bp_wake_fd(queue)
            if lib.bp_is_closed(queue):
                return
            timeout = None if deadline < 0 else max(0.0, (deadline - _monotonic_ns()) / 1e9)
            watched = [wake] if wake >= 0 else []
            if wake < 0:  # no wake descriptor to be had: look again soon
                timeout = _BLIND_WAIT if timeout is None else min(timeout, _BLIND_WAIT)
            if writable:
                select.select(watched, [queue.mqd], [], timeout)
            else:
                select.select([queue.mqd, *watched], [], [], timeout)
        finally:
            lib.bp_unhold(queue)

    async def _until_ready(self, writable: bool, deadline: int) -> None:
        """Wait until the event loop sees the queue ready, the deadline, or close()."""
        import asyncio

        loop = asyncio.get_running_loop()
        key = (loop, writable)
        with self._close_lock:  # close() takes the registrations under it
            if self._closed or not lib.bp_hold(self._queue):
                return  # the next attempt raises QueueClosedError
            if self._async is None:
                self._async = {}
            readiness = self._async.get(key)
            if readiness is None:
                readiness = self._async[key] = _AsyncReadiness(
                    self._queue, loop, self._queue.mqd, writable
                )
            else:
                lib.bp_unhold(self._queue)  # the registration holds one already
        waiter = loop.create_future()
        readiness.waiters.append(waiter)
        try:
            if deadline < 0:
                await waiter
            else:
                timeout = max(0.0, (deadline - _monotonic_ns()) / 1e9)
                try:
                    await asyncio.wait_for(waiter, timeout)
                except asyncio.TimeoutError:
                    pass  # the caller tries once more, then reports the timeout
        finally:
            if waiter in readiness.waiters:
                readiness.waiters.remove(waiter)
            with self._close_lock:
                registered, last = self._async, False
                if registered and not readiness.waiters and registered.get(key) is readiness:
                    del registered[key]
                    last = True
            if last:
                readiness.stop()

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
        data = message if type(message) is bytes else _as_bytes_like(message)
        if priority is not _LOWEST and (
            type(priority) is not int or not 0 <= priority < PRIORITY_MAX
        ):
            priority = _check_priority(priority)
        # Every argument is checked before anything is sent.
        if timeout is not None and not (
            (type(timeout) is float and 0.0 <= timeout <= TIMEOUT_MAX)
            or (type(timeout) is int and 0 <= timeout <= _TIMEOUT_MAX_INT)
        ):
            _check_timeout(timeout)
        # The first attempt never blocks, whatever the timeout: one call into
        # C that keeps the GIL. Only a full queue goes on to wait.
        result = _bp_try_put(self._queue, data, len(data), priority)
        if result:
            self._put_slowly(data, timeout, priority, -result)

    def _put_slowly(self, data: Any, timeout: Any, priority: int, err: int) -> None:
        """The rest of :meth:`put`, once its first attempt failed with ``err``."""
        deadline = _deadline_cell(timeout)
        queue, size = self._queue, len(data)

        def attempt(may_wait: bool) -> int:
            return lib.bp_send(queue, data, size, priority, deadline[0] if may_wait else _NOW)  # type: ignore[no-any-return]

        self._wait(attempt, True, deadline, err, size)

    def put_many(
        self, messages: Iterable[MessageData], timeout: Optional[float] = None, priority: int = 0
    ) -> int:
        """Send ``messages`` in order, with one call into C for the lot.

        Every message is checked first: if one has the wrong type or is too
        long, nothing is sent (the error's ``index`` says which). A single
        str or bytes is refused with :class:`TypeError`: use :meth:`put`. ``timeout``
        bounds the wait for room *for each message*, as it bounds the wait
        for the first message in :meth:`get_many`; when it runs out,
        :class:`TimedOutError` says in ``sent`` how many went out (and so
        does :class:`QueueClosedError` if the queue is closed meanwhile).

        :returns: the number of messages sent, i.e. all of them.
        """
        if type(messages) is list:
            batch: List[Any] = messages
        elif isinstance(messages, (str, bytes, bytearray, memoryview)):
            raise TypeError(
                f"put_many takes an iterable of messages, not one {type(messages).__name__}: "
                "use put() for a single message"
            )
        else:
            batch = list(messages)
        if priority is not _LOWEST and (
            type(priority) is not int or not 0 <= priority < PRIORITY_MAX
        ):
            priority = _check_priority(priority)
        if timeout is not None and not (
            (type(timeout) is float and 0.0 <= timeout <= TIMEOUT_MAX)
            or (type(timeout) is int and 0 <= timeout <= _TIMEOUT_MAX_INT)
        ):
            _check_timeout(timeout)
        if not batch:
            if self._closed:
                raise QueueClosedError(f"queue {self.name!r} is closed", 0)
            return 0
        try:
            data = b"".join(batch)
        except TypeError:
            batch = [_as_buffer(m, i) for i, m in enumerate(batch)]
            data = b"".join(batch)
        # len() counts bytes only for bytes and bytearray; any other buffer
        # (array('h'), ctypes...) says its size in bytes through memoryview.
        lengths = [len(m) if type(m) is bytes else _nbytes(m) for m in batch]
        count = len(lengths)
        result = _bp_try_put_many(self._queue, data, lengths, count, priority)
        if result == count:  # all sent, no errno
            return count
        if result >> _PACK_SHIFT == errno.EMSGSIZE:  # checked in C before sending any
            index = result & _LENGTH_MASK
            raise MessageTooLargeError(
                f"message {index} of the batch has {lengths[index]} bytes, more than queue "
                f"{self.name!r} allows (max_message_size={self._msgsize}); nothing was sent",
                lengths[index],
                self._msgsize,
                index,
            )
        return self._put_many_slowly(data, lengths, priority, timeout, result)

    def _put_many_slowly(
        self, data: bytes, lengths: List[int], priority: int, timeout: Any, result: int
    ) -> int:
        """The rest of :meth:`put_many`, after its first attempt sent some or none."""
        timeout_ns = _check_timeout(timeout)
        deadline = ffi.new("long long[1]", [_deadline(timeout_ns)])
        queue, total = self._queue, len(lengths)
        pointer = ffi.from_buffer(data)  # held for the whole loop: it pins `data`
        sent = offset = 0

        def account(result: int) -> int:
            """Count what a call sent; return ``total`` once all went out, else -errno."""
            nonlocal sent, offset
            count = result & _LENGTH_MASK
            if count:
                offset += sum(lengths[sent : sent + count])
                sent += count
                if timeout_ns > 0:  # each message may wait that long
                    deadline[0] = _monotonic_ns() + timeout_ns
            return total if sent == total else -(result >> _PACK_SHIFT)

        def attempt(may_wait: bool) -> int:
            return account(
                lib.bp_send_many(
                    queue,
                    pointer + offset,
                    lengths[sent:],
                    total - sent,
                    priority,
                    timeout_ns,
                    deadline,
                    may_wait,
                )
            )

        try:
            outcome = account(result)
            if outcome == 0:  # the first attempt stopped at its own limits, not for room
                outcome = attempt(False)
            if outcome < 0:
                self._wait(attempt, True, deadline, -outcome, lengths[sent])
        except TimedOutError:
            raise TimedOutError(
                f"timed out waiting for room in queue {self.name!r} "
                f"after sending {sent} of {total} messages",
                sent,
            ) from None
        except QueueClosedError:
            raise QueueClosedError(
                f"queue {self.name!r} was closed after {sent} of {total} messages were sent",
                sent,
            ) from None
        return total

    # -- receiving ---------------------------------------------------------

    def get(self, timeout: Optional[float] = None) -> Message:
        """Take the oldest message of the highest priority, waiting per ``timeout``.

        :param timeout: None waits as long as it takes, 0 does not wait, a
            positive number waits up to that many seconds; then
            :class:`TimedOutError`.
        """
        if timeout is not None and not (
            (type(timeout) is float and 0.0 <= timeout <= TIMEOUT_MAX)
            or (type(timeout) is int and 0 <= timeout <= _TIMEOUT_MAX_INT)
        ):
            _check_timeout(timeout)
        buffers = self._buffers
        try:
            buffer = buffers.pop()
        except IndexError:
            buffer = self._new_buffer()
        result = _bp_try_get(buffer[0])  # never blocks: see put()
        if result < 0:
            result = self._get_slowly(buffer, timeout, -result)
        if result <= _LENGTH_MASK:  # priority 0, the common case
            message = Message(buffer[1][:result])
        else:
            message = _message_at(buffer[1], 0, result)
        buffers.append(buffer)
        return message

    def _get_slowly(self, buffer: _Buffer, timeout: Any, err: int) -> int:
        """The rest of :meth:`get`, once its first attempt failed with ``err``.
        On an error the buffer goes back to the pool: nothing is using it."""
        try:
            return self._receive_slowly(buffer[0], timeout, err)
        except BaseException:
            self._buffers.append(buffer)
            raise

    def _receive_slowly(self, data: Any, timeout: Any, err: int) -> int:
        """Wait for a message into ``data``: (priority << shift) | length."""
        deadline = _deadline_cell(timeout)
        queue = self._queue

        def attempt(may_wait: bool) -> int:
            return lib.bp_receive(queue, data, deadline[0] if may_wait else _NOW)  # type: ignore[no-any-return]

        return self._wait(attempt, False, deadline, err)

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
            or (type(timeout) is int and 0 <= timeout <= _TIMEOUT_MAX_INT)
        ):
            _check_timeout(timeout)
        try:
            memory = _from_buffer(_CHAR_ARRAY, buffer, True)
        except (TypeError, ValueError, BufferError):
            raise _not_writable(buffer) from None
        if len(memory) < self._msgsize:
            raise InvalidParametersError(
                f"get_into() needs a buffer of at least max_message_size={self._msgsize} "
                f"bytes for queue {self.name!r}, which the kernel requires; this one has "
                f"{len(memory)}. Nothing was received"
            )
        result = _bp_try_get_into(self._queue, memory)
        if result < 0:
            result = self._receive_slowly(memory, timeout, -result)
        if result <= _LENGTH_MASK:
            return result, 0
        return result & _LENGTH_MASK, result >> _PACK_SHIFT

    def get_many(self, max_count: int, timeout: Optional[float] = None) -> List[Message]:
        """Wait per ``timeout`` for one message, then take every message already
        waiting, up to ``max_count`` in all, in the order :meth:`get` would.

        Raises :class:`TimedOutError` only if no message came in time. An
        error after some messages were taken returns those; the next call
        raises it.
        """
        if type(max_count) is not int or max_count < 1:
            max_count = _check_int(max_count, "max_count")
            if max_count < 1:
                raise InvalidParametersError(f"max_count={max_count} must be at least 1")
        if timeout is not None and not (
            (type(timeout) is float and 0.0 <= timeout <= TIMEOUT_MAX)
            or (type(timeout) is int and 0 <= timeout <= _TIMEOUT_MAX_INT)
        ):
            _check_timeout(timeout)
        batches = self._batch_buffers
        try:
            batch = batches.pop()
        except IndexError:
            batch = self._new_batch_buffer()
        buf, view, capacity, results, slots = batch
        queue = self._queue
        messages: List[Message] = []
        try:
            result = _bp_try_get_many(queue, buf, capacity, min(slots, max_count), results)
            while True:
                count = result & _LENGTH_MASK
                if count:
                    start = 0
                    for end in _unpack(results, count):
                        if end <= _LENGTH_MASK:  # priority 0, the common case
                            messages.append(Message(view[start:end]))
                            start = end
                        else:
                            messages.append(_message_at(view, start, end))
                            start = end & _LENGTH_MASK
                    if len(messages) == max_count:
                        return messages
                    if result >> _PACK_SHIFT:
                        return messages  # drained, or an error for the next call
                    # The first attempt stopped at its own limits: take the
                    # rest with the GIL released (still without waiting).
                    want = min(slots, max_count - len(messages))
                    result = lib.bp_receive_many(queue, buf, capacity, want, _NOW, results)
                elif messages:
                    return messages  # drained, or an error for the next call
                else:
                    result = self._wait_for_batch(batch, max_count, timeout, result >> _PACK_SHIFT)
        finally:
            batches.append(batch)

    def _wait_for_batch(
        self, batch: tuple[Any, Any, int, Any, int], max_count: int, timeout: Any, err: int
    ) -> int:
        """Wait for :meth:`get_many`'s first message; return the packed batch result."""
        buf, _, capacity, results, slots = batch
        deadline = _deadline_cell(timeout)
        queue, want = self._queue, min(slots, max_count)

        def attempt(may_wait: bool) -> int:
            result: int = lib.bp_receive_many(
                queue, buf, capacity, want, deadline[0] if may_wait else _NOW, results
            )
            return result if result & _LENGTH_MASK else -(result >> _PACK_SHIFT)

        return self._wait(attempt, False, deadline, err)

    def _new_batch_buffer(self) -> tuple[Any, Any, int, Any, int]:
        """Room for as many messages as the queue holds (at most about 1 MiB):
        (data buffer, a cffi buffer over it, its capacity, results array, how
        many results it holds).
        """
        slots = min(self._maxmsg, max(1, _BATCH_BUFFER_MAX // self._msgsize))
        capacity = slots * self._msgsize
        data = _alloc("char[]", capacity)
        return (data, ffi.buffer(data), capacity, _alloc("long long[]", slots), slots)

    # -- asyncio -----------------------------------------------------------

    async def get_async(self, timeout: Optional[float] = None) -> Message:
        """Like :meth:`get`, for asyncio: waits on the event loop, never blocks it."""
        deadline = _deadline_cell(timeout)
        buffer = self._new_buffer()  # not pooled: a task may be cancelled while it waits
        data, queue = buffer[0], self._queue
        result = _bp_try_get(data)
        if result < 0:

            def attempt(may_wait: bool) -> int:
                return lib.bp_receive(queue, data, _NOW)  # type: ignore[no-any-return]

            result = await self._wait_async(attempt, False, deadline, -result)
        return _message_at(buffer[1], 0, result)

    async def put_async(
        self, message: MessageData, timeout: Optional[float] = None, priority: int = 0
    ) -> None:
        """Like :meth:`put`, for asyncio: waits on the event loop, never blocks it."""
        data = message if type(message) is bytes else _as_bytes_like(message)
        priority = _check_priority(priority)
        deadline = _deadline_cell(timeout)
        queue, size = self._queue, len(data)
        result = _bp_try_put(queue, data, size, priority)
        if result:

            def attempt(may_wait: bool) -> int:
                return lib.bp_send(queue, data, size, priority, _NOW)  # type: ignore[no-any-return]

            await self._wait_async(attempt, True, deadline, -result, size)

    # -- life cycle --------------------------------------------------------

    def close(self) -> None:
        """Release the queue: every call waiting on it, in any thread, greenlet
        or task, raises :class:`QueueClosedError` at once, as does any later
        call. A call that already took its message returns it. Closing again
        does nothing. The queue itself lives on (see :meth:`unlink`).
        """
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
            readinesses = list(self._async.values()) if self._async else []
            self._async = None
            # The kernel drops the request as the descriptor closes; a late
            # notification finds no callback.
            _notify_callbacks.pop(self._notify_token, None)
        # Marks the queue closed and wakes the waits in C and gevent; the
        # descriptors are released by the last call still using them.
        lib.bp_close(self._queue)
        for readiness in readinesses:
            readiness.shut_from_any_thread(QueueClosedError(f"queue {self.name!r} was closed"))

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


if __name__ == "__main__":  # python -m baseplate.message_queue --read /queue
    from baseplate.cli import legacy_main

    legacy_main()
