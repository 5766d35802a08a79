"""Argument checks: names, sizes, counts, modes, priorities, timeouts and buffers.

Each check runs before any system call, so that a bad argument raises
:class:`~baseplate.message_queue.InvalidParametersError` (a bad value) or
:class:`TypeError` (a bad type) and nothing is created, sent or received.
Any object gets one of the two, or passes: never another exception (an
integer too large for a float, a NaN Decimal, a NumPy scalar...). Nothing
here touches a queue; the binding is used for its constants only.
"""

from __future__ import annotations

import math
import operator
import os
from typing import TYPE_CHECKING, Any, Optional, Union

from baseplate.message_queue.binding import ffi, lib
from baseplate.message_queue.errors import invalid

if TYPE_CHECKING:  # pragma: no cover
    # Any object with the buffer protocol (PEP 688): array.array, mmap, numpy
    # arrays... Type checkers have typing_extensions without installing it.
    from fractions import Fraction

    from typing_extensions import Buffer

    MessageData = Union[str, Buffer]
else:
    MessageData = Union[str, bytes, bytearray, memoryview]

# MessageData and these constants are public, and documented in the
# package's __init__.py.
PRIORITY_MAX: int = lib.MQ_PRIO_MAX
NAME_MAX: int = lib.NAME_MAX
RLIMIT_MSGQUEUE: int = lib.RLIMIT_MSGQUEUE
# A deadline is a monotonic time in nanoseconds, in a C long long, which must
# still hold "now" plus the timeout: half its range, about 146 years.
TIMEOUT_MAX: float = float((2**63 - 1) // 10**9 // 2)
# The calls test the usual timeouts, an int or a float in range, with these
# two cheap comparisons (no int-float mix); anything else gets the full check.
TIMEOUT_MAX_INT = int(TIMEOUT_MAX)

LONG_MAX = 2 ** (8 * ffi.sizeof("long") - 1) - 1
# Deadlines, as the bp_* helpers take them: wait forever, do not wait, or
# a time.monotonic_ns() to give up at.
FOREVER: int = lib.BP_FOREVER
NOW: int = lib.BP_NOW
# Names longer than this are shown shortened in messages, and marked so.
_SHOWN_NAME_MAX = 80


def shown(value: Any) -> str:
    """``repr(value)`` for a message, short: a huge integer by its size (its
    repr could take a while, or be refused: Python limits int-to-str)."""
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**30:
        return f"an integer of {math.floor(abs(value).bit_length() * math.log10(2)) + 1} digits"
    try:
        text = repr(value)
    except Exception:  # a structure nested too deeply, a repr that fails...
        return f"a {type(value).__name__} that cannot be shown"
    return text if len(text) <= 60 else text[:50] + "..." + text[-7:]


def encode_name(name: Any) -> bytes:
    """Check a queue name and return it as the bytes the kernel takes."""
    if isinstance(name, str):
        try:
            raw = os.fsencode(name)
        except UnicodeEncodeError:
            raise invalid(
                "queue name {queue} cannot be encoded for the file system", queue=name
            ) from None
    elif isinstance(name, bytes):
        raw = name
    else:
        raise TypeError(f"queue name must be a str such as '/my-queue', not {type(name).__name__}")
    problem, fields = None, {}
    if not raw.startswith(b"/"):
        problem = "must start with '/'"
        if raw and b"/" not in raw and b"\0" not in raw:
            problem += ", as in {example}"
            fields["example"] = "/" + os.fsdecode(raw)
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
    if problem is None:
        return raw
    text = name if isinstance(name, str) else os.fsdecode(name)
    if len(raw) <= _SHOWN_NAME_MAX:
        raise invalid("invalid queue name {queue}: it " + problem, queue=text, **fields)
    raise invalid(
        "invalid queue name {queue} (shortened, {length} bytes in all): it " + problem,
        queue=text[:40] + "..." + text[-10:],
        length=len(raw),
        **fields,
    )


def validate_name(name: Union[str, bytes]) -> None:
    """Raise :class:`InvalidParametersError` (or :class:`TypeError`) unless
    ``name`` is a valid queue name; make no system call."""
    encode_name(name)


def _is_bool(value: Any) -> bool:
    """Whether ``value`` is a bool: Python's, or NumPy's (which older NumPy
    still lets pass as an index)."""
    kind = type(value)
    return isinstance(value, bool) or (
        kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_")
    )


def check_int(value: Any, what: str) -> int:
    """Return ``value`` as an int, refusing bools, floats and strings."""
    if _is_bool(value) or not hasattr(value, "__index__"):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return operator.index(value)


def check_size(value: Any, what: str) -> int:
    """Check ``max_messages`` or ``max_message_size``."""
    number = check_int(value, what)
    if number < 1:
        raise invalid(f"{what}={shown(number)} must be at least 1")
    if number > LONG_MAX:
        raise invalid(f"{what}={shown(number)} is too large: the kernel takes a C long")
    return number


def check_count(value: Any, what: str) -> int:
    """Check a count of messages to take: an int, at least 1."""
    number = check_int(value, what)
    if number < 1:
        raise invalid(f"{what}={shown(number)} must be at least 1")
    return number


def check_mode(value: Any) -> int:
    """Check permission bits for a queue to create (0 to 0o777)."""
    mode = check_int(value, "mode")
    if 0 <= mode <= 0o777:
        return mode
    digits = str(mode) if 0 < mode < 10**4 else ""
    if digits and set(digits) <= set("01234567") and int(digits, 8) <= 0o777:
        # mode=600 where 0o600 was meant: the only slips that can be caught,
        # since a decimal number up to 511 is valid bits too (400 is 0o620).
        raise invalid(
            f"mode={mode} is {mode:#o} in octal, more than permission bits (0 to 0o777): "
            f"write it in octal, mode=0o{digits}"
        )
    raise invalid(f"mode={shown(mode)} is not permission bits, 0 to 0o777")


def check_priority(priority: Any) -> int:
    """Check a message priority: an int in ``[0, PRIORITY_MAX)``."""
    number = check_int(priority, "priority")
    if not 0 <= number < PRIORITY_MAX:
        raise invalid(
            f"priority={shown(number)} is out of range: use 0 (lowest) to {PRIORITY_MAX - 1}"
        )
    return number


def check_timeout(timeout: Any) -> int:
    """Convert a timeout in seconds to nanoseconds (``FOREVER`` for None).

    Any real number is taken exactly (an int, a Fraction or a Decimal is not
    rounded through a float first); a bool, a string or anything else is a
    :class:`TypeError`.
    """
    if timeout is None:
        return FOREVER
    seconds = _seconds(timeout)
    if seconds != seconds or seconds < 0:  # NaN, or negative
        raise invalid(
            f"timeout={shown(timeout)} is invalid: use None to wait forever, 0 to not wait, "
            "or a positive number of seconds"
        )
    if seconds > TIMEOUT_MAX:
        raise invalid(
            f"timeout={shown(timeout)} is too large (at most {TIMEOUT_MAX:.0f} s, about "
            "146 years); use None to wait forever"
        )
    if isinstance(seconds, int):
        return seconds * 1_000_000_000
    return math.ceil(seconds * 1_000_000_000)


def _seconds(timeout: Any) -> Union[int, float, Fraction]:
    """A timeout as an exact int or Fraction, or a float (NaN and infinities kept)."""
    import numbers  # here: the usual timeouts never come this far
    from decimal import Decimal
    from fractions import Fraction

    if _is_bool(timeout):  # True is not "one second"
        raise TypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
        )
    if isinstance(timeout, numbers.Integral):
        return operator.index(timeout)
    if isinstance(timeout, Decimal):
        if not timeout.is_finite():
            return math.nan if timeout.is_nan() else math.copysign(math.inf, timeout)
        return Fraction(timeout)
    if isinstance(timeout, numbers.Rational):
        return Fraction(int(timeout.numerator), int(timeout.denominator))
    if isinstance(timeout, numbers.Real):
        real: Any = timeout
        try:
            return float(real)
        except OverflowError:  # a huge real number of some other kind
            return math.inf if real > 0 else -math.inf
    raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")


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
