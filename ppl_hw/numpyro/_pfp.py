"""Discrete-weight variational inference through the probabilistic forward pass
(Roth & Pernkopf): ``AutoDiscreteWeight`` and ``PFP_ELBO`` for NumPyro."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro import handlers
from numpyro.distributions import (
    CategoricalLogits,
    Delta,
    MaskedDistribution,
    constraints,
)
from numpyro.infer.autoguide import AutoGuide
from numpyro.infer.elbo import ELBO

from ..common import pfp as gc
from ..core.discrete import discrete_kl, discrete_mean, discrete_variance
from ._backend import BACKEND, guard_finite
from .distributions import DiscreteWeight
from .distributions._base import WRAPPERS, base_distribution
from .nn import Moments, TaylorOutput

__all__ = ["PFP_ELBO", "AutoDiscreteWeight"]


def _base_discrete(fn: Any) -> DiscreteWeight | None:
    fn = base_distribution(fn)
    return fn if isinstance(fn, DiscreteWeight) else None


class AutoDiscreteWeight(gc.DiscreteGuideMixin, AutoGuide):
    r"""Independent categorical distributions over each weight's value grid
    (Roth & Pernkopf), for the sites whose prior is a
    :class:`~ppl_hw.numpyro.distributions.DiscreteWeight`; point estimates for the
    other (real) latent sites. The parameters are bounded to
    ``[-logit_bound, logit_bound]`` (the paper's code: 5). Train with
    :class:`PFP_ELBO`; sample networks with ``Predictive``; deploy
    :meth:`most_probable` or :meth:`to_low_precision`.

    :param model: the model.
    :param parameterization: ``"logits"`` (one logit per grid value),
        ``"logits_fixedzero"`` (the logit of 0 fixed) or ``"shayer"`` (ternary:
        ``q(0) = σ(s)``, ``q(+) = (1 - σ(s)) σ(t)``); see
        :data:`ppl_hw.core.discrete.PARAMETERIZATIONS`.
    :param logit_bound: the bound of the parameters.
    :param init_probs: ``{site: probs}`` with shape ``site_shape + (K,)``: initial
        probabilities of those sites.
    :param init_weights: ``{site: real weights}`` of a trained real-valued network
        (e.g. an ``AutoNormal`` median): initial probabilities by the paper's
        empirical-CDF stretch (:func:`ppl_hw.core.discrete.probs_from_real`).
    :param q_max: the largest initial probability of ``init_weights`` (0.95).
    :param init_scale: standard deviation of the random initial parameters of the
        other sites.
    :param seed: NumPy seed of the random initial parameters.
    :param prefix: parameter-name prefix.

    **Example**::

        guide = AutoDiscreteWeight(model)
        svi = SVI(model, guide, numpyro.optim.Adam(1e-2), PFP_ELBO())
        params = svi.run(key, 1000, x, y).params
        weights = guide.most_probable(params)  # plug in with handlers.substitute
    """

    def __init__(
        self,
        model: Any,
        *,
        parameterization: str = "logits",
        logit_bound: float = 5.0,
        init_probs: dict | None = None,
        init_weights: dict | None = None,
        q_max: float = 0.95,
        init_scale: float = 1.0,
        seed: int = 0,
        prefix: str = "auto",
    ):
        self._init_discrete_args(
            logit_bound=logit_bound,
            parameterization=parameterization,
            init_probs=init_probs,
            init_weights=init_weights,
            q_max=q_max,
            init_scale=init_scale,
            seed=seed,
        )
        self._real: dict[str, Any] = {}
        super().__init__(model, prefix=prefix)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        with handlers.block():
            tr = handlers.trace(handlers.seed(self.model, 0)).get_trace(*args, **kwargs)
        self.prototype_trace = tr
        for name, site in tr.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            base = _base_discrete(site["fn"])
            if base is not None:
                shape = tuple(jnp.shape(site["value"]))
                self._add_discrete_site(name, shape, base.values, base.logits)
            elif site["fn"].is_discrete:
                raise ValueError(
                    f"AutoDiscreteWeight: site {name!r} is discrete but not a "
                    f"DiscreteWeight ({type(site['fn']).__name__})"
                )
            else:
                self._real[name] = (site["value"], site["fn"].support)
        self._check_init_sites()

    def _theta_name(self, name: str) -> str:
        return f"{name}_{self.prefix}_logits"

    def _theta(self, name: str) -> Any:
        b = self.logit_bound
        return numpyro.param(
            self._theta_name(name),
            jnp.asarray(self._discrete[name].init),
            constraint=constraints.interval(-b, b),
        )

    def _log_q_of(self, params: dict, name: str) -> Any:
        theta = params[self._theta_name(name)]
        return self._log_q(name, theta, jnp, BACKEND.special)

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        out = {}
        theta = {name: self._theta(name) for name in self._discrete}
        real = {
            name: numpyro.param(f"{name}_{self.prefix}_loc", init, constraint=support)
            for name, (init, support) in self._real.items()
        }
        guard_finite(
            "AutoDiscreteWeight",
            {
                **{(n, "logits"): v for n, v in theta.items()},
                **{(n, "value"): v for n, v in real.items()},
            },
        )
        for name, site in self._discrete.items():
            log_q = self._log_q(name, theta[name], jnp, BACKEND.special)
            fn = DiscreteWeight(site.values, logits=log_q)
            out[name] = numpyro.sample(name, fn.to_event(len(site.shape)))
        for name, value in real.items():
            out[name] = numpyro.sample(name, Delta(value, event_dim=jnp.ndim(value)))
        return out

    def sample_posterior(
        self,
        rng_key: Any,
        params: dict,
        *args: Any,
        sample_shape: tuple = (),
        **kwargs: Any,
    ) -> dict:
        """Sampled networks: each weight drawn from its categorical."""
        out: dict = {}
        keys = jax.random.split(rng_key, len(self._discrete))
        for key, (name, site) in zip(keys, self._discrete.items(), strict=True):
            fn = DiscreteWeight(site.values, logits=self._log_q_of(params, name))
            out[name] = fn.sample(key, tuple(sample_shape))
        for name in self._real:
            loc = params[f"{name}_{self.prefix}_loc"]
            out[name] = jnp.broadcast_to(loc, tuple(sample_shape) + jnp.shape(loc))
        return out

    # -- read-outs ---------------------------------------------------------------------

    def probs(self, params: dict) -> dict:
        """``{site: q}``, the probabilities over each weight's grid."""
        return {n: jnp.exp(self._log_q_of(params, n)) for n in self._discrete}

    def moments(self, params: dict) -> dict:
        """``{site: Moments}`` of the weights (and the real sites' values)."""
        out: dict = {}
        for name, site in self._discrete.items():
            log_q = self._log_q_of(params, name)
            grid = jnp.asarray(site.grid)
            out[name] = Moments(
                discrete_mean(log_q, grid, xp=jnp),
                discrete_variance(log_q, grid, xp=jnp),
            )
        for name in self._real:
            out[name] = params[f"{name}_{self.prefix}_loc"]
        return out

    def kl(self, params: dict) -> Any:
        """Categorical KL of the weights' distributions to their priors (nats)."""
        total = 0.0
        for name, site in self._discrete.items():
            log_p = jnp.asarray(site.prior_log_probs)
            kl = discrete_kl(self._log_q_of(params, name), log_p, xp=jnp)
            total = total + jnp.sum(jnp.broadcast_to(kl, site.shape))
        return total

    def most_probable(self, params: dict) -> dict:
        """The most probable network: each weight at its most probable grid value
        (real sites at their point estimates)."""
        idx = self.to_low_precision(params)
        out: dict = {k: jnp.asarray(grid[i]) for k, (i, grid) in idx.items()}
        for name in self._real:
            out[name] = params[f"{name}_{self.prefix}_loc"]
        return out

    def to_low_precision(self, params: dict) -> dict:
        """``{site: (int8 grid indices, grid)}`` of the most probable network."""
        return self._low_from_thetas(
            {n: np.asarray(params[self._theta_name(n)]) for n in self._discrete}
        )

    def sparsity(self, params: dict) -> dict:
        """Share of each site's most probable weights equal to 0."""
        return self._sparsity_of(self.to_low_precision(params))


class PFP_ELBO(ELBO):
    r"""Negative ELBO of a discrete-weight network through the probabilistic forward
    pass: the model runs once with each ``DiscreteWeight`` site replaced by the
    :class:`~ppl_hw.numpyro.nn.Moments` of its guide distribution, so the ``nn``
    primitives propagate means and variances, and the model turns its output moments
    into logits with :func:`ppl_hw.numpyro.nn.sample_logits`. The ELBO is the
    observed sites' expected log-likelihood minus ``kl_weight`` times the categorical
    KL to the prior. Use with :class:`AutoDiscreteWeight`.

    :param num_particles: draws of the output (``output="sample"``).
    :param kl_weight: weight of the KL term (1: the ELBO; the paper's code trains
        with a negligible weight).
    :param output: ``"sample"`` — local reparameterisation, one Gaussian draw
        ``m + sqrt(v) ε`` per logit (the paper's ECML code) — or ``"taylor"`` — the
        second-order expansion :math:`\log\mathrm{softmax}_y(m) - \tfrac12
        \sum_c s_c (1 - s_c) v_c` (deterministic; one ``sample_logits`` output
        feeding one observed ``Categorical`` site).
    """

    can_infer_discrete = True  # the discrete weights are integrated by the PFP

    def __init__(
        self, num_particles: int = 1, *, kl_weight: float = 1.0, output: str = "sample"
    ):
        num_particles, self.kl_weight, self.output = gc.check_elbo_args(
            num_particles, kl_weight, output
        )
        super().__init__(num_particles=num_particles)

    def loss(
        self,
        rng_key: Any,
        param_map: dict,
        model: Any,
        guide: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        return self.loss_with_mutable_state(
            rng_key, param_map, model, guide, *args, **kwargs
        )["loss"]

    def loss_with_mutable_state(
        self,
        rng_key: Any,
        param_map: dict,
        model: Any,
        guide: Any,
        *args: Any,
        **kwargs: Any,
    ) -> dict:
        if not isinstance(guide, AutoDiscreteWeight):
            raise TypeError(
                "PFP_ELBO needs an AutoDiscreteWeight guide, "
                f"got {type(guide).__name__}"
            )
        if guide.prototype_trace is None:
            guide._setup_prototype(*args, **kwargs)
        params = dict(param_map)
        values = guide.moments(params)

        def single(key: Any) -> Any:
            seeded = handlers.seed(handlers.substitute(model, data=values), key)
            rec = TaylorOutput()
            with rec if self.output == "taylor" else nullcontext():
                tr = handlers.trace(seeded).get_trace(*args, **kwargs)
            ll, observed = 0.0, []
            for name, site in tr.items():
                if site["type"] != "sample":
                    continue
                if site["is_observed"] or name in guide._real:
                    # observed: the likelihood; real latent: the point estimate's
                    # prior density (a Delta guide's ELBO)
                    lp = site["fn"].log_prob(site["value"])
                    scale = 1.0 if site["scale"] is None else site["scale"]
                    ll = ll + scale * jnp.sum(lp)
                if site["is_observed"]:
                    base = base_distribution(site["fn"])
                    if isinstance(base, CategoricalLogits):
                        observed.append((jnp.shape(base.logits), scale, _mask(site)))
            if self.output == "taylor":
                ll = ll + gc.taylor_correction(
                    rec.moments, observed, jnp, BACKEND.special
                )
            return ll

        if self.output == "sample" and self.num_particles > 1:
            keys = jax.random.split(rng_key, self.num_particles)
            ll = jnp.mean(jax.vmap(single)(keys))
        else:
            ll = single(rng_key)
        return {
            "loss": -(ll - self.kl_weight * guide.kl(params)),
            "mutable_state": None,
        }


def _mask(site: dict) -> Any:
    fn, mask = site["fn"], None
    while isinstance(fn, WRAPPERS):
        if isinstance(fn, MaskedDistribution) and not isinstance(fn._mask, bool):
            mask = fn._mask
        fn = fn.base_dist
    return mask
