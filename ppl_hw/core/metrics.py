r"""Predictive metrics for classifiers and regressors, and sample-based distances
(NumPy): the maths behind :mod:`ppl_hw.metrics`, which re-exports every name and
states the conventions.

They live in the core so that the common layer (the deployment sweep,
:mod:`ppl_hw.common.deploy`) scores with them without importing upward.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = [
    "accuracy",
    "energy_distance",
    "expected_calibration_error",
    "gaussian_nll",
    "mutual_information",
    "nll",
    "predictive_entropy",
    "rmse",
]

_TINY = np.finfo(np.float64).tiny

PROB_ATOL = 1e-2
"""Tolerance of the probability checks: entries in ``[0, 1 + PROB_ATOL]`` and rows
summing to 1 within ``PROB_ATOL`` (float32 softmax rows are within ~1e-6 of 1; ten
probabilities rounded to three decimals within 5e-3). Logits, unnormalised scores and
probabilities of the wrong axis fail it by far."""


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor, without importing torch
        x = x.detach().cpu().numpy()
    out = np.asarray(x)
    if out.dtype == object:
        raise TypeError(f"{name} must be a numeric array, got {type(x).__name__}")
    return out


def _check_probs(p: np.ndarray, name: str) -> None:
    """Finite entries in [0, 1] and rows (the last axis) summing to 1, within
    :data:`PROB_ATOL`: a ValueError naming ``name`` and the first bad value."""
    if p.ndim == 0 or p.shape[-1] == 0:
        raise ValueError(
            f"{name} must hold class probabilities along its last axis, got shape "
            f"{p.shape}"
        )
    ok = np.isfinite(p) & (p >= 0) & (p <= 1 + PROB_ATOL)
    if not ok.all():
        bad = p[~ok][0]
        raise ValueError(
            f"{name} must be probabilities: finite, in [0, 1], got {bad!r} at index "
            f"{tuple(int(i) for i in np.argwhere(~ok)[0])} (logits? apply softmax)"
        )
    sums = p.sum(axis=-1)
    off = np.abs(sums - 1.0) > PROB_ATOL
    if off.any():
        where = tuple(int(i) for i in np.argwhere(off)[0])
        raise ValueError(
            f"{name} must be probabilities whose rows sum to 1 (within {PROB_ATOL:g}), "
            f"got a row summing to {sums[where]!r} at index {where}"
        )


def _probs_labels(
    probs: Any, labels: Any, logits_ok: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    p = _to_numpy(probs, "probs").astype(np.float64)
    y = _to_numpy(labels, "labels")
    if p.ndim != 2:
        raise ValueError(f"probs must have shape (N, C), got shape {p.shape}")
    if p.shape[0] == 0:
        raise ValueError(f"probs must hold at least one input, got shape {p.shape}")
    if y.shape != (p.shape[0],):
        raise ValueError(f"labels must have shape ({p.shape[0]},), got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not np.all(np.equal(np.mod(y, 1), 0)):
            bad = y[np.mod(y, 1) != 0]
            raise ValueError(
                f"labels must be integer class indices, got {bad.reshape(-1)[0]!r}"
            )
        y = y.astype(np.int64)
    if y.size and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(
            f"labels must lie in [0, {p.shape[1] - 1}], "
            f"got range [{y.min()}, {y.max()}]"
        )
    if logits_ok:
        if not np.all(np.isfinite(p)):
            raise ValueError(
                f"probs must be finite, got {p[~np.isfinite(p)][0]!r} at index "
                f"{tuple(int(i) for i in np.argwhere(~np.isfinite(p))[0])}"
            )
    else:
        _check_probs(p, "probs")
    return p, y


def accuracy(probs: Any, labels: Any) -> float:
    """Fraction of inputs whose most probable class is the label.

    :param probs: predictive class probabilities (or logits), shape ``(N, C)``.
    :param labels: integer labels, shape ``(N,)``.
    """
    p, y = _probs_labels(probs, labels, logits_ok=True)
    return float(np.mean(np.argmax(p, axis=-1) == y))


def nll(probs: Any, labels: Any) -> float:
    r"""Mean negative log predictive probability of the labels,
    :math:`-\frac1N \sum_n \log p(y_n \mid x_n)` (nats).

    :param probs: predictive class probabilities, shape ``(N, C)``.
    :param labels: integer labels, shape ``(N,)``.
    """
    p, y = _probs_labels(probs, labels)
    return float(-np.mean(np.log(np.maximum(p[np.arange(y.size), y], _TINY))))


def expected_calibration_error(probs: Any, labels: Any, num_bins: int = 15) -> float:
    r"""Expected calibration error with equal-width confidence bins (Guo et al. 2017).

    .. math::

        \mathrm{ECE} = \sum_{b=1}^{B} \frac{n_b}{N}\,
        \big|\mathrm{acc}(b) - \mathrm{conf}(b)\big|,

    where bin :math:`b` holds the inputs whose confidence :math:`\max_c p_c` lies in
    :math:`((b-1)/B,\, b/B]` (the first bin also holds confidence 0).

    :param probs: predictive class probabilities, shape ``(N, C)``.
    :param labels: integer labels, shape ``(N,)``.
    :param num_bins: number of equal-width bins ``B`` on [0, 1] (default 15).
    """
    if isinstance(num_bins, bool) or not isinstance(num_bins, int | np.integer):
        raise TypeError(f"num_bins must be an int, got {num_bins!r}")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    p, y = _probs_labels(probs, labels)
    conf = p.max(axis=-1)
    correct = (np.argmax(p, axis=-1) == y).astype(np.float64)
    # Bin b covers ((b-1)/B, b/B]: ceil(conf * B) - 1, with conf = 0 in the first bin.
    idx = np.clip(np.ceil(conf * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    gap = np.bincount(idx, weights=correct - conf, minlength=num_bins)
    return float(np.sum(np.abs(gap)) / max(y.size, 1))


def _regression(targets: Any, **arrays: Any) -> tuple[np.ndarray, list[np.ndarray]]:
    y = _to_numpy(targets, "targets").astype(np.float64)
    out = []
    for name, value in arrays.items():
        a = _to_numpy(value, name).astype(np.float64)
        if a.shape != y.shape:
            raise ValueError(
                f"{name} must have the shape of targets {y.shape}, got shape {a.shape}"
            )
        out.append(a)
    if y.size == 0:
        raise ValueError("targets must hold at least one value")
    for name, a in (("targets", y), *zip(arrays, out, strict=True)):
        if not np.all(np.isfinite(a)):
            raise ValueError(
                f"{name} must be finite, got {a[~np.isfinite(a)][0]!r} at index "
                f"{tuple(int(i) for i in np.argwhere(~np.isfinite(a))[0])}"
            )
    return y, out


def rmse(mean: Any, targets: Any) -> float:
    r"""Root mean squared error of the predictive mean,
    :math:`\big(\frac1N \sum_n (\mu_n - y_n)^2\big)^{1/2}`, over every entry.

    :param mean: predictive means, the shape of ``targets``.
    :param targets: the observed values.
    """
    y, (mu,) = _regression(targets, mean=mean)
    return float(np.sqrt(np.mean((mu - y) ** 2)))


def gaussian_nll(mean: Any, variance: Any, targets: Any) -> float:
    r"""Mean negative log density of the targets under Normal predictives (nats),

    .. math::

        \frac1N \sum_n \Big[\tfrac12 \log(2\pi \sigma_n^2)
        + \frac{(y_n - \mu_n)^2}{2 \sigma_n^2}\Big],

    over every entry; :math:`\sigma_n^2` is floored at the smallest positive normal
    float64 (a zero variance that misses the target costs a huge, finite or ``inf``,
    amount instead of ``nan``).

    :param mean: predictive means :math:`\mu_n`, the shape of ``targets``.
    :param variance: predictive variances :math:`\sigma_n^2 \ge 0`, the same shape.
    :param targets: the observed values :math:`y_n`.
    """
    y, (mu, var) = _regression(targets, mean=mean, variance=variance)
    if not np.all(var >= 0):
        raise ValueError(
            f"variance must be >= 0, got {var[var < 0][0]!r} at index "
            f"{tuple(int(i) for i in np.argwhere(var < 0)[0])}"
        )
    var = np.maximum(var, _TINY)
    with np.errstate(over="ignore"):
        terms = 0.5 * np.log(2 * np.pi * var) + (y - mu) ** 2 / (2 * var)
    return float(np.mean(terms))


def _entropy(p: np.ndarray) -> np.ndarray:
    return -np.sum(np.where(p > 0, p * np.log(np.where(p > 0, p, 1.0)), 0.0), axis=-1)


def predictive_entropy(probs: Any) -> np.ndarray:
    r"""Entropy :math:`H[\bar p] = -\sum_c \bar p_c \log \bar p_c` (nats) per input.

    :param probs: predictive class probabilities, shape ``(..., C)``.
    :returns: array of shape ``probs.shape[:-1]``.
    """
    p = _to_numpy(probs, "probs").astype(np.float64)
    _check_probs(p, "probs")
    return _entropy(p)


def mutual_information(prob_samples: Any) -> np.ndarray:
    r"""Mutual information between the label and the weights (BALD), per input:

    .. math:: I = H\Big[\frac1S \sum_s p_s\Big] - \frac1S \sum_s H[p_s].

    :param prob_samples: class probabilities of each posterior sample,
        shape ``(S, N, C)``.
    :returns: array of shape ``(N,)``, non-negative up to rounding.
    """
    p = _to_numpy(prob_samples, "prob_samples").astype(np.float64)
    if p.ndim != 3:
        raise ValueError(f"prob_samples must have shape (S, N, C), got shape {p.shape}")
    if p.shape[0] == 0:
        raise ValueError(
            f"prob_samples must hold at least one sample, got shape {p.shape}"
        )
    _check_probs(p, "prob_samples")
    return _entropy(p.mean(axis=0)) - _entropy(p).mean(axis=0)


def energy_distance(
    x: Any, y: Any, axis: int = 0, *, squared: bool = False, unbiased: bool = False
) -> np.ndarray | float:
    r"""Energy distance between two 1-D samples, batched over the other axes.

    .. math::

        D(P, Q) = \big(2\,\mathbb E|X - Y| - \mathbb E|X - X'|
                  - \mathbb E|Y - Y'|\big)^{1/2}
                = \Big(2 \int (F_P - F_Q)^2\,\mathrm dt\Big)^{1/2},

    the convention of :func:`scipy.stats.energy_distance` (the square root of the
    energy statistic; zero iff the distributions agree). Computed from the empirical
    cdfs in O(n log n) per column, so it can compare e.g. the predictive samples at
    every test input at once.

    With ``squared=True`` the energy statistic :math:`D^2` itself is returned; with
    ``unbiased=True`` (which needs ``squared``) the within-sample terms are
    U-statistics,
    :math:`\frac{1}{n(n-1)}\sum_{i \ne j}|x_i - x_j|`, which removes the
    :math:`O(1/n)` bias of the plug-in estimate: the result can then be negative, and
    averages to zero when the two distributions agree — what a study comparing
    small distances needs.

    :param x: samples of P along ``axis``.
    :param y: samples of Q along ``axis``; the other axes must match ``x``.
    :param axis: the sample axis.
    :param squared: return :math:`D^2` instead of :math:`D`.
    :param unbiased: U-statistic within-sample terms (needs ``squared=True``).
    :returns: a float for 1-D input, otherwise an array of the batch shape.
    """
    if unbiased and not squared:
        raise ValueError(
            "unbiased=True estimates D^2, which can be negative: pass squared=True"
        )
    a = np.moveaxis(_to_numpy(x, "x").astype(np.float64), axis, -1)
    b = np.moveaxis(_to_numpy(y, "y").astype(np.float64), axis, -1)
    if a.shape[:-1] != b.shape[:-1]:
        raise ValueError(
            "x and y must agree off the sample axis, "
            f"got {a.shape[:-1]} and {b.shape[:-1]}"
        )
    if a.shape[-1] == 0 or b.shape[-1] == 0:
        raise ValueError("x and y must each hold at least one sample")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise ValueError("x and y must be finite")
    a = np.sort(a, axis=-1)
    b = np.sort(b, axis=-1)
    allv = np.sort(np.concatenate([a, b], axis=-1), axis=-1)
    widths = np.diff(allv, axis=-1)
    knots = allv[..., :-1]
    fa = _searchsorted_right(a, knots) / a.shape[-1]
    fb = _searchsorted_right(b, knots) / b.shape[-1]
    d2 = 2.0 * np.sum((fa - fb) ** 2 * widths, axis=-1)
    if unbiased:
        n, m = a.shape[-1], b.shape[-1]
        if n < 2 or m < 2:
            raise ValueError("unbiased=True needs at least 2 samples of each")
        # V-statistic E|X - X'| = sum_k (2k - n + 1) x_(k) * 2 / n^2 on sorted samples
        d2 = d2 - _mean_abs_diff(a) / (n - 1) - _mean_abs_diff(b) / (m - 1)
    out = d2 if squared else np.sqrt(d2)
    return float(out) if out.ndim == 0 else out


def _mean_abs_diff(sorted_rows: np.ndarray) -> np.ndarray:
    """Plug-in mean of |x_i - x_j| over all pairs (i, j), rows already sorted."""
    n = sorted_rows.shape[-1]
    k = np.arange(n)
    return 2.0 * np.sum((2 * k - n + 1) * sorted_rows, axis=-1) / (n * n)


def _searchsorted_right(sorted_rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Row-wise ``searchsorted(side="right")`` for arrays with leading batch axes."""
    batch = sorted_rows.shape[:-1]
    if not batch:
        return np.searchsorted(sorted_rows, values, side="right")
    s = sorted_rows.reshape(-1, sorted_rows.shape[-1])
    v = values.reshape(-1, values.shape[-1])
    out = np.stack(
        [np.searchsorted(si, vi, side="right") for si, vi in zip(s, v, strict=True)]
    )
    return out.reshape(*batch, values.shape[-1])
