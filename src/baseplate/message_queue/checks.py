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
import sys
from typing import TYPE_CHECKING, Any, Optional, Union

from baseplate.message_queue.binding import ffi, lib
from baseplate.message_queue.errors import InvalidParametersError, invalid

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
        return f"an integer of {_digits(value)} digits"
    huge = _huge_ratio(value)
    if huge is not None:
        return huge
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


def _digits(number: int) -> int:
    """About how many decimal digits ``number`` has, without writing it out."""
    return math.floor(abs(number).bit_length() * math.log10(2)) + 1


def _huge_ratio(value: Any) -> Optional[str]:
    """A Fraction (or any exact ratio) with a huge numerator or denominator,
    by its size: writing it out could take minutes, or be refused."""
    fractions = sys.modules.get("fractions")  # none made without importing it
    if fractions is None or not isinstance(value, fractions.Fraction):
        return None
    numerator, denominator = value.numerator, value.denominator
    if max(abs(numerator), denominator) < 10**30:
        return None
    return (
        f"a Fraction of {_digits(numerator)} digits over {_digits(denominator)} (not written out)"
    )


def _raised(what: str, value: Any, dunder: str, error: Exception) -> TypeError:
    """The TypeError for an argument whose own ``__index__`` or ``__float__``
    raised ``error`` (the caller chains it: ``raise ... from error``)."""
    return TypeError(
        f"{what} must be a number, and {type(value).__name__}.{dunder}() raised "
        f"{type(error).__name__}: {error}"
    )


def _is_bool(value: Any) -> bool:
    """Whether ``value`` is a bool: Python's, or NumPy's (which older NumPy
    still lets pass as an index)."""
    kind = type(value)
    return isinstance(value, bool) or (
        kind.__module__ == "numpy" and kind.__name__ in ("bool", "bool_")
    )


def check_int(value: Any, what: str) -> int:
    """Return ``value`` as an int, refusing bools, floats and strings."""
    if _is_bool(value) or not hasattr(type(value), "__index__"):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    try:
        return operator.index(value)
    except Exception as error:  # its own __index__ failed, or returned no int
        raise _raised(what, value, "__index__", error) from error


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

    A float or an int is decided here, with a few comparisons: it never takes
    the exact path, which imports :mod:`numbers`, :mod:`decimal` and
    :mod:`fractions` (the first timed call of a process would pay for that).
    Any other real number is taken exactly (a Fraction or a Decimal is not
    rounded through a float first), its magnitude checked before anything
    that grows with it; a bool, a string or anything else is a
    :class:`TypeError`. A positive timeout shorter than a nanosecond waits
    one nanosecond.
    """
    if timeout is None:
        return FOREVER
    kind = type(timeout)
    if kind is float:
        if 0.0 <= timeout <= TIMEOUT_MAX:
            return math.ceil(timeout * 1_000_000_000)  # type: ignore[no-any-return]
        raise _timeout_refused(timeout, timeout > TIMEOUT_MAX)
    if kind is int:
        if 0 <= timeout <= TIMEOUT_MAX_INT:
            return timeout * 1_000_000_000  # type: ignore[no-any-return]
        raise _timeout_refused(timeout, timeout > 0)
    return _exact_ns(timeout)


def _timeout_refused(timeout: Any, too_large: bool) -> InvalidParametersError:
    """The error for a timeout out of range: too large, or negative (or NaN)."""
    if too_large:
        return invalid(
            f"timeout={shown(timeout)} is too large (at most {TIMEOUT_MAX:.0f} s, about "
            "146 years); use None to wait forever"
        )
    return invalid(
        f"timeout={shown(timeout)} is invalid: use None to wait forever, 0 to not wait, "
        "or a positive number of seconds"
    )


# An exact timeout of 2**_BITS_TOO_LARGE seconds or more is too large
# (TIMEOUT_MAX < 2**33); one below 2**-_BITS_TOO_SMALL (under 1 ns) waits 1 ns.
_BITS_TOO_LARGE = 34
_BITS_TOO_SMALL = 31
_DIGITS_TOO_LARGE = 10  # a Decimal of 10**11 or more is too large
_DIGITS_TOO_SMALL = -10  # a Decimal below 10**-10 (under 1 ns) waits 1 ns
_NS_MAX = TIMEOUT_MAX_INT * 1_000_000_000


def _exact_ns(timeout: Any) -> int:
    """A timeout that is no float or int, in nanoseconds: decided in a time
    bounded by its size, whatever its exponent."""
    if _is_bool(timeout):  # True is not "one second"
        raise TypeError(
            f"timeout must be a number of seconds or None, not {type(timeout).__name__}"
        )
    if isinstance(timeout, int):  # a subclass: operator.index() takes its value
        return check_timeout(operator.index(timeout))
    if isinstance(timeout, float):  # a subclass, such as numpy.float64
        return check_timeout(_as_float(timeout))
    import numbers  # here: floats and ints never come this far
    from decimal import Decimal

    if isinstance(timeout, numbers.Integral):
        try:
            number = operator.index(timeout)
        except Exception as error:
            raise _raised("timeout", timeout, "__index__", error) from error
        return check_timeout(number)
    if isinstance(timeout, Decimal):
        return _decimal_ns(timeout)
    if isinstance(timeout, numbers.Rational):
        try:
            numerator, denominator = int(timeout.numerator), int(timeout.denominator)
        except Exception as error:
            raise TypeError(
                f"timeout={shown(timeout)} has no integer numerator and denominator"
            ) from error
        return _ratio_ns(timeout, numerator, denominator)
    if isinstance(timeout, numbers.Real):
        return check_timeout(_as_float(timeout))
    raise TypeError(f"timeout must be a number of seconds or None, not {type(timeout).__name__}")


def _as_float(timeout: Any) -> float:
    """``float(timeout)`` of a real number of some other kind: huge ones are
    infinite; an exception of its own ``__float__`` is a TypeError."""
    try:
        return float(timeout)
    except OverflowError:
        return math.inf if timeout > 0 else -math.inf
    except Exception as error:
        raise _raised("timeout", timeout, "__float__", error) from error


def _decimal_ns(timeout: Any) -> int:
    """A Decimal timeout in nanoseconds: its exponent is checked before it is
    converted, which takes a time that grows with it."""
    if timeout.is_nan() or (timeout.is_signed() and not timeout.is_zero()):
        raise _timeout_refused(timeout, False)
    if timeout.is_zero():
        return 0
    if timeout.is_infinite() or timeout.adjusted() > _DIGITS_TOO_LARGE:
        raise _timeout_refused(timeout, True)
    if timeout.adjusted() < _DIGITS_TOO_SMALL:
        return 1
    numerator, denominator = timeout.as_integer_ratio()  # of its size: bounded
    return _ratio_ns(timeout, numerator, denominator)


def _ratio_ns(timeout: Any, numerator: int, denominator: int) -> int:
    """``numerator / denominator`` seconds, rounded up to a nanosecond: its
    magnitude checked by bit lengths before any arithmetic on it."""
    if denominator < 0:
        numerator, denominator = -numerator, -denominator
    if denominator == 0 or numerator < 0:
        raise _timeout_refused(timeout, False)
    if numerator == 0:
        return 0
    magnitude = numerator.bit_length() - denominator.bit_length()  # within 1 of log2
    if magnitude > _BITS_TOO_LARGE:
        raise _timeout_refused(timeout, True)
    if magnitude < -_BITS_TOO_SMALL:
        return 1
    ns = -(-numerator * 1_000_000_000 // denominator)
    if ns > _NS_MAX:
        raise _timeout_refused(timeout, True)
    return ns


def as_buffer(message: Any, index: Optional[int] = None) -> Union[bytes, memoryview]:
    """Return a message as bytes or a contiguous memoryview, or raise TypeError."""
    if isinstance(message, bytes):
        return message
    if isinstance(message, str):
        try:
            return str.encode(message, "utf-8", "surrogateescape")
        except UnicodeEncodeError as error:
            raise _lone_surrogate(message, error, index) from None
    try:
        view = memoryview(message)
    except Exception as error:  # no buffer; or its own __buffer__ failed
        where = "" if index is None else f" (message {index})"
        raise TypeError(
            f"a message must be str, bytes or another buffer, not {type(message).__name__}{where}"
        ) from (None if isinstance(error, TypeError) else error)
    return view if view.c_contiguous else view.tobytes()


def _lone_surrogate(
    message: str, error: UnicodeEncodeError, index: Optional[int]
) -> InvalidParametersError:
    """A str message with a lone surrogate that UTF-8 cannot encode: a bad
    value, so :class:`InvalidParametersError` (a ValueError, as the
    UnicodeEncodeError it replaces was), naming where it is and the fix."""
    where = "" if index is None else f" of message {index}"
    return invalid(
        f"the str message has a lone surrogate {message[error.start]!r} at position "
        f"{error.start}{where}, which UTF-8 cannot encode (surrogateescape keeps only "
        "U+DC80 to U+DCFF, the bytes os.fsdecode() could not decode): encode it "
        "yourself, such as message.encode('utf-8', 'surrogatepass'), and send the bytes"
    )


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
