"""Any value, a typed error: every call that takes a timeout, a priority, a
size, a count or a mode accepts the value, or refuses it with
InvalidParametersError or TypeError, and then nothing has moved."""

from __future__ import annotations

import asyncio
import math
from decimal import Decimal
from fractions import Fraction
from typing import Any, Callable, Dict, List, cast

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baseplate.message_queue import (
    TIMEOUT_MAX,
    InvalidParametersError,
    MessageQueue,
    TimedOutError,
)
from helpers import queue_exists, unique_name, unlink_quietly

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
ANYTHING = st.one_of(
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
    queue = MessageQueue(unique_name(), max_messages=4, max_message_size=16)
    try:
        queue.put(b"ready")  # a message to take, and room to put
        if not accepted_or_typed(calls(queue)[name], value):
            assert queue.current_messages == 1  # refused: nothing moved
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
