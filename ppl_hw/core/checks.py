"""Argument checks for every layer: each raises with a message that names the
argument and the value it got ("``x`` must be ..., got ...").

One exception type per kind of mistake: :class:`TypeError` for a value of the wrong
type (a string where a number belongs, a float where an int belongs, a bool for
either), :class:`ValueError` for a value of the right type that is out of range,
not finite, or not one of the options.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "check_choice",
    "check_int",
    "check_number",
    "describe_invalid",
]


def describe_invalid(value: Any, is_valid: Any, limit: int = 5) -> str:
    """A short description of the entries of ``value`` where ``is_valid`` is False."""
    arr = np.asarray(value)
    if arr.ndim == 0:
        return repr(arr.item())
    ok = np.broadcast_to(np.asarray(is_valid), arr.shape[: np.ndim(is_valid)])
    bad = arr[~ok] if ok.shape == arr.shape else arr[~ok.reshape(ok.shape)]
    shown = ", ".join(repr(v) for v in np.asarray(bad).reshape(-1)[:limit].tolist())
    more = f" (and {bad.size - limit} more)" if bad.size > limit else ""
    return f"[{shown}]{more} (array of shape {arr.shape})"


def _range_error(
    name: str,
    value: Any,
    low: float | None,
    high: float | None,
    open_low: bool,
    open_high: bool,
    interval: bool = False,
) -> ValueError | None:
    v = float(value)
    if interval and low is not None and high is not None:
        if (v <= low if open_low else v < low) or (
            v >= high if open_high else v > high
        ):
            lo, hi = "(" if open_low else "[", ")" if open_high else "]"
            return ValueError(
                f"{name} must be in {lo}{low:g}, {high:g}{hi}, got {value!r}"
            )
        return None
    if low is not None and (v <= low if open_low else v < low):
        return ValueError(
            f"{name} must be {'>' if open_low else '>='} {low:g}, got {value!r}"
        )
    if high is not None and (v >= high if open_high else v > high):
        return ValueError(
            f"{name} must be {'<' if open_high else '<='} {high:g}, got {value!r}"
        )
    return None


def check_number(
    name: str,
    value: Any,
    *,
    low: float | None = None,
    high: float | None = None,
    open_low: bool = False,
    open_high: bool = False,
    allow_none: bool = False,
    interval: bool = False,
) -> Any:
    """A finite real number (Python or NumPy scalar, not a bool) in the range, as a
    ``float`` (``None`` passes through with ``allow_none``). Out of range, the
    message names the bound crossed, or the whole interval with ``interval``."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(
        value, int | float | np.integer | np.floating
    ):
        none = " or None" if allow_none else ""
        raise TypeError(f"{name} must be a number{none}, got {value!r}")
    if not math.isfinite(float(value)):
        raise ValueError(f"{name} must be finite, got {value!r}")
    err = _range_error(name, value, low, high, open_low, open_high, interval)
    if err is not None:
        raise err
    return float(value)


def check_int(
    name: str,
    value: Any,
    *,
    low: int | None = None,
    high: int | None = None,
    allow_none: bool = False,
) -> Any:
    """An integer (Python or NumPy, not a bool) in ``[low, high]``, as an ``int``
    (``None`` passes through with ``allow_none``)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        none = " or None" if allow_none else ""
        raise TypeError(f"{name} must be an int{none}, got {value!r}")
    err = _range_error(name, value, low, high, False, False)
    if err is not None:
        raise err
    return int(value)


def check_choice(
    name: str, value: Any, options: Sequence[Any], *, allow_none: bool = False
) -> Any:
    """One of ``options`` (or ``None`` with ``allow_none``)."""
    if value is None and allow_none:
        return None
    try:
        ok = value in options
    except TypeError:  # an unhashable or uncomparable value
        ok = False
    if not ok:
        none = " or None" if allow_none else ""
        raise ValueError(f"{name} must be one of {list(options)}{none}, got {value!r}")
    return value
