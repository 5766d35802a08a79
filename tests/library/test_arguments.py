"""Any value, a typed error: every call that takes a timeout, a priority, a
size, a count or a mode accepts the value, or refuses it with
InvalidParametersError or TypeError, and then nothing has moved."""

from __future__ import annotations

import asyncio
import math
import numbers
import threading
import time
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Dict, List, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baseplate.message_queue import (
    PRIORITY_MAX,
    TIMEOUT_MAX,
    InvalidParametersError,
    MessageQueue,
    TimedOutError,
)
from helpers import (
    queue_exists,
    unique_name,
    unlink_quietly,
)

numpy: Any
try:
    import numpy
except ImportError:  # PyPy: no NumPy wheel
    numpy = None

MakeQueue = Callable[..., MessageQueue]

# Values no check was written for: huge integers, exact fractions, Decimals
# of every kind, NumPy scalars, and things that are no number at all.
HUGE = [10**400, -(10**400), 10**5000, 2**63, -(2**63), 2**64]
ODD_NUMBERS = [
    Fraction(10**400, 3),
    Fraction(-1, 3),
    Fraction(1, 3),
    Decimal("1e400"),
    Decimal("-1e400"),
    Decimal("NaN"),
    Decimal("sNaN"),
    Decimal("Infinity"),
    Decimal("0.25"),
    float("nan"),
    float("inf"),
    -0.0,
    1e-300,
    complex(1, 1),
]
NUMPY = (
    []
    if numpy is None
    else [
        numpy.int64(1),
        numpy.int64(-1),
        numpy.uint64(2**64 - 1),
        numpy.float64("nan"),
        numpy.float32(1e30),
        numpy.float64(0.01),
        numpy.bool_(True),
    ]
)


class Raising:
    """An object whose own ``__index__`` and ``__float__`` raise ``error``."""

    def __init__(self, error: BaseException) -> None:
        self.error = error

    def __index__(self) -> int:
        raise self.error

    def __float__(self) -> float:
        raise self.error

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.error!r})"


class RaisingReal(Raising):
    """Registered as a real number: a timeout calls its ``__float__``."""


class RaisingIntegral(Raising):
    """Registered as an integer: a timeout calls its ``__index__``."""


class RaisingFloat(float):
    """A float whose own ``__float__`` raises."""

    def __float__(self) -> float:
        raise ZeroDivisionError("a float subclass")


numbers.Real.register(RaisingReal)
numbers.Integral.register(RaisingIntegral)

ERRORS = st.sampled_from(
    [ZeroDivisionError, ValueError, OverflowError, RuntimeError, LookupError, TypeError]
).map(lambda kind: kind("from a dunder"))
RAISING = st.one_of(
    st.builds(Raising, ERRORS),
    st.builds(RaisingReal, ERRORS),
    st.builds(RaisingIntegral, ERRORS),
    st.builds(RaisingFloat, st.floats()),
)
# Exact numbers of any exponent: each is decided at once (refused, or a
# timeout, rounded up to 1 ns when shorter), never after a conversion that
# grows with its exponent.
EXPONENTS = st.integers(min_value=-(10**18) + 1, max_value=10**18 - 1)  # Decimal's range
HUGE_EXACT = st.one_of(
    st.builds(
        lambda sign, digit, exponent: Decimal(f"{sign}{digit}e{exponent}"),
        st.sampled_from(["", "-"]),
        st.integers(0, 9),
        EXPONENTS,
    ),
    st.builds(
        lambda top, bottom, sign: Fraction(sign * (2**top + 1), 2**bottom + 1),
        st.integers(0, 200_000),
        st.integers(0, 200_000),
        st.sampled_from([1, -1]),
    ),
)
# Lone surrogates: UTF-8 cannot encode them (U+DC80 to U+DCFF it can, through
# surrogateescape).
SURROGATES = st.text(st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF), max_size=3)
ANYTHING = st.one_of(
    RAISING,
    HUGE_EXACT,
    SURROGATES,
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE + ODD_NUMBERS + NUMPY),
    st.floats(allow_nan=True, allow_infinity=True),
    st.fractions(),
    st.decimals(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.binary(max_size=5),
    st.lists(st.integers(), max_size=2),
    st.builds(object),
)
TYPED = (InvalidParametersError, TypeError)


def calls(queue: MessageQueue) -> Dict[str, Callable[[Any], Any]]:
    """Each call with the value in one of its number-like arguments."""
    buffer = bytearray(queue.max_message_size)

    def run(coroutine: Any) -> Any:
        return asyncio.run(coroutine)

    return {
        "put timeout": lambda v: queue.put(b"x", timeout=v),
        "put priority": lambda v: queue.put(b"x", timeout=0, priority=v),
        "get timeout": lambda v: queue.get(timeout=v),
        "get_into timeout": lambda v: queue.get_into(buffer, timeout=v),
        "get_many count": lambda v: queue.get_many(v, timeout=0),
        "get_many timeout": lambda v: queue.get_many(1, timeout=v),
        "put_many timeout": lambda v: queue.put_many([b"x"], timeout=v),
        "put_many priority": lambda v: queue.put_many([b"x"], timeout=0, priority=v),
        "get_async timeout": lambda v: run(queue.get_async(timeout=v)),
        "put_async timeout": lambda v: run(queue.put_async(b"x", timeout=v)),
        "put_async priority": lambda v: run(queue.put_async(b"x", timeout=0, priority=v)),
        "put message": lambda v: queue.put(v, timeout=0),
        "put_many messages": lambda v: queue.put_many(v, timeout=0),
        "put_many a message": lambda v: queue.put_many([b"ok", v], timeout=0),
        "put_async message": lambda v: run(queue.put_async(v, timeout=0)),
        "drain timeout": lambda v: next(queue.drain(v)),  # takes "ready": no wait
        "notify": lambda v: queue.notify(v),
    }


CALLS = [
    "put timeout",
    "put priority",
    "get timeout",
    "get_into timeout",
    "get_many count",
    "get_many timeout",
    "put_many timeout",
    "put_many priority",
    "get_async timeout",
    "put_async timeout",
    "put_async priority",
    "put message",
    "put_many messages",
    "put_many a message",
    "put_async message",
    "drain timeout",
    "notify",
]


def accepted_or_typed(call: Callable[[Any], Any], value: Any) -> bool:
    """Run ``call(value)``: True if it was accepted (it ran, or timed out),
    False if refused with a typed error; anything else fails the test."""
    try:
        call(value)
    except TYPED:
        return False
    except TimedOutError:  # accepted: the value was a timeout, and it ran out
        return True
    return True


def any_value_on(name: str, value: Any) -> None:
    """``value`` on call ``name``: accepted, or refused with a typed error, and
    then nothing has moved. A queue of its own, unlinked after."""
    queue = MessageQueue(unique_name(), max_messages=4, max_message_size=64)
    try:
        queue.put(b"ready")  # a message to take, and room to put
        start = time.monotonic()
        if not accepted_or_typed(calls(queue)[name], value):
            assert queue.current_messages == 1  # refused: nothing moved
        assert time.monotonic() - start < 2  # decided at once: nothing waits
    finally:
        queue.close()
        unlink_quietly(queue.name)


RELAXED = [HealthCheck.too_slow]


@pytest.mark.parametrize("name", CALLS)
@settings(max_examples=40, deadline=None, suppress_health_check=RELAXED)
@given(value=ANYTHING)
def test_any_value_on_any_call_is_accepted_or_refused_with_a_typed_error(
    name: str, value: Any
) -> None:
    any_value_on(name, value)


@pytest.mark.trials
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("name", CALLS)
@settings(max_examples=1000, deadline=None, suppress_health_check=RELAXED)
@given(value=ANYTHING)
def test_trials_any_value_on_any_call(name: str, value: Any) -> None:
    any_value_on(name, value)


@pytest.mark.parametrize("argument", ["max_messages", "max_message_size", "mode"])
@settings(max_examples=40, deadline=None)
@given(value=ANYTHING)
def test_any_value_for_a_size_or_mode_is_accepted_or_refused_and_creates_nothing(
    argument: str, value: Any
) -> None:
    name = unique_name()
    try:
        try:
            MessageQueue(name, **{argument: value}).close()
        except TYPED:
            assert not queue_exists(name)
        except OSError:  # accepted, and the kernel said no (too large for ulimit -q...)
            assert not queue_exists(name)
    finally:
        unlink_quietly(name)


@pytest.mark.parametrize(
    "timeout",
    [10**400, Fraction(10**400, 3), Decimal("1e400"), Decimal("Infinity"), float("inf")],
    ids=["10**400", "huge Fraction", "Decimal 1e400", "Decimal Infinity", "inf"],
)
def test_too_large_a_timeout_says_so(queue: MessageQueue, timeout: Any) -> None:
    with pytest.raises(InvalidParametersError, match="too large"):
        queue.get(timeout=timeout)


@pytest.mark.parametrize(
    "timeout",
    [-(10**400), Fraction(-1, 3), Decimal("NaN"), Decimal("sNaN"), Decimal("-1e400"), math.nan],
    ids=["-10**400", "-1/3", "Decimal NaN", "Decimal sNaN", "-1e400", "nan"],
)
def test_an_invalid_timeout_says_so(queue: MessageQueue, timeout: Any) -> None:
    with pytest.raises(InvalidParametersError, match="is invalid"):
        queue.put(b"x", timeout=timeout)
    assert queue.current_messages == 0


def test_exact_timeouts_are_taken_exactly(queue: MessageQueue) -> None:
    timeouts: List[Any] = [Fraction(1, 100), Decimal("0.01"), 0, TIMEOUT_MAX]
    for timeout in timeouts:
        queue.put(b"x", timeout=timeout)
        assert queue.get(timeout=timeout) == b"x"
    with pytest.raises(TimedOutError):
        queue.get(timeout=cast(Any, Fraction(1, 50)))


@pytest.mark.skipif(numpy is None, reason="needs NumPy (not on PyPy)")
def test_numpy_scalars_are_numbers_and_numpy_bools_are_not(queue: MessageQueue) -> None:
    queue.put(b"x", timeout=numpy.float64(0.5), priority=numpy.int64(3))
    assert queue.get(timeout=numpy.int32(1)).priority == 3
    with pytest.raises(TypeError):
        queue.get(timeout=numpy.bool_(True))
    with pytest.raises(TypeError):  # older NumPy lets its bools pass as an index
        queue.put(b"x", priority=numpy.bool_(True))
    assert queue.current_messages == 0
    with pytest.raises(InvalidParametersError):
        queue.get(timeout=numpy.float64("nan"))


def test_a_decimal_slip_in_a_mode_is_refused_naming_the_octal(queue_name: str) -> None:
    with pytest.raises(InvalidParametersError, match=r"mode=600 is 0o1130.*mode=0o600"):
        MessageQueue(queue_name, mode=600)
    assert not queue_exists(queue_name)
    MessageQueue(queue_name, mode=400).close()  # valid bits (0o620): cannot be caught


def test_timeout_max_is_about_146_years() -> None:
    assert 145 * 365 * 86400 < TIMEOUT_MAX < 147 * 365 * 86400


# -- timeouts --------------------------------------------------------------------


def test_timeout_zero_tries_once(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=1, max_message_size=8)
    with pytest.raises(TimedOutError):
        queue.get(timeout=0)
    queue.put(b"a", timeout=0)
    with pytest.raises(TimedOutError, match="waiting for room"):
        queue.put(b"b", timeout=0)
    assert queue.get(timeout=0) == b"a"


def test_positive_timeout_waits_at_least_that_long(make_queue: MakeQueue) -> None:
    queue = make_queue(max_messages=1, max_message_size=8)
    start = time.monotonic()
    with pytest.raises(TimedOutError):
        queue.get(timeout=0.2)
    waited = time.monotonic() - start
    assert 0.2 <= waited < 2.0
    queue.put(b"full")
    start = time.monotonic()
    with pytest.raises(TimedOutError):
        queue.put(b"more", timeout=0.2)
    assert 0.2 <= time.monotonic() - start < 2.0


def test_timeout_returns_as_soon_as_a_message_arrives(queue: MessageQueue) -> None:
    threading.Timer(0.1, queue.put, args=(b"late",)).start()
    start = time.monotonic()
    assert queue.get(timeout=10) == b"late"
    assert time.monotonic() - start < 5


def ready_calls(queue: MessageQueue, timeout: Any) -> dict[str, Callable[[], Any]]:
    """Every call, with ``timeout``, on a queue that can take and give a message at once."""
    into = bytearray(queue.max_message_size)
    return {
        "put": lambda: queue.put(b"sent", timeout=timeout),
        "put_many": lambda: queue.put_many([b"sent"], timeout=timeout),
        "get": lambda: queue.get(timeout=timeout),
        "get_into": lambda: queue.get_into(into, timeout=timeout),
        "get_many": lambda: queue.get_many(3, timeout=timeout),
        "put_async": lambda: asyncio.run(queue.put_async(b"sent", timeout=timeout)),
        "get_async": lambda: asyncio.run(queue.get_async(timeout=timeout)),
    }


GOOD_TIMEOUTS = [None, 0, 0.0, 0.2, 1, 30, 1e-9, Decimal("0.5"), Fraction(1, 4), 2**31]


@pytest.mark.parametrize("timeout", GOOD_TIMEOUTS, ids=repr)
@pytest.mark.parametrize(
    "call", ["put", "put_many", "get", "get_into", "get_many", "put_async", "get_async"]
)
def test_every_timeout_works_when_the_queue_is_ready(
    make_queue: MakeQueue, call: str, timeout: Any
) -> None:
    queue = make_queue(max_messages=3, max_message_size=16)
    queue.put(b"waiting")
    start = time.monotonic()
    ready_calls(queue, timeout)[call]()
    assert time.monotonic() - start < 0.15  # no wait: the first attempt did it
    moved = 1 if call.startswith("put") else -1
    assert queue.current_messages == 1 + moved


BAD_TIMEOUTS: list[tuple[Any, type[Exception]]] = [
    (-1, InvalidParametersError),
    (-0.001, InvalidParametersError),
    (float("nan"), InvalidParametersError),
    (float("inf"), InvalidParametersError),
    (1e300, InvalidParametersError),
    (2**63, InvalidParametersError),
    (Decimal("-1"), InvalidParametersError),
    (True, TypeError),
    (False, TypeError),
    ("1", TypeError),
    (b"1", TypeError),
    ([1], TypeError),
    (object(), TypeError),
]


@pytest.mark.parametrize(("timeout", "error"), BAD_TIMEOUTS, ids=repr)
@pytest.mark.parametrize(
    "call", ["put", "put_many", "get", "get_into", "get_many", "put_async", "get_async"]
)
def test_bad_timeouts_raise_before_anything_moves(
    make_queue: MakeQueue, call: str, timeout: Any, error: type[Exception]
) -> None:
    """Even when the queue could take or give a message at once."""
    queue = make_queue(max_messages=3, max_message_size=16)
    queue.put(b"waiting")
    with pytest.raises(error, match="timeout"):
        ready_calls(queue, timeout)[call]()
    assert queue.get_many(10, timeout=0) == [b"waiting"]  # nothing sent, nothing taken


@pytest.mark.parametrize("priority", [-1, PRIORITY_MAX, True, 1.0, "1", None])
@pytest.mark.parametrize("call", ["put", "put_many", "put_async"])
def test_bad_priorities_raise_before_anything_is_sent(
    queue: MessageQueue, call: str, priority: Any
) -> None:
    calls: dict[str, Callable[[], Any]] = {
        "put": lambda: queue.put(b"x", timeout=0, priority=priority),
        "put_many": lambda: queue.put_many([b"x"], timeout=0, priority=priority),
        "put_async": lambda: asyncio.run(queue.put_async(b"x", timeout=0, priority=priority)),
    }
    with pytest.raises((InvalidParametersError, TypeError), match="priority"):
        calls[call]()
    assert queue.current_messages == 0


@pytest.mark.parametrize("timeout", ["1", [1], object()])
def test_timeout_of_wrong_type_is_a_type_error(queue: MessageQueue, timeout: object) -> None:
    with pytest.raises(TypeError, match="timeout must be"):
        queue.get(timeout=timeout)  # type: ignore[arg-type]


@pytest.mark.parametrize("call", ["put", "put_many", "get", "get_into", "get_many"])
def test_timeout_zero_on_a_blocked_queue_raises_at_once(make_queue: MakeQueue, call: str) -> None:
    queue = make_queue(max_messages=1, max_message_size=16)
    if call.startswith("put"):
        queue.put(b"fills it")
    start = time.monotonic()
    with pytest.raises(TimedOutError):
        ready_calls(queue, 0)[call]()
    assert time.monotonic() - start < 0.1
    assert queue.current_messages == (1 if call.startswith("put") else 0)


TIMEOUT_CALLS = [name for name in CALLS if name.endswith("timeout")]
NUMBER_CALLS = [name for name in CALLS if name.endswith(("priority", "count"))]


@pytest.mark.parametrize("name", NUMBER_CALLS)
@pytest.mark.parametrize("kind", [Raising, RaisingReal, RaisingIntegral])
def test_a_raising_index_is_a_type_error_chained_from_it(
    queue: MessageQueue, name: str, kind: type
) -> None:
    queue.put(b"ready")
    error = ZeroDivisionError("boom")
    with pytest.raises(TypeError, match="ZeroDivisionError: boom") as caught:
        calls(queue)[name](kind(error))
    assert caught.value.__cause__ is error
    assert queue.current_messages == 1


@pytest.mark.parametrize("name", TIMEOUT_CALLS)
@pytest.mark.parametrize(
    "value",
    [RaisingReal(ZeroDivisionError("boom")), RaisingIntegral(ZeroDivisionError("boom"))],
    ids=["__float__", "__index__"],
)
def test_a_raising_dunder_of_a_timeout_is_a_type_error_chained_from_it(
    queue: MessageQueue, name: str, value: Raising
) -> None:
    queue.put(b"ready")
    with pytest.raises(TypeError, match="ZeroDivisionError: boom") as caught:
        calls(queue)[name](value)
    assert caught.value.__cause__ is value.error
    assert queue.current_messages == 1


@pytest.mark.parametrize("argument", ["max_messages", "max_message_size", "mode"])
def test_a_raising_index_in_the_constructor_is_a_type_error_chained_from_it(
    queue_name: str, argument: str
) -> None:
    error = ZeroDivisionError("boom")
    with pytest.raises(TypeError) as caught:
        MessageQueue(queue_name, **{argument: cast(Any, Raising(error))})
    assert caught.value.__cause__ is error
    assert not queue_exists(queue_name)


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit])
@pytest.mark.parametrize("name", ["put priority", "get_many count", "get timeout"])
def test_keyboard_interrupt_and_system_exit_from_a_dunder_pass_through(
    queue: MessageQueue, name: str, stop: type
) -> None:
    value = RaisingIntegral(stop()) if name.endswith("timeout") else Raising(stop())
    with pytest.raises(stop):
        calls(queue)[name](value)


@pytest.mark.parametrize(
    "timeout",
    [Decimal("1e100000000"), Decimal("1e10000000"), Fraction(10**100_000, 3), 2**100_000],
    ids=["1e100000000", "1e10000000", "Fraction 10**100000/3", "2**100000"],
)
def test_a_huge_exact_timeout_is_refused_at_once(queue: MessageQueue, timeout: Any) -> None:
    start = time.process_time()
    with pytest.raises(InvalidParametersError, match="too large"):
        queue.get(timeout=timeout)
    assert time.process_time() - start < 0.5


@pytest.mark.parametrize(
    "timeout",
    [Decimal("-1e999999999999999999"), Decimal("-1e-999999999"), Fraction(-(10**100_000), 3)],
    ids=["-1e999999999999999999", "-1e-999999999", "-10**100000/3"],
)
def test_a_negative_exact_timeout_of_any_size_is_refused_at_once(
    queue: MessageQueue, timeout: Any
) -> None:
    start = time.process_time()
    with pytest.raises(InvalidParametersError, match="is invalid"):
        queue.put(b"x", timeout=timeout)
    assert time.process_time() - start < 0.5


@pytest.mark.parametrize(
    "timeout",
    [Decimal("1e-10000000"), Decimal("1e-999999999999999999"), Fraction(1, 10**100_000), 1e-300],
    ids=["1e-10000000", "1e-999999999999999999", "1/10**100000", "1e-300"],
)
def test_a_positive_timeout_under_a_nanosecond_waits_one(queue: MessageQueue, timeout: Any) -> None:
    from baseplate.message_queue.checks import check_timeout

    start = time.process_time()
    assert check_timeout(timeout) == 1
    with pytest.raises(TimedOutError):
        queue.get(timeout=timeout)
    assert time.process_time() - start < 0.5


def test_exact_timeouts_round_up_to_the_nanosecond() -> None:
    from baseplate.message_queue.checks import check_timeout

    assert check_timeout(Fraction(1, 3)) == 333_333_334
    assert check_timeout(Decimal("0.0000000011")) == 2
    assert check_timeout(Decimal("-0")) == 0
    assert check_timeout(Decimal("0E-1000000000")) == 0
    assert check_timeout(Decimal(TIMEOUT_MAX)) == int(TIMEOUT_MAX) * 10**9
    with pytest.raises(InvalidParametersError, match="too large"):
        check_timeout(Decimal(f"{int(TIMEOUT_MAX)}.{'0' * 40}1"))  # exact, as given
    with pytest.raises(InvalidParametersError, match="too large"):
        check_timeout(Fraction(int(TIMEOUT_MAX) * 10**20 + 1, 10**20))


@pytest.mark.parametrize(
    "call",
    [
        lambda q: q.put("ab\ud800"),
        lambda q: q.put_many(["ok", "ab\ud800"]),
        lambda q: asyncio.run(q.put_async("ab\ud800")),
    ],
    ids=["put", "put_many", "put_async"],
)
def test_a_lone_surrogate_names_its_position_and_the_fix(
    queue: MessageQueue, call: Callable[[MessageQueue], Any]
) -> None:
    with pytest.raises(InvalidParametersError, match=r"position 2.*encode it yourself"):
        call(queue)
    assert queue.current_messages == 0


def test_surrogateescape_still_carries_undecodable_bytes(queue: MessageQueue) -> None:
    text = b"caf\xe9".decode("utf-8", "surrogateescape")
    queue.put(text)
    assert queue.get() == b"caf\xe9"


@pytest.mark.parametrize("how", [10**5000, -(10**5000), 0], ids=["10**5000", "-10**5000", "0"])
def test_notify_refuses_a_signal_number_of_any_size(queue: MessageQueue, how: int) -> None:
    with pytest.raises(InvalidParametersError, match="a signal number is 1 to"):
        queue.notify(how)
