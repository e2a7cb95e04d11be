"""Inference algorithms of ppl_hw for Pyro: :class:`MeanVarAnnealing` (the MIRACLE
Mean-Var baseline)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pyro import poutine
from pyro.infer.autoguide import AutoNormal
from pyro.infer.util import zero_grads

from ..common import infer as mv
from ..core import gaussian as _gauss
from ..core.coding import Blocks
from ._backend import BACKEND
from ._pfp import PFP_ELBO
from ._sghmc import SGHMC, SpikeSlabEM
from .autoguide import _normal_prior

__all__ = ["PFP_ELBO", "SGHMC", "MeanVarAnnealing", "SpikeSlabEM"]

_xp = BACKEND.xp


class MeanVarAnnealing:
    r"""MIRACLE's Mean-Var training (Havasi et al. 2019), Pyro: an ``AutoNormal``
    guide on the expected negative log-likelihood plus per-block KL penalties
    :math:`\sum_b \beta_b \mathrm{KL}_b`, each :math:`\beta_b` multiplied or divided
    by :math:`1 + \epsilon` after every step as its block's KL is above or below its
    share of the budget. See :class:`ppl_hw.numpyro.infer.MeanVarAnnealing`.

    Use it like ``SVI``: ``loss = mv.step(*args)``; ``mv.beta`` holds the penalties
    and ``mv.block_kl()`` the current block KLs.

    :param model: the model (``Normal`` priors).
    :param guide: a ``pyro.infer.autoguide.AutoNormal`` of the model.
    :param optim: a Pyro optimizer (e.g. ``pyro.optim.Adam({"lr": 1e-2})``).
    :param kl_budget_bits: total KL budget in bits (or ``kl_budget_nats``).
    :param kl_budget_nats: total KL budget in nats.
    :param bits_per_block: KL budget per block (bits, > 0).
    :param epsilon: the annealing rate, in (0, 1].
    :param beta_init: initial penalty of every block (> 0).
    :param seed: seed of the block permutation (an int >= 0).
    """

    def __init__(
        self,
        model: Any,
        guide: AutoNormal,
        optim: Any,
        *,
        kl_budget_bits: float | None = None,
        kl_budget_nats: float | None = None,
        bits_per_block: float = 10.0,
        epsilon: float = 1e-4,
        beta_init: float = 1e-8,
        seed: int = 0,
    ):
        if not isinstance(guide, AutoNormal):
            raise TypeError(
                "MeanVarAnnealing trains an AutoNormal guide, "
                f"got {type(guide).__name__}"
            )
        self.settings = mv.MeanVarSettings(
            kl_budget_bits, kl_budget_nats, bits_per_block, epsilon, beta_init, seed
        )
        self.model, self.guide, self.optim = model, guide, optim
        self.blocks: Blocks | None = None
        self.beta: torch.Tensor | None = None

    def _prepare(self, *args: Any, **kwargs: Any) -> None:
        if self.guide.prototype_trace is None:
            self.guide(*args, **kwargs)
        names, sizes, priors = [], [], {}
        for name, site in self.guide.prototype_trace.iter_stochastic_nodes():
            loc, _ = self.guide._get_loc_and_scale(name)
            nu, rho = _normal_prior(site, loc.shape)
            priors[name] = (
                torch.as_tensor(nu, dtype=loc.dtype),
                torch.as_tensor(rho, dtype=loc.dtype),
            )
            names.append(name)
            sizes.append(int(np.prod(tuple(loc.shape), dtype=np.int64)))
        self.blocks = self.settings.blocks(sizes)
        self._names, self._priors = names, priors
        ids = mv.site_block_ids(self.blocks, sizes)
        self._ids = {n: torch.as_tensor(i) for n, i in zip(names, ids, strict=True)}
        self.block_budget = self.settings.block_budget(self.blocks)
        self.beta = torch.full((self.blocks.num_blocks,), self.settings.beta_init)

    @torch.no_grad()
    def block_kl(self) -> torch.Tensor:
        """KL (nats) of each block."""
        return self._block_kl()

    def _block_kl(self) -> torch.Tensor:
        total = torch.zeros(self.blocks.num_blocks)
        for name in self._names:
            loc, scale = self.guide._get_loc_and_scale(name)
            nu, rho = self._priors[name]
            kl = _gauss.kl_normal_normal(loc, scale, nu, rho, xp=_xp).reshape(-1)
            total = total.index_add(0, self._ids[name], kl)
        return total

    def _neg_log_lik(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        guide_trace = poutine.trace(self.guide).get_trace(*args, **kwargs)
        model_trace = poutine.trace(
            poutine.replay(self.model, trace=guide_trace)
        ).get_trace(*args, **kwargs)
        model_trace.compute_log_prob()
        log_lik = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample" and site["is_observed"]:
                log_lik = log_lik + site["log_prob_sum"]
        return -log_lik

    def step(self, *args: Any, **kwargs: Any) -> float:
        """One optimizer step on the penalised loss, then the β update; returns the
        loss."""
        if self.blocks is None:
            self._prepare(*args, **kwargs)
        with poutine.trace(param_only=True) as param_capture:
            loss = (
                self._neg_log_lik(*args, **kwargs)
                + (self.beta * self._block_kl()).sum()
            )
            loss.backward()
        params = {
            site["value"].unconstrained() for site in param_capture.trace.nodes.values()
        }
        self.optim(params)
        zero_grads(params)
        with torch.no_grad():
            self.beta = mv.anneal(
                self.beta,
                self._block_kl(),
                self.block_budget,
                self.settings.epsilon,
                xp=_xp,
            )
        return float(loss.detach())
