"""``ppl_hw.core.checks``: one exception type per kind of mistake, messages that name
the argument and the value."""

import math

import numpy as np
import pytest

from ppl_hw.core.checks import check_choice, check_int, check_number


@pytest.mark.parametrize("bad", ["1", None, [1.0], True, np.bool_(True), 1 + 2j])
def test_a_wrong_type_is_a_type_error(bad):
    with pytest.raises(TypeError, match=r"^x must be a number, got "):
        check_number("x", bad)
    with pytest.raises(TypeError, match=r"^n must be an int, got "):
        check_int("n", bad)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan, np.float32("nan")])
def test_a_non_finite_number_is_a_value_error(bad):
    with pytest.raises(ValueError, match=r"^x must be finite, got "):
        check_number("x", bad)


def test_ranges_name_the_bound_or_the_interval():
    assert check_number("x", 0, low=0.0) == 0.0
    assert isinstance(check_number("x", np.float32(0.5)), float)
    with pytest.raises(ValueError, match=r"^x must be > 0, got 0$"):
        check_number("x", 0, low=0.0, open_low=True)
    with pytest.raises(ValueError, match=r"^x must be <= 1, got 1.5$"):
        check_number("x", 1.5, high=1.0)
    with pytest.raises(ValueError, match=r"^p must be in \[0, 1\), got 1.0$"):
        check_number("p", 1.0, low=0.0, high=1.0, open_high=True, interval=True)
    with pytest.raises(ValueError, match=r"^a must be in \(0, 1\], got 0.0$"):
        check_number("a", 0.0, low=0.0, high=1.0, open_low=True, interval=True)
    assert check_number("p", 0.0, low=0.0, high=1.0, open_high=True, interval=True) == 0
    with pytest.raises(TypeError, match=r"^n must be an int, got 2.0$"):
        check_int("n", 2.0)
    with pytest.raises(ValueError, match=r"^n must be >= 1, got 0$"):
        check_int("n", 0, low=1)
    assert check_int("n", np.int64(3), low=1, high=3) == 3
    assert type(check_int("n", np.int64(3))) is int


def test_none_and_choices():
    assert check_number("x", None, allow_none=True) is None
    assert check_int("n", None, allow_none=True) is None
    with pytest.raises(TypeError, match=r"^x must be a number or None, got 'a'$"):
        check_number("x", "a", allow_none=True)
    assert check_choice("mode", "a", ("a", "b")) == "a"
    assert check_choice("mode", None, ("a",), allow_none=True) is None
    with pytest.raises(ValueError, match=r"^mode must be one of \['a', 'b'\], got 'c'"):
        check_choice("mode", "c", ("a", "b"))
    with pytest.raises(ValueError, match=r"or None, got \[1\]$"):
        check_choice("mode", [1], ("a",), allow_none=True)  # unhashable: refused
