"""The numeric argument checks: Python's and numpy's numbers come back as Python's own; the rest
is a user error naming the argument."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autoprompt_search.arguments import positive_number, whole_number
from autoprompt_search.errors import UserError


@pytest.mark.parametrize("value", [7, np.int64(7), np.uint32(7), np.int8(7)])
def test_whole_numbers_come_back_as_python_ints(value) -> None:
    checked = whole_number(value, "seed", 0, 10)
    assert checked == 7 and type(checked) is int


@pytest.mark.parametrize(("value", "message"), [
    (True, "seed must be a whole number from 0 to 10, got True"),
    (np.bool_(True), "seed must be a whole number from 0 to 10, got np.True_"),
    (7.0, "seed must be a whole number from 0 to 10, got 7.0"),
    ("7", "seed must be a whole number from 0 to 10, got '7'"),
    (-1, "seed must be a whole number from 0 to 10, got -1"),
    (np.int64(11), "seed must be a whole number from 0 to 10, got np.int64(11)"),
])
def test_other_values_are_refused_by_name(value, message: str) -> None:
    with pytest.raises(UserError) as raised:
        whole_number(value, "seed", 0, 10)
    assert str(raised.value) == message and raised.value.option == "seed"


def test_the_bound_is_written_as_asked() -> None:
    with pytest.raises(UserError, match=r"from 0 to 2\*\*32 - 1, got 4294967296"):
        whole_number(2**32, "seed", 0, 2**32 - 1, most_text="2**32 - 1")
    with pytest.raises(UserError, match="epochs must be a whole number of at least 1, got 0"):
        whole_number(0, "epochs", 1)


@pytest.mark.parametrize("value", [0.5, 1, np.float32(0.5), np.float64(0.5), np.int64(1)])
def test_positive_numbers_come_back_as_python_floats(value) -> None:
    checked = positive_number(value, "learning_rate", most=1)
    assert checked == float(value) and type(checked) is float


@pytest.mark.parametrize("value", [0, -0.1, math.nan, np.float32(math.nan), math.inf, 1.5, True, "0.1", None])
def test_non_positive_or_non_numbers_are_refused(value) -> None:
    with pytest.raises(UserError, match=r"learning_rate must be a (finite )?number above 0 and at most 1, got ") as raised:
        positive_number(value, "learning_rate", most=1)
    assert raised.value.option == "learning_rate"


@pytest.mark.parametrize("value", [math.inf, np.float32(math.inf), 10**400])
def test_infinity_is_refused_even_without_an_upper_bound(value) -> None:
    """A record holding infinity would not be JSON; an int beyond a float's range is refused, not an OverflowError."""
    with pytest.raises(UserError, match="timeout must be a finite number of seconds above 0, got "):
        positive_number(value, "timeout", unit=" of seconds")
    assert positive_number(10**300, "timeout", unit=" of seconds") == 1e300
