"""Discrete-weight variational inference through the probabilistic forward pass
(Roth & Pernkopf): ``AutoDiscreteWeight`` and ``PFP_ELBO`` for Pyro."""

from __future__ import annotations

import operator
from contextlib import nullcontext
from typing import Any

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.distributions import constraints
from pyro.infer.autoguide import AutoGuide
from pyro.infer.autoguide.utils import deep_setattr
from pyro.infer.elbo import ELBO
from pyro.nn.module import PyroModule, PyroParam
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

from ..common import pfp as gc
from ..core.discrete import discrete_kl, discrete_mean, discrete_variance
from ._backend import BACKEND, guard_finite
from .distributions import DiscreteWeight
from .distributions._base import base_distribution
from .nn import Moments, TaylorOutput

__all__ = ["PFP_ELBO", "AutoDiscreteWeight"]

_xp, _sp = BACKEND.xp, BACKEND.special


class _SubstituteSamples(Messenger):
    """Give sample sites the values in ``data`` (Pyro's ``substitute`` only
    substitutes ``pyro.param`` sites); the sites stay latent."""

    def __init__(self, data: dict):
        super().__init__()
        self.data = data

    def _pyro_sample(self, msg: dict) -> None:
        if msg["name"] in self.data and msg["value"] is None:
            msg["value"] = self.data[msg["name"]]


class AutoDiscreteWeight(gc.DiscreteGuideMixin, AutoGuide):
    r"""Independent categorical distributions over each weight's value grid
    (Roth & Pernkopf) for the ``DiscreteWeight`` sites, point estimates for the
    other latent sites; Pyro. The same options as
    :class:`ppl_hw.numpyro.autoguide.AutoDiscreteWeight`; the read-outs take no
    arguments (the parameters live in the param store, e.g.
    ``"AutoDiscreteWeight.logits.w0"``).

    :param model: the model.
    :param parameterization: ``"logits"``, ``"logits_fixedzero"`` or ``"shayer"``.
    :param logit_bound: the bound of the parameters.
    :param init_probs: ``{site: probs}`` (shape ``site_shape + (K,)``).
    :param init_weights: ``{site: real weights}`` of a trained real-valued network.
    :param q_max: the largest initial probability of ``init_weights``.
    :param init_scale: standard deviation of the random initial parameters.
    :param seed: NumPy seed of the random initial parameters.
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
        create_plates: Any = None,
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
        self._real: dict[str, int] = {}
        super().__init__(model, create_plates=create_plates)

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        super()._setup_prototype(*args, **kwargs)
        self.logits = PyroModule()
        self.locs = PyroModule()
        b = self.logit_bound
        for name, site in self.prototype_trace.iter_stochastic_nodes():
            if site_is_subsample(site):
                continue
            base = base_distribution(site["fn"])
            if isinstance(base, DiscreteWeight):
                shape = tuple(site["value"].shape)
                self._add_discrete_site(name, shape, base._values, base.logits)
                init = torch.as_tensor(self._discrete[name].init)
                deep_setattr(
                    self.logits,
                    name,
                    PyroParam(init, constraints.interval(-b, b), init.dim()),
                )
            elif site["fn"].support.is_discrete:
                raise ValueError(
                    f"AutoDiscreteWeight: site {name!r} is discrete but not a "
                    f"DiscreteWeight ({type(site['fn']).__name__})"
                )
            else:
                value = site["value"].detach()
                self._real[name] = value.dim()
                deep_setattr(
                    self.locs,
                    name,
                    PyroParam(value, site["fn"].support, value.dim()),
                )
        self._check_init_sites()

    def _theta(self, name: str) -> torch.Tensor:
        # inside the module's context the PyroParams are pyro.param statements (so
        # SVI sees them when the read-outs run outside forward)
        with self._pyro_context:
            return operator.attrgetter(name)(self.logits)

    def _loc(self, name: str) -> torch.Tensor:
        with self._pyro_context:
            return operator.attrgetter(name)(self.locs)

    def _log_q_of(self, name: str) -> torch.Tensor:
        return self._log_q(name, self._theta(name), _xp, _sp)

    def forward(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        out = {}
        theta = {name: self._theta(name) for name in self._discrete}
        real = {name: self._loc(name) for name in self._real}
        guard_finite(
            "AutoDiscreteWeight",
            {
                **{(n, "logits"): v for n, v in theta.items()},
                **{(n, "value"): v for n, v in real.items()},
            },
        )
        for name, site in self._discrete.items():
            log_q = self._log_q(name, theta[name], _xp, _sp)
            fn = DiscreteWeight(site.values, logits=log_q)
            out[name] = pyro.sample(name, fn.to_event(len(site.shape)))
        for name, event_dim in self._real.items():
            out[name] = pyro.sample(name, dist.Delta(real[name], event_dim=event_dim))
        return out

    # -- read-outs ---------------------------------------------------------------------

    def probs(self) -> dict[str, torch.Tensor]:
        """``{site: q}``, the probabilities over each weight's grid."""
        return {n: self._log_q_of(n).exp() for n in self._discrete}

    def moments(self) -> dict:
        """``{site: Moments}`` of the weights (and the real sites' values)."""
        out: dict = {}
        for name, site in self._discrete.items():
            log_q = self._log_q_of(name)
            grid = torch.as_tensor(site.grid, dtype=log_q.dtype)
            out[name] = Moments(
                discrete_mean(log_q, grid, xp=_xp),
                discrete_variance(log_q, grid, xp=_xp),
            )
        for name in self._real:
            out[name] = self._loc(name)
        return out

    def kl(self) -> torch.Tensor:
        """Categorical KL of the weights' distributions to their priors (nats)."""
        total = torch.zeros(())
        for name, site in self._discrete.items():
            log_p = torch.as_tensor(site.prior_log_probs)
            kl = discrete_kl(self._log_q_of(name), log_p, xp=_xp)
            total = total + kl.expand(site.shape).sum()
        return total

    @torch.no_grad()
    def most_probable(self) -> dict[str, torch.Tensor]:
        """The most probable network: each weight at its most probable grid value
        (real sites at their point estimates)."""
        out: dict = {
            k: torch.as_tensor(grid[i])
            for k, (i, grid) in self.to_low_precision().items()
        }
        for name in self._real:
            out[name] = self._loc(name).detach().clone()
        return out

    @torch.no_grad()
    def to_low_precision(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{site: (int8 grid indices, grid)}`` of the most probable network."""
        return self._low_from_thetas(
            {n: self._theta(n).detach().cpu().numpy() for n in self._discrete}
        )

    def sparsity(self) -> dict[str, float]:
        """Share of each site's most probable weights equal to 0."""
        return self._sparsity_of(self.to_low_precision())


class PFP_ELBO(ELBO):
    r"""Negative ELBO of a discrete-weight network through the probabilistic forward
    pass, Pyro (see :class:`ppl_hw.numpyro.infer.PFP_ELBO`): the model runs with each
    ``DiscreteWeight`` site replaced by its guide :class:`~ppl_hw.pyro.nn.Moments`;
    ``nn.sample_logits`` turns the output moments into logits. Use with
    :class:`AutoDiscreteWeight` and ``pyro.infer.SVI``.

    :param num_particles: draws of the output (``output="sample"``).
    :param kl_weight: weight of the KL term (1: the ELBO).
    :param output: ``"sample"`` (local reparameterisation) or ``"taylor"`` (the
        second-order expansion).
    """

    def __init__(
        self, num_particles: int = 1, *, kl_weight: float = 1.0, output: str = "sample"
    ):
        num_particles, self.kl_weight, self.output = gc.check_elbo_args(
            num_particles, kl_weight, output
        )
        super().__init__(num_particles=num_particles)

    def differentiable_loss(
        self, model: Any, guide: Any, *args: Any, **kwargs: Any
    ) -> torch.Tensor:
        if not isinstance(guide, AutoDiscreteWeight):
            raise TypeError(
                "PFP_ELBO needs an AutoDiscreteWeight guide, "
                f"got {type(guide).__name__}"
            )
        if guide.prototype_trace is None:
            guide._setup_prototype(*args, **kwargs)
        values = guide.moments()
        n = self.num_particles if self.output == "sample" else 1
        ll = torch.zeros(())
        for _ in range(n):
            rec = TaylorOutput()
            with rec if self.output == "taylor" else nullcontext():
                tr = poutine.trace(_SubstituteSamples(values)(model)).get_trace(
                    *args, **kwargs
                )
            # observed: the likelihood; real latent: the point estimate's prior
            tr.compute_log_prob(
                site_filter=lambda name, site: (
                    site["is_observed"] or name in guide._real
                )
            )
            observed = []
            for name, site in tr.nodes.items():
                if site["type"] != "sample":
                    continue
                if site["is_observed"] or name in guide._real:
                    ll = ll + site["log_prob_sum"] / n
                base = base_distribution(site["fn"])
                if site["is_observed"] and isinstance(
                    base, torch.distributions.Categorical
                ):
                    mask = site["mask"]
                    mask = None if mask is None or isinstance(mask, bool) else mask
                    observed.append((base.logits.shape, site["scale"], mask))
            if self.output == "taylor":
                ll = ll + gc.taylor_correction(rec.moments, observed, _xp, _sp)
        return -(ll - self.kl_weight * guide.kl())

    def _get_trace(self, *args: Any, **kwargs: Any) -> Any:  # pragma: no cover
        raise NotImplementedError("PFP_ELBO runs the model on Moments, not traces")

    def loss(self, model: Any, guide: Any, *args: Any, **kwargs: Any) -> float:
        with torch.no_grad():
            return self.differentiable_loss(model, guide, *args, **kwargs).item()

    def loss_and_grads(
        self, model: Any, guide: Any, *args: Any, **kwargs: Any
    ) -> float:
        loss = self.differentiable_loss(model, guide, *args, **kwargs)
        loss.backward()
        return loss.item()
