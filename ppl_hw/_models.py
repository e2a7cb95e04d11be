"""Argument checks and shapes shared by the backends' ready-made models."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["ACTIVATIONS", "check_mlp_args", "layer_sizes"]

ACTIVATIONS = ("tanh", "relu")


def layer_sizes(d_in: int, hidden: Sequence[int], d_out: int) -> tuple[int, ...]:
    return (int(d_in), *(int(h) for h in hidden), int(d_out))


def check_mlp_args(x, hidden, num_classes, prior_scale, activation, batch_size) -> None:
    """Raise a ValueError naming the argument when an MLP model is mis-specified."""
    if len(getattr(x, "shape", ())) != 2:
        raise ValueError(
            f"x must be a 2-D array (N, D), got shape {getattr(x, 'shape', None)}"
        )
    if any(int(h) < 1 for h in hidden):
        raise ValueError(f"hidden widths must be >= 1, got {tuple(hidden)}")
    if int(num_classes) < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if not float(prior_scale) > 0:
        raise ValueError(f"prior_scale must be > 0, got {prior_scale}")
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
        )
    if batch_size is not None and not 1 <= int(batch_size) <= x.shape[0]:
        raise ValueError(f"batch_size must be in [1, N={x.shape[0]}], got {batch_size}")
