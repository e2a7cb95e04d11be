"""Backend-independent parts of the autoguides: argument checks and the Mean-KL
initialisation (NumPy)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from ..core.checks import check_choice, check_int, check_number
from ..core.meankl import MAX_BITS_PER_WEIGHT
from .coding import check_bits_per_block, not_run_yet

__all__ = [
    "BUDGET_SPLITS",
    "DROPPED",
    "BlockSplit",
    "budget_nats",
    "check_dropout_p",
    "check_init_scale",
    "check_meankl_split",
    "check_num_samples",
    "meankl_init",
    "meankl_sites",
    "nonfinite_guide_error",
    "not_run_yet",
    "scale_site_selector",
    "warn_untraceable",
]

BUDGET_SPLITS = ("learned", "equal", "blocks")
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


def check_meankl_split(
    budget_split: Any, bits_per_block: Any, block_seed: Any
) -> tuple[int | None, int | None]:
    """Validate ``AutoMeanKL``'s split options; returns ``(bits_per_block,
    block_seed)`` (defaults 16 and 0 for ``"blocks"``, ``None`` otherwise)."""
    if budget_split not in BUDGET_SPLITS:
        raise ValueError(
            f"budget_split must be one of {list(BUDGET_SPLITS)}, got {budget_split!r}"
        )
    if budget_split != "blocks":
        for name, value in (
            ("bits_per_block", bits_per_block),
            ("block_seed", block_seed),
        ):
            if value is not None:
                raise ValueError(
                    f"{name} is only used with budget_split='blocks', got {name}="
                    f"{value!r} with budget_split={budget_split!r}"
                )
        return None, None
    bits = 16 if bits_per_block is None else bits_per_block
    seed = 0 if block_seed is None else block_seed
    bits = check_bits_per_block(bits)  # the coder's own range: 1..24
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"block_seed must be an int >= 0, got {seed!r}")
    return int(bits), int(seed)


class BlockSplit:
    """The KL budget shared out block by block (``budget_split="blocks"``).

    The weights (flattened in site order) are shuffled into the coding blocks of
    :func:`ppl_hw.core.coding.make_blocks` (``ceil(budget_bits / bits_per_block)``
    blocks, seed ``block_seed``); block ``b`` gets ``C_b = budget / num_blocks`` (at
    most ``bits_per_block`` bits) and its weights share it by a softmax of their
    logits within the block, so **every block's KL equals** ``C_b`` by construction —
    what MIRACLE's coder needs (``K = 2**bits_per_block`` candidates per block).
    """

    def __init__(self, sizes: Mapping[str, int], budget: float, bits: int, seed: int):
        from ..core import coding as _cc

        # the blocks are made over the sites in sorted-name order, the coding order
        # of ppl_hw.coding; index and block_of address the flat logits in the order
        # of ``sizes`` (the guide's own)
        self.names = list(sizes)  # the flat order index and block_of refer to
        names = sorted(sizes)
        d = sum(sizes.values())
        # round before the ceiling: bits -> nats -> bits is not exact in floating point
        num_blocks = min(math.ceil(round(budget / _LN2 / bits, 9)), d)
        self.blocks = _cc.make_blocks(
            [sizes[n] for n in names], bits, seed, num_blocks=num_blocks
        )
        start = dict(zip(sizes, np.cumsum([0, *sizes.values()])[:-1], strict=True))
        to_own = np.concatenate(
            [np.arange(start[n], start[n] + sizes[n]) for n in names]
        ).astype(np.int64)
        self.log_cb = math.log(budget / num_blocks)
        members = [to_own[self.blocks.members(b)] for b in range(num_blocks)]
        width = max(len(m) for m in members)
        self.index = np.zeros((num_blocks, width), dtype=np.int64)
        self.pad = np.full((num_blocks, width), -np.inf)
        for b, m in enumerate(members):
            self.index[b, : len(m)] = m
            self.index[b, len(m) :] = m[0]
            self.pad[b, : len(m)] = 0.0
        self.block_of = np.empty(d, dtype=np.int64)
        self.block_of[to_own] = self.blocks.block_of

    def share(self, kappa: np.ndarray) -> np.ndarray:
        """Rescale per-weight shares (flat, positive) so each block sums to ``C_b``."""
        totals = np.bincount(self.block_of, weights=kappa, minlength=len(self.index))
        return kappa * (math.exp(self.log_cb) / totals[self.block_of])


def meankl_sites(
    sites: Mapping[str, tuple[str, bool, bool, frozenset | None]],
) -> tuple[list[str], dict[str, str]]:
    """Which latent sites carry ``AutoMeanKL``'s KL budget.

    :param sites: ``{name: (prior class name, prior is Normal, support is real,
        latent sites the prior depends on or None when unknown)}`` in trace order.
    :returns: ``(budgeted, outside)``: the names of the sites with a fixed ``Normal``
        prior on the real line (the weights), and ``{name: reason}`` for the others,
        which the guide treats as ``AutoNormal`` does.
    :raises ValueError: when no site can carry the budget.
    """
    budgeted, outside = [], {}
    for name, (kind, normal, real, parents) in sites.items():
        if not normal:
            outside[name] = f"{kind} prior (not Normal)"
        elif not real:
            outside[name] = "constrained support"
        elif parents:
            outside[name] = (
                f"its Normal prior depends on latent sites {sorted(parents)}"
            )
        else:
            budgeted.append(name)
    if not budgeted:
        reasons = "; ".join(f"{k!r}: {v}" for k, v in outside.items())
        raise ValueError(
            "AutoMeanKL carries its KL budget on the sites with a fixed Normal prior "
            f"(the weights), and this model has none ({reasons or 'no latent sites'}); "
            "use AutoNormal for it"
        )
    return budgeted, outside


def nonfinite_guide_error(
    guide: str, bad: list[tuple[str, str, int, int]]
) -> FloatingPointError:
    """The error both adapters' guides raise when a parameter they hand to a sample
    site is not finite: ``bad`` lists ``(site, parameter, count, size)``."""
    parts = "; ".join(
        f"site {site!r} {what}: {count} of {size} values"
        for site, what, count, size in bad
    )
    return FloatingPointError(
        f"{guide}: non-finite guide parameters ({parts}). Training stopped: the step "
        "before ran on a NaN or infinite loss or gradient. Lower the learning rate, "
        "check the model's log density at the initial values (e.g. a prior scale of "
        "inf), or restart from the last finite parameters."
    )


def warn_untraceable(err: Exception) -> None:
    """``AutoMeanKL`` could not trace which priors depend on which sites: say so and
    what it assumes."""
    warnings.warn(
        "AutoMeanKL could not trace which priors depend on other latent sites "
        f"({type(err).__name__}: {err}); every Normal prior is taken as fixed",
        UserWarning,
        stacklevel=4,
    )


def check_num_samples(num_samples: Any) -> int:
    """Draws of a Monte Carlo estimate with a standard error: an int >= 2."""
    return check_int("num_samples", num_samples, low=2)


def check_init_scale(init_scale: Any) -> float:
    """The initial scale of a guide: a finite number > 0."""
    return check_number("init_scale", init_scale, low=0.0, open_low=True)


def check_dropout_p(p: Any) -> float:
    """A drop probability in [0, 1) (every dropout option of every layer)."""
    return check_number("p", p, low=0.0, high=1.0, open_high=True, interval=True)


def check_scale_dropout(
    p: Any, dropped: Any, share_across_batch: Any, share_across_layers: Any
) -> float:
    """Validate ``AutoScaleDropout``'s options; returns ``p`` as a float."""
    p = check_dropout_p(p)
    check_choice("dropped", dropped, DROPPED)
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
    blocks: BlockSplit | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Initial ``(m, phi)`` of a Mean-KL guide whose means start at ``locs``.

    Each weight's initial KL share is that of :math:`\\mathcal N(\\mu_0,
    \\mathrm{init\\_scale}^2)` to its prior (``"learned"``; rescaled to sum to the
    budget; ``"blocks"``: rescaled to each block's ``C_b`` by ``blocks``) or
    ``budget / D`` (``"equal"``); the mean parameter is
    ``atanh((mu0 - nu) / (rho sqrt(2 kappa)))``. Raises when the budget cannot hold
    the initial means (``|mu0 - nu| >= rho sqrt(2 kappa)`` for some weight).
    """
    d = sum(int(np.size(v)) for v in locs.values())
    if budget / d > MAX_BITS_PER_WEIGHT * _LN2:
        raise ValueError(
            f"the KL budget of {budget / _LN2:.6g} bits ({budget:.6g} nats) is "
            f"{budget / _LN2 / d:.6g} bits per weight for the guide's {d} weights; "
            f"a Mean-KL guide holds at most {MAX_BITS_PER_WEIGHT:g} bits per weight "
            "(a float32 weight carries 32 bits, and the posterior scale would "
            "underflow); lower kl_budget_bits / kl_budget_nats"
        )
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
    elif split == "blocks":
        assert blocks is not None
        names = blocks.names
        flat = blocks.share(np.concatenate([kappa0[k].reshape(-1) for k in names]))
        ends = np.cumsum([kappa0[k].size for k in names])
        kappa0 = {
            k: part.reshape(np.shape(kappa0[k]))
            for k, part in zip(names, np.split(flat, ends[:-1]), strict=True)
        }
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
        phi0[name] = np.log(kappa0[name] / budget)  # softmax-invariant per block
    return m0, phi0
