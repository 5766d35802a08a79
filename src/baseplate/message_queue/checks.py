"""Argument checks: names, sizes, priorities, timeouts and message buffers.

Each check runs before any system call, so that a bad argument raises
:class:`~baseplate.message_queue.InvalidParametersError` (a bad value) or
:class:`TypeError` (a bad type) and nothing is created, sent or received.
Nothing here touches a queue; the binding is used for its constants only.
"""

from __future__ import annotations

import math
import operator
import os
from typing import TYPE_CHECKING, Any, Optional, Union

from baseplate.message_queue._mqueue import ffi, lib

from baseplate.message_queue.errors import InvalidParametersError

if TYPE_CHECKING:  # pragma: no cover
    # Any object with the buffer protocol (PEP 688): array.array, mmap, numpy
    # arrays... Type checkers have typing_extensions without installing it.
    from typing_extensions import Buffer

    MessageData = Union[str, Buffer]
else:
    MessageData = Union[str, bytes, bytearray, memoryview]

# MessageData and these constants are public, and documented in the
# package's __init__.py.
PRIORITY_MAX: int = lib.MQ_PRIO_MAX
NAME_MAX: int = lib.NAME_MAX
RLIMIT_MSGQUEUE: int = lib.RLIMIT_MSGQUEUE
TIMEOUT_MAX: float = float((2**63 - 1) // 10**9 // 2)
# The calls test the usual timeouts, an int or a float in range, with these
# two cheap comparisons (no int-float mix); anything else gets the full check.
TIMEOUT_MAX_INT = int(TIMEOUT_MAX)

LONG_MAX = 2 ** (8 * ffi.sizeof("long") - 1) - 1
# Deadlines, as the bp_* helpers take them: wait forever, do not wait, or
# a time.monotonic_ns() to give up at.
FOREVER: int = lib.BP_FOREVER
NOW: int = lib.BP_NOW


def encode_name(name: Any) -> bytes:
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
    encode_name(name)


def check_int(value: Any, what: str) -> int:
    """Return ``value`` as an int, refusing bools, floats and strings."""
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return operator.index(value)


def check_size(value: Any, what: str) -> int:
    """Check ``max_messages`` or ``max_message_size``."""
    number = check_int(value, what)
    if number < 1:
        raise InvalidParametersError(f"{what}={number} must be at least 1")
    if number > LONG_MAX:
        raise InvalidParametersError(f"{what}={number} is too large: the kernel takes a C long")
    return number


def check_count(value: Any, what: str) -> int:
    """Check a count of messages to take: an int, at least 1."""
    number = check_int(value, what)
    if number < 1:
        raise InvalidParametersError(f"{what}={number} must be at least 1")
    return number


def check_mode(value: Any) -> int:
    """Check permission bits for a queue to create."""
    mode = check_int(value, "mode")
    if not 0 <= mode <= 0o777:
        raise InvalidParametersError(f"mode={mode:#o} must be permission bits, 0 to 0o777")
    return mode


def check_priority(priority: Any) -> int:
    """Check a message priority: an int in ``[0, PRIORITY_MAX)``."""
    number = check_int(priority, "priority")
    if not 0 <= number < PRIORITY_MAX:
        raise InvalidParametersError(
            f"priority={number} is out of range: use 0 (lowest) to {PRIORITY_MAX - 1}"
        )
    return number


def check_timeout(timeout: Any) -> int:
    """Convert a timeout in seconds to nanoseconds (``FOREVER`` for None)."""
    if timeout is None:
        return FOREVER
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


def timeout_is_usual(timeout: Any) -> bool:
    """Whether ``timeout`` passes without :func:`check_timeout`: None, or an int
    or float in range. Two cheap comparisons, with no int-float mix."""
    return (
        timeout is None
        or (type(timeout) is float and 0.0 <= timeout <= TIMEOUT_MAX)
        or (type(timeout) is int and 0 <= timeout <= TIMEOUT_MAX_INT)
    )


def as_buffer(message: Any, index: Optional[int] = None) -> Union[bytes, memoryview]:
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


def nbytes(data: Any) -> int:
    """The size in bytes of a bytes-like object (len() counts items)."""
    return len(data) if type(data) is bytearray else memoryview(data).nbytes


def as_bytes_like(message: Any) -> Any:
    """Return what cffi can pass as ``const char *`` (len() in bytes), or raise TypeError."""
    data = as_buffer(message)
    return data if isinstance(data, bytes) else ffi.from_buffer(data)


def not_writable(buffer: Any) -> TypeError:
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
