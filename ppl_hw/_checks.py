"""Error messages that name the argument and the value it got."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["describe_invalid"]


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
