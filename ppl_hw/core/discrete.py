r"""Discrete-valued weights: an independent categorical over a fixed real grid per
weight (Roth & Pernkopf), as backend-neutral functions.

A weight takes the value :math:`v_k` of a sorted, distinct grid with probability
:math:`q_k`; the functions below take the normalised log-probabilities
``log_q`` (last axis: the grid) and the grid ``values``.

.. math::

    \mathbb E[w] = \sum_k q_k v_k, \qquad
    \mathrm{Var}[w] = \sum_k q_k (v_k - \mathbb E[w])^2, \qquad
    \mathrm{KL}(q \,\|\, p) = \sum_k q_k (\log q_k - \log p_k).

The variance is the centred sum (not :math:`\mathbb E[w^2] - \mathbb E[w]^2`, which
cancels catastrophically when one value dominates).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = [
    "check_value_grid",
    "discrete_entropy",
    "discrete_kl",
    "discrete_log_prob",
    "discrete_mean",
    "discrete_variance",
]


def check_value_grid(values: Any, name: str = "values") -> tuple[float, ...]:
    """``values`` as a tuple of floats, checked: 1-D, at least 2 finite values,
    strictly increasing (sorted and distinct)."""
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(
            f"{name} must be a 1-D array of real numbers, got {values!r}"
        ) from err
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D grid of values, got shape {arr.shape}")
    if arr.size < 2:
        raise ValueError(f"{name} must hold at least 2 values, got {arr.tolist()}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} must be finite, got {arr.tolist()}")
    if np.any(np.diff(arr) <= 0):
        what = "duplicated" if np.any(np.diff(arr) == 0) else "unsorted"
        raise ValueError(
            f"{name} must be sorted and distinct (strictly increasing), got {what} "
            f"values {arr.tolist()}"
        )
    return tuple(float(v) for v in arr)


def discrete_log_prob(value: Any, log_q: Any, values: Any, *, xp: Any) -> Any:
    """log q at ``value``; ``-inf`` where ``value`` is not on the grid."""
    match = value[..., None] == values
    on_grid = xp.any(match, axis=-1)
    lp = xp.sum(xp.where(match, log_q, 0.0), axis=-1)
    return xp.where(on_grid, lp, -math.inf)


def discrete_mean(log_q: Any, values: Any, *, xp: Any) -> Any:
    """E[w] = Σ q_k v_k."""
    return xp.sum(xp.exp(log_q) * values, axis=-1)


def discrete_variance(log_q: Any, values: Any, *, xp: Any) -> Any:
    """Var[w] = Σ q_k (v_k - E[w])², the cancellation-free centred sum."""
    q = xp.exp(log_q)
    mean = xp.sum(q * values, axis=-1)
    d = values - mean[..., None]
    return xp.sum(q * d * d, axis=-1)


def discrete_entropy(log_q: Any, *, xp: Any) -> Any:
    """-Σ q_k log q_k (nats), with 0 log 0 = 0."""
    q = xp.exp(log_q)
    return -xp.sum(xp.where(q > 0, q * log_q, 0.0), axis=-1)


def discrete_kl(log_q: Any, log_p: Any, *, xp: Any) -> Any:
    """KL(q ‖ p) over the same grid; terms with q = 0 contribute 0."""
    q = xp.exp(log_q)
    return xp.sum(xp.where(q > 0, q * (log_q - log_p), 0.0), axis=-1)
