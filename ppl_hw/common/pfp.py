"""Backend-independent parts of ``AutoDiscreteWeight`` and ``PFP_ELBO``: argument
checks, the initial parameters (random, given probabilities, or a trained
real-valued network), the low-precision export and the Taylor output term."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..core import discrete as dc
from ..core.backend import NUMPY
from ..core.checks import check_choice, check_int, check_number

__all__ = [
    "OUTPUTS",
    "DiscreteGuideMixin",
    "DiscreteSite",
    "check_elbo_args",
    "taylor_correction",
]

OUTPUTS = ("sample", "taylor")


@dataclass(frozen=True)
class DiscreteSite:
    """A ``DiscreteWeight`` site as the guide sees it."""

    shape: tuple[int, ...]
    values: tuple[float, ...]
    init: np.ndarray  # initial parameters (float32), shape + (n_params,)
    prior_log_probs: np.ndarray  # normalised prior log q over the grid (float32)

    @property
    def grid(self) -> np.ndarray:
        return np.asarray(self.values, np.float32)


def check_elbo_args(
    num_particles: Any, kl_weight: Any, output: Any
) -> tuple[int, float, str]:
    """``PFP_ELBO``'s ``num_particles`` (an int >= 1), ``kl_weight`` (>= 0) and
    ``output`` (one of the outputs)."""
    n = check_int("num_particles", num_particles, low=1)
    kl = check_number("kl_weight", kl_weight, low=0.0)
    return n, kl, check_choice("output", output, OUTPUTS)


class DiscreteGuideMixin:
    """Argument handling, initial parameters and read-outs shared by the NumPyro and
    Pyro ``AutoDiscreteWeight``; the backends supply the parameters and arrays."""

    _discrete: dict[str, DiscreteSite]

    def _init_discrete_args(
        self,
        *,
        logit_bound: Any,
        parameterization: Any,
        init_probs: Any,
        init_weights: Any,
        q_max: Any,
        init_scale: Any,
        seed: Any,
    ) -> None:
        self.logit_bound = check_number(
            "logit_bound", logit_bound, low=0.0, open_low=True
        )
        if parameterization not in dc.PARAMETERIZATIONS:
            raise ValueError(
                f"parameterization must be one of {dc.PARAMETERIZATIONS}, "
                f"got {parameterization!r}"
            )
        self.parameterization = parameterization
        self.init_scale = check_number("init_scale", init_scale)
        if self.init_scale < 0:
            raise ValueError(f"init_scale must be >= 0, got {init_scale!r}")
        if isinstance(seed, bool) or not isinstance(seed, int | np.integer):
            raise TypeError(f"seed must be an int, got {seed!r}")
        self.seed = int(seed)
        self.q_max = check_number("q_max", q_max)
        for arg, value in (("init_probs", init_probs), ("init_weights", init_weights)):
            if value is not None and not isinstance(value, dict):
                raise TypeError(f"{arg} must be a dict {{site: array}}, got {value!r}")
        both = set(init_probs or {}) & set(init_weights or {})
        if both:
            raise ValueError(
                f"sites {sorted(both)} are in both init_probs and init_weights"
            )
        self.init_probs = dict(init_probs or {})
        self.init_weights = dict(init_weights or {})
        self._discrete = {}

    def _add_discrete_site(
        self, name: str, shape: tuple[int, ...], values: Any, prior: Any
    ) -> None:
        """Register a site: check the parameterisation against its grid and compute
        the initial parameters."""
        values = dc.check_value_grid(values)
        n = dc.check_parameterization(self.parameterization, values)
        k = len(values)
        if name in self.init_probs:
            p = _numpy(self.init_probs[name])
            if p.shape != (*shape, k):
                raise ValueError(
                    f"init_probs[{name!r}] must have shape {(*shape, k)}, got {p.shape}"
                )
            if np.any(p < 0) or not np.allclose(p.sum(-1), 1.0, atol=1e-4):
                raise ValueError(
                    f"init_probs[{name!r}] must be probabilities (>= 0, rows summing "
                    "to 1)"
                )
        elif name in self.init_weights:
            w = _numpy(self.init_weights[name])
            if w.shape != shape:
                raise ValueError(
                    f"init_weights[{name!r}] must have shape {shape}, got {w.shape}"
                )
            p = dc.probs_from_real(w, values, self.q_max)
        else:
            p = None
        if p is None:
            # random parameters break the symmetry between units (equal logits give
            # every unit the same zero-mean weights)
            rng = np.random.default_rng(self.seed + len(self._discrete))
            theta = self.init_scale * rng.standard_normal((*shape, n))
        else:
            theta = dc.params_from_probs(p, self.parameterization, values)
        theta = np.clip(theta, -self.logit_bound, self.logit_bound)
        from scipy.special import logsumexp

        prior = np.asarray(prior, np.float64)
        prior = prior - logsumexp(prior, axis=-1, keepdims=True)
        self._discrete[name] = DiscreteSite(
            shape, values, theta.astype(np.float32), prior.astype(np.float32)
        )

    def _check_init_sites(self) -> None:
        unknown = (set(self.init_probs) | set(self.init_weights)) - set(self._discrete)
        if unknown:
            raise ValueError(
                f"init_probs/init_weights name sites {sorted(unknown)} that are not "
                f"DiscreteWeight sites of the model ({sorted(self._discrete)})"
            )
        if not self._discrete:
            raise ValueError("AutoDiscreteWeight found no DiscreteWeight sites")

    def _log_q(self, name: str, theta: Any, xp: Any, special: Any) -> Any:
        site = self._discrete[name]
        return dc.log_probs_from_params(
            theta, self.parameterization, site.values, xp=xp, special=special
        )

    def _low_from_thetas(self, thetas: dict[str, np.ndarray]) -> dict:
        out = {}
        for name, site in self._discrete.items():
            log_q = self._log_q(
                name, thetas[name].astype(np.float64), np, NUMPY.special
            )
            out[name] = (np.argmax(log_q, -1).astype(np.int8), site.grid.copy())
        return out

    @staticmethod
    def _sparsity_of(low: dict) -> dict:
        return {k: float(np.mean(grid[i] == 0)) for k, (i, grid) in low.items()}

    def bits_per_weight(self) -> float:
        """Bits to store one weight of the exported network, ``log2 K`` of the
        largest grid (ternary: 1.58)."""
        return max(math.log2(len(s.values)) for s in self._discrete.values())


def _numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x, np.float64)


# -- the Taylor output: sample_logits hands its Moments to PFP_ELBO through each
# adapter's nn.TaylorOutput messenger ------------------------------------------------


def taylor_correction(
    rec: list, observed: list[tuple[Any, Any, Any]], xp: Any, special: Any
) -> Any:
    r"""The second-order term :math:`-\tfrac12 \sum_c s_c (1 - s_c) v_c` of the
    expected log-likelihood, summed over examples, for the one recorded output.

    :param rec: the Moments recorded by ``sample_logits`` (exactly one).
    :param observed: ``(logits shape, scale, mask)`` of the observed categorical sites.
    """
    if len(rec) != 1:
        raise ValueError(
            "PFP_ELBO(output='taylor') needs exactly one nn.sample_logits output in "
            f"the model, got {len(rec)}"
        )
    m, v = rec[0].mean, rec[0].var
    match = [o for o in observed if tuple(o[0]) == tuple(m.shape)]
    if len(match) != 1:
        raise ValueError(
            "PFP_ELBO(output='taylor') needs the sample_logits output to feed exactly "
            f"one observed Categorical site with logits of shape {tuple(m.shape)}; "
            f"found {len(match)}"
        )
    _, scale, mask = match[0]
    s = xp.exp(m - special.logsumexp(m, axis=-1, keepdims=True))
    term = -0.5 * xp.sum(s * (1.0 - s) * v, axis=-1)
    if mask is not None:
        term = xp.where(mask, term, 0.0)
    return (1.0 if scale is None else scale) * xp.sum(term)
