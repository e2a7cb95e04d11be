"""Backend-independent parts of the autoguides: argument checks and the Mean-KL
initialisation (NumPy)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

__all__ = [
    "BUDGET_SPLITS",
    "DROPPED",
    "budget_nats",
    "check_dropout_p",
    "check_init_scale",
    "meankl_init",
    "scale_site_selector",
]

BUDGET_SPLITS = ("learned", "equal")
DROPPED = ("zero", "one")
_LN2 = math.log(2.0)


def budget_nats(kl_budget_bits: Any, kl_budget_nats: Any) -> float:
    """The KL budget in nats, from exactly one of the two arguments (> 0)."""
    if (kl_budget_bits is None) == (kl_budget_nats is None):
        raise ValueError("give exactly one of kl_budget_bits or kl_budget_nats")
    name, value = (
        ("kl_budget_bits", kl_budget_bits)
        if kl_budget_nats is None
        else ("kl_budget_nats", kl_budget_nats)
    )
    if isinstance(value, bool) or not isinstance(value, int | float | np.number):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return float(value) * (_LN2 if name == "kl_budget_bits" else 1.0)


def check_init_scale(init_scale: Any) -> float:
    if isinstance(init_scale, bool) or not isinstance(init_scale, int | float):
        raise TypeError(f"init_scale must be a number, got {init_scale!r}")
    if not (math.isfinite(init_scale) and init_scale > 0):
        raise ValueError(f"init_scale must be > 0, got {init_scale!r}")
    return float(init_scale)


def check_dropout_p(p: Any) -> float:
    if isinstance(p, bool) or not isinstance(p, int | float):
        raise TypeError(f"p must be a number, got {p!r}")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"p must be in [0, 1), got {p!r}")
    return float(p)


def check_scale_dropout(
    p: Any, dropped: Any, share_across_batch: Any, share_across_layers: Any
) -> float:
    """Validate ``AutoScaleDropout``'s options; returns ``p`` as a float."""
    p = check_dropout_p(p)
    if dropped not in DROPPED:
        raise ValueError(f"dropped must be one of {list(DROPPED)}, got {dropped!r}")
    if share_across_batch is not True:
        raise ValueError(
            "share_across_batch=False (a draw per example) needs per-example scale "
            "sites; AutoScaleDropout draws one mask per forward pass"
        )
    if not isinstance(share_across_layers, bool):
        raise TypeError(
            f"share_across_layers must be a bool, got {share_across_layers!r}"
        )
    return p


def scale_site_selector(scale_sites: Any) -> Callable[[str], bool]:
    """``None`` (sites whose name contains ``"scale"``), a list of names, or a
    callable ``name -> bool``."""
    if scale_sites is None:
        return lambda name: "scale" in name
    if callable(scale_sites):
        return lambda name: bool(scale_sites(name))
    if isinstance(scale_sites, str) or not all(isinstance(s, str) for s in scale_sites):
        raise TypeError(
            "scale_sites must be None, a list of site names or a callable, "
            f"got {scale_sites!r}"
        )
    names = frozenset(scale_sites)
    return lambda name: name in names


def meankl_init(
    locs: Mapping[str, np.ndarray],
    priors: Mapping[str, tuple[np.ndarray, np.ndarray]],
    budget: float,
    split: str,
    init_scale: float,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Initial ``(m, phi)`` of a Mean-KL guide whose means start at ``locs``.

    Each weight's initial KL share is that of :math:`\\mathcal N(\\mu_0,
    \\mathrm{init\\_scale}^2)` to its prior (``"learned"``; rescaled to sum to the
    budget) or ``budget / D`` (``"equal"``); the mean parameter is
    ``atanh((mu0 - nu) / (rho sqrt(2 kappa)))``. Raises when the budget cannot hold
    the initial means (``|mu0 - nu| >= rho sqrt(2 kappa)`` for some weight).
    """
    d = sum(int(np.size(v)) for v in locs.values())
    kappa0: dict[str, np.ndarray] = {}
    for name, mu0 in locs.items():
        nu, rho = priors[name]
        if split == "equal":
            kappa0[name] = np.full(np.shape(mu0), budget / d)
        else:
            r = (init_scale / rho) ** 2
            dz = ((mu0 - nu) / rho) ** 2
            kappa0[name] = 0.5 * (r - 1.0 - np.log(r) + dz)
    if split == "learned":
        total = sum(float(k.sum()) for k in kappa0.values())
        kappa0 = {k: v * (budget / total) for k, v in kappa0.items()}
    worst = 0.0
    for name, mu0 in locs.items():
        nu, rho = priors[name]
        u = np.abs(mu0 - nu) / (rho * np.sqrt(2.0 * kappa0[name]))
        worst = max(worst, float(u.max(initial=0.0)))
    if worst >= 1.0 - 1e-6:
        factor = worst**2 * 1.0001
        raise ValueError(
            f"the KL budget of {budget:.6g} nats ({budget / _LN2:.6g} bits) is too "
            "small for the mean constraint |mu - nu| <= rho sqrt(2 kappa) at the "
            f"initial means: it needs at least {budget * factor:.6g} nats "
            f"({budget * factor / _LN2:.6g} bits) with budget_split={split!r}; raise "
            "the budget or start the means closer to "
            "the prior (e.g. init_loc_fn=init_to_uniform(radius=0.5))"
        )
    m0, phi0 = {}, {}
    for name, mu0 in locs.items():
        nu, rho = priors[name]
        u = (mu0 - nu) / (rho * np.sqrt(2.0 * kappa0[name]))
        m0[name] = np.arctanh(u)
        phi0[name] = np.log(kappa0[name] / budget)
    return m0, phi0
