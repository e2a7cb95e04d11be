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
    "PARAMETERIZATIONS",
    "check_parameterization",
    "check_value_grid",
    "discrete_entropy",
    "discrete_kl",
    "discrete_log_prob",
    "discrete_mean",
    "discrete_variance",
    "grid_indices",
    "log_probs_from_params",
    "params_from_probs",
    "probs_from_real",
]

PARAMETERIZATIONS = ("logits", "logits_fixedzero", "shayer")
"""The variational parameterisations of Roth & Pernkopf's code: ``"logits"`` (one
logit per grid value, ``q = softmax``), ``"logits_fixedzero"`` (the logit of the
value 0 fixed at 0, one per other value) and ``"shayer"`` (Shayer et al. 2018,
ternary grids ``(a, 0, b)``: ``q(0) = σ(s)``, ``q(b) = (1 - σ(s)) σ(t)``,
``q(a) = (1 - σ(s)) (1 - σ(t))``)."""


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


def check_parameterization(kind: Any, values: tuple[float, ...]) -> int:
    """Check ``kind`` against the grid; return the number of parameters per weight."""
    if kind not in PARAMETERIZATIONS:
        raise ValueError(
            f"parameterization must be one of {PARAMETERIZATIONS}, got {kind!r}"
        )
    if kind == "logits":
        return len(values)
    if 0.0 not in values:
        raise ValueError(
            f"parameterization {kind!r} needs the value 0 on the grid, "
            f"got {list(values)}"
        )
    if kind == "logits_fixedzero":
        return len(values) - 1
    if len(values) != 3 or values[1] != 0.0:
        raise ValueError(
            "parameterization 'shayer' needs a ternary grid (a, 0, b), "
            f"got {list(values)}"
        )
    return 2


def _log_sigmoid(x: Any, xp: Any) -> Any:
    return -xp.logaddexp(xp.zeros_like(x), -x)


def log_probs_from_params(
    theta: Any, kind: str, values: tuple[float, ...], *, xp: Any, special: Any
) -> Any:
    """Normalised log q (last axis: the grid) from the parameters ``theta`` (last
    axis: :func:`check_parameterization`'s count) of parameterisation ``kind``."""
    if kind == "shayer":
        s, t = theta[..., 0], theta[..., 1]
        log_nz = _log_sigmoid(-s, xp)
        parts = [log_nz + _log_sigmoid(-t, xp), _log_sigmoid(s, xp)]
        parts.append(log_nz + _log_sigmoid(t, xp))
        return xp.stack(parts, axis=-1)
    if kind == "logits_fixedzero":
        z = values.index(0.0)
        zero = xp.zeros_like(theta[..., :1])
        theta = xp.concat([theta[..., :z], zero, theta[..., z:]], axis=-1)
    return theta - special.logsumexp(theta, axis=-1, keepdims=True)


def params_from_probs(probs: Any, kind: str, values: tuple[float, ...]) -> np.ndarray:
    """NumPy: the parameters of ``kind`` that give the probabilities ``probs``
    (the inverse of :func:`log_probs_from_params`; probabilities are floored at
    1e-12 first). ``"logits"`` are centred (mean 0 over the grid)."""
    logp = np.log(np.clip(np.asarray(probs, np.float64), 1e-12, None))
    logp = logp - np.log(np.exp(logp).sum(-1, keepdims=True))
    if kind == "logits":
        return logp - logp.mean(-1, keepdims=True)
    z = values.index(0.0)
    if kind == "logits_fixedzero":
        return np.delete(logp - logp[..., z : z + 1], z, axis=-1)
    p = np.exp(logp)
    s = logp[..., 1] - np.log1p(-np.minimum(p[..., 1], 1 - 1e-12))
    t = logp[..., 2] - logp[..., 0]
    return np.stack([s, t], axis=-1)


def probs_from_real(w: Any, values: Any, q_max: float = 0.95) -> np.ndarray:
    r"""NumPy: initial probabilities of a discrete-weight layer from the weights of a
    trained real-valued layer (Roth et al. 2019, section 4): the weights are
    "stretched" by their empirical CDF — negative weights by rank onto
    :math:`[1.5\,v_{\min}, 0)`, positive ones onto :math:`(0, 1.5\,v_{\max}]`, zeros
    stay 0 — and each stretched value :math:`\tilde w` gets
    :math:`q_k = q_{\min} + (q_{\max} - q_{\min})\,h_k(\tilde w)` with the
    piecewise-linear hat :math:`h_k` of grid value :math:`v_k` (1 there, 0 at its
    neighbours, flat beyond the ends) and :math:`q_{\min} = (1 - q_{\max})/(K - 1)`.
    Each row sums to 1.

    :param w: the real weights (any shape).
    :param values: the grid (it must hold negative and positive values).
    :param q_max: the probability of the value nearest the stretched weight,
        in ``(1/K, 1)``.
    :returns: probabilities of shape ``w.shape + (K,)`` (float64).
    """
    grid = np.asarray(check_value_grid(values), np.float64)
    k = grid.size
    if not (grid[0] < 0 < grid[-1]):
        raise ValueError(
            f"values must hold negative and positive values, got {grid.tolist()}"
        )
    if not (1.0 / k < q_max < 1.0):
        raise ValueError(f"q_max must lie in (1/{k}, 1), got {q_max!r}")
    w = np.asarray(w, np.float64)
    if not np.all(np.isfinite(w)):
        raise ValueError("w must be finite")
    from scipy.stats import rankdata

    flat = w.reshape(-1)
    out = np.zeros_like(flat)
    neg, pos = flat < 0, flat > 0
    if neg.any():
        out[neg] = 1.5 * grid[0] * rankdata(-flat[neg]) / neg.sum()
    if pos.any():
        out[pos] = 1.5 * grid[-1] * rankdata(flat[pos]) / pos.sum()
    q_min = (1.0 - q_max) / (k - 1)
    hats = np.stack([np.interp(out, grid, np.eye(k)[i]) for i in range(k)], axis=-1)
    return (q_min + (q_max - q_min) * hats).reshape(*w.shape, k)


def grid_indices(w: Any, values: Any, *, name: str = "w") -> np.ndarray:
    """NumPy: the int8 indices of the weights ``w`` on the grid ``values``; a
    ``ValueError`` names the first weight that is not exactly on the grid."""
    grid = np.asarray(check_value_grid(values), np.float64)
    if grid.size > 127:
        raise ValueError(f"values must hold at most 127 values, got {grid.size}")
    if hasattr(w, "detach"):
        w = w.detach().cpu().numpy()
    w = np.asarray(w, np.float64)
    match = w[..., None] == grid
    on = match.any(-1)
    if not on.all():
        bad = np.argwhere(~on)[0]
        raise ValueError(
            f"{name} holds {int((~on).sum())} value(s) not on the grid "
            f"{grid.tolist()}, e.g. {w[tuple(bad)]!r} at index {tuple(bad.tolist())}"
        )
    return np.argmax(match, axis=-1).astype(np.int8)
