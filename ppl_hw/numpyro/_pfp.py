"""Discrete-weight variational inference through the probabilistic forward pass
(Roth & Pernkopf): ``AutoDiscreteWeight`` and ``PFP_ELBO`` for NumPyro."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro import handlers
from numpyro.distributions import (
    Delta,
    ExpandedDistribution,
    Independent,
    MaskedDistribution,
    constraints,
)
from numpyro.infer.autoguide import AutoGuide
from numpyro.infer.elbo import ELBO

from ..core.discrete import discrete_kl
from ..core.pfp import Moments
from .distributions import DiscreteWeight

__all__ = ["PFP_ELBO", "AutoDiscreteWeight"]


def _base_discrete(fn: Any) -> DiscreteWeight | None:
    while isinstance(fn, Independent | ExpandedDistribution | MaskedDistribution):
        fn = fn.base_dist
    return fn if isinstance(fn, DiscreteWeight) else None


class AutoDiscreteWeight(AutoGuide):
    r"""Independent categorical distributions over each weight's value grid
    (Roth & Pernkopf), for the sites whose prior is a
    :class:`~ppl_hw.numpyro.distributions.DiscreteWeight`; point estimates for the
    other (real) latent sites. Logits are bounded to ``[-logit_bound, logit_bound]``
    (the paper's code: 5). Train with :class:`PFP_ELBO`; sample networks with
    ``Predictive``; deploy :meth:`most_probable` or :meth:`to_low_precision`.

    :param model: the model.
    :param logit_bound: the bound of the per-weight logits.
    :param init_probs: ``None`` (random logits, standard deviation ``init_scale``,
        NumPy seed ``seed``) or ``{site: probs}`` with shape ``site_shape + (K,)``
        (e.g. from a real-valued network).
    :param init_scale: standard deviation of the random initial logits.
    :param seed: seed of the random initial logits.
    :param prefix: parameter-name prefix.
    """

    def __init__(
        self,
        model: Any,
        *,
        logit_bound: float = 5.0,
        init_probs: dict | None = None,
        init_scale: float = 1.0,
        seed: int = 0,
        prefix: str = "auto",
    ):
        self.init_scale, self.seed = float(init_scale), int(seed)
        if not logit_bound > 0:
            raise ValueError(f"logit_bound must be > 0, got {logit_bound!r}")
        self.logit_bound = float(logit_bound)
        self.init_probs = dict(init_probs or {})
        self._discrete: dict[str, tuple] = {}
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
                values = np.asarray(base.values, np.float32)
                k = values.shape[-1]
                if name in self.init_probs:
                    p = np.asarray(self.init_probs[name], np.float64)
                    if p.shape != (*shape, k):
                        raise ValueError(
                            f"init_probs[{name!r}] must have shape {(*shape, k)}, "
                            f"got {p.shape}"
                        )
                    logits = np.log(np.clip(p, 1e-12, None))
                    logits = logits - logits.mean(-1, keepdims=True)
                    logits = np.clip(logits, -self.logit_bound, self.logit_bound)
                else:
                    # random logits break the symmetry between units (uniform
                    # logits give every unit the same zero-mean weights)
                    rng = np.random.default_rng(self.seed + len(self._discrete))
                    logits = self.init_scale * rng.standard_normal((*shape, k))
                self._discrete[name] = (
                    shape,
                    values,
                    jnp.asarray(logits, jnp.float32),
                    np.asarray(base.logits, np.float32),
                )
            elif site["fn"].is_discrete:
                raise ValueError(
                    f"AutoDiscreteWeight: site {name!r} is discrete but not a "
                    f"DiscreteWeight ({type(site['fn']).__name__})"
                )
            else:
                self._real[name] = site["value"]
        if not self._discrete:
            raise ValueError("AutoDiscreteWeight found no DiscreteWeight sites")

    def _logits(self, name: str) -> Any:
        b = self.logit_bound
        return numpyro.param(
            f"{name}_{self.prefix}_logits",
            self._discrete[name][2],
            constraint=constraints.interval(-b, b),
        )

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        out = {}
        for name, (shape, values, _, _) in self._discrete.items():
            fn = DiscreteWeight(values, logits=self._logits(name))
            out[name] = numpyro.sample(name, fn.to_event(len(shape)))
        for name, init in self._real.items():
            value = numpyro.param(f"{name}_{self.prefix}_loc", init)
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
        for key, (name, (_, values, _, _)) in zip(
            keys, self._discrete.items(), strict=True
        ):
            fn = DiscreteWeight(values, logits=params[f"{name}_{self.prefix}_logits"])
            out[name] = fn.sample(key, tuple(sample_shape))
        for name in self._real:
            loc = params[f"{name}_{self.prefix}_loc"]
            out[name] = jnp.broadcast_to(loc, tuple(sample_shape) + jnp.shape(loc))
        return out

    # -- read-outs ---------------------------------------------------------------------

    def _q(self, params: dict, name: str) -> Any:
        return jax.nn.softmax(params[f"{name}_{self.prefix}_logits"], axis=-1)

    def moments(self, params: dict) -> dict:
        """``{site: Moments}`` of the weights (and the real sites' values)."""
        out: dict = {}
        for name, (_, values, _, _) in self._discrete.items():
            q = self._q(params, name)
            mean = q @ values
            var = jnp.sum(q * (values - mean[..., None]) ** 2, axis=-1)
            out[name] = Moments(mean, var)
        for name in self._real:
            out[name] = params[f"{name}_{self.prefix}_loc"]
        return out

    def kl(self, params: dict) -> Any:
        """Categorical KL of the weights' distributions to their priors (nats)."""
        total = 0.0
        for name, (_, _, _, prior_logits) in self._discrete.items():
            log_q = jax.nn.log_softmax(params[f"{name}_{self.prefix}_logits"], -1)
            log_p = jax.nn.log_softmax(jnp.asarray(prior_logits), -1)
            total = total + jnp.sum(discrete_kl(log_q, log_p, xp=jnp))
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
        out = {}
        for name, (_, values, _, _) in self._discrete.items():
            i = np.asarray(jnp.argmax(params[f"{name}_{self.prefix}_logits"], -1))
            out[name] = (i.astype(np.int8), values.copy())
        return out

    def sparsity(self, params: dict) -> dict:
        """Share of each site's most probable weights equal to 0."""
        return {
            k: float(np.mean(grid[i] == 0))
            for k, (i, grid) in self.to_low_precision(params).items()
        }


class PFP_ELBO(ELBO):
    r"""Negative ELBO of a discrete-weight network through the probabilistic forward
    pass: the model runs once with each ``DiscreteWeight`` site replaced by the
    :class:`~ppl_hw.core.pfp.Moments` of its guide distribution, so the ``nn``
    primitives propagate means and variances; the model turns its output moments
    into logits with :func:`ppl_hw.numpyro.nn.sample_logits` (local
    reparameterisation: one Gaussian draw per logit), and the observed sites'
    log-likelihood minus ``kl_weight`` times the categorical KL to the prior is the
    ELBO. Use with :class:`AutoDiscreteWeight`.

    :param kl_weight: weight of the KL term (1: the ELBO).
    """

    can_infer_discrete = True  # the discrete weights are integrated by the PFP

    def __init__(self, num_particles: int = 1, *, kl_weight: float = 1.0):
        if not kl_weight >= 0:
            raise ValueError(f"kl_weight must be >= 0, got {kl_weight!r}")
        self.kl_weight = float(kl_weight)
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
        params = {k: v for k, v in param_map.items()}
        values = guide.moments(params)

        def single(key: Any) -> Any:
            seeded = handlers.seed(handlers.substitute(model, data=values), key)
            tr = handlers.trace(seeded).get_trace(*args, **kwargs)
            ll = 0.0
            for site in tr.values():
                if site["type"] == "sample" and site["is_observed"]:
                    lp = site["fn"].log_prob(site["value"])
                    scale = 1.0 if site["scale"] is None else site["scale"]
                    ll = ll + scale * jnp.sum(lp)
            return ll

        keys = jax.random.split(rng_key, self.num_particles)
        ll = (
            jnp.mean(jax.vmap(single)(keys))
            if self.num_particles > 1
            else single(rng_key)
        )
        return {
            "loss": -(ll - self.kl_weight * guide.kl(params)),
            "mutable_state": None,
        }
