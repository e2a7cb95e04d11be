"""Argument handling shared by both backends' ``nn`` modules."""

from __future__ import annotations

from typing import Any

__all__ = ["conv_geometry"]


def _pair(name: str, value: Any, low: int) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(value) < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return int(value[0]), int(value[1])


def conv_geometry(stride: Any, padding: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """Validated ``(strides, paddings)`` of a 2-D convolution."""
    return _pair("stride", stride, 1), _pair("padding", padding, 0)
