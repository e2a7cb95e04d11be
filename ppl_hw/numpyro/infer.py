"""Inference algorithms of ppl_hw for NumPyro: :class:`MeanVarAnnealing` (the MIRACLE
Mean-Var baseline)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers
from numpyro.infer import SVI, Trace_ELBO
from numpyro.infer.autoguide import AutoNormal
from tqdm.auto import trange

from ..common import infer as mv
from ..core import gaussian as _gauss
from ..core.coding import Blocks
from ._pfp import PFP_ELBO
from ._sghmc import SGHMC, SGHMCState, SpikeSlabEM
from .autoguide import _normal_prior

__all__ = [
    "PFP_ELBO",
    "SGHMC",
    "MeanVarAnnealing",
    "MeanVarResult",
    "MeanVarState",
    "SGHMCState",
    "SpikeSlabEM",
]


class MeanVarState(NamedTuple):
    """State of :class:`MeanVarAnnealing`: the SVI state and the block penalties."""

    svi_state: Any
    beta: jnp.ndarray


class MeanVarResult(NamedTuple):
    """What :meth:`MeanVarAnnealing.run` returns."""

    params: dict
    state: MeanVarState
    losses: jnp.ndarray
    block_kl: jnp.ndarray


class MeanVarAnnealing:
    r"""MIRACLE's Mean-Var training (Havasi et al. 2019): the baseline Mean-KL is
    compared against.

    An ``AutoNormal`` guide (free means and scales) is trained on the expected
    negative log-likelihood plus per-block KL penalties,
    :math:`\sum_b \beta_b\,\mathrm{KL}_b(q\|p)`. The weights are shuffled into blocks
    (:func:`ppl_hw.core.coding.make_blocks`; one block per ``bits_per_block`` bits of
    the total budget), and after every step each :math:`\beta_b` is multiplied by
    :math:`1+\epsilon` if its block's KL is above the block's share of the budget and
    divided by it otherwise (:math:`\epsilon = 10^{-4}`, :math:`\beta_b` starting at
    :math:`10^{-8}`: MIRACLE's LeNet-5 settings). The KLs are closed-form (every
    latent site needs a ``Normal`` prior).

    The interface follows ``SVI``: :meth:`init`, :meth:`update`, :meth:`run`,
    :meth:`get_params`.

    :param model: the model.
    :param guide: a ``numpyro.infer.autoguide.AutoNormal`` of the model.
    :param optim: a NumPyro optimizer.
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
        self.model, self.guide = model, guide
        # SVI sets up the guide, its parameters and the optimizer state; the penalised
        # loss and the step are ours (below)
        self.svi = SVI(model, guide, optim, Trace_ELBO())
        self.blocks: Blocks | None = None

    def _prepare(self) -> None:
        names, sizes, priors = [], [], {}
        for name, site in self.guide.prototype_trace.items():
            if site["type"] == "sample" and not site["is_observed"]:
                shape = tuple(jnp.shape(self.guide._init_locs[name]))
                priors[name] = tuple(jnp.asarray(a) for a in _normal_prior(site, shape))
                names.append(name)
                sizes.append(int(np.prod(shape, dtype=np.int64)))
        self.blocks = self.settings.blocks(sizes)
        self._names = names
        self._priors = priors
        ids = mv.site_block_ids(self.blocks, sizes)
        self._ids = {n: jnp.asarray(i) for n, i in zip(names, ids, strict=True)}
        self.block_budget = self.settings.block_budget(self.blocks)

    def _block_kl(self, params: dict) -> jnp.ndarray:
        total = jnp.zeros(self.blocks.num_blocks)
        for name in self._names:
            loc = params[f"{name}_{self.guide.prefix}_loc"]
            scale = params[f"{name}_{self.guide.prefix}_scale"]
            nu, rho = self._priors[name]
            kl = _gauss.kl_normal_normal(loc, scale, nu, rho, xp=jnp).reshape(-1)
            total = total + jax.ops.segment_sum(
                kl, self._ids[name], self.blocks.num_blocks
            )
        return total

    def _loss(
        self, rng_key: Any, params: dict, beta: Any, args: Any, kwargs: Any
    ) -> Any:
        """Expected negative log-likelihood (one draw of the guide, reparameterised)
        plus the block penalties."""
        k1, k2 = jax.random.split(rng_key)
        guide = handlers.seed(handlers.substitute(self.guide, data=params), k1)
        guide_trace = handlers.trace(guide).get_trace(*args, **kwargs)
        model = handlers.replay(
            handlers.substitute(self.model, data=params), guide_trace
        )
        model_trace = handlers.trace(handlers.seed(model, k2)).get_trace(
            *args, **kwargs
        )
        log_lik = 0.0
        for site in model_trace.values():
            if site["type"] == "sample" and site["is_observed"]:
                lp = site["fn"].log_prob(site["value"])
                if site["scale"] is not None:
                    lp = lp * site["scale"]
                log_lik = log_lik + jnp.sum(lp)
        return -log_lik + jnp.sum(beta * self._block_kl(params))

    def init(self, rng_key: Any, *args: Any, **kwargs: Any) -> MeanVarState:
        svi_state = self.svi.init(rng_key, *args, **kwargs)
        self._prepare()
        beta = jnp.full(self.blocks.num_blocks, self.settings.beta_init)
        return MeanVarState(svi_state, beta)

    def update(
        self, state: MeanVarState, *args: Any, **kwargs: Any
    ) -> tuple[MeanVarState, Any]:
        """One optimizer step on the penalised loss, then the β update."""
        svi_state = state.svi_state
        rng_key, key_step = jax.random.split(svi_state.rng_key)

        def loss_fn(unconstrained: dict) -> tuple[Any, None]:
            params = self.svi.constrain_fn(unconstrained)
            return self._loss(key_step, params, state.beta, args, kwargs), None

        (loss, _), optim_state = self.svi.optim.eval_and_update(
            loss_fn, svi_state.optim_state
        )
        svi_state = svi_state._replace(optim_state=optim_state, rng_key=rng_key)
        block_kl = self._block_kl(self.svi.get_params(svi_state))
        beta = mv.anneal(
            state.beta, block_kl, self.block_budget, self.settings.epsilon, xp=jnp
        )
        return MeanVarState(svi_state, beta), loss

    def get_params(self, state: MeanVarState) -> dict:
        return self.svi.get_params(state.svi_state)

    def block_kl(self, params: dict) -> jnp.ndarray:
        """KL (nats) of each block at ``params``."""
        return self._block_kl(params)

    def run(
        self,
        rng_key: Any,
        num_steps: int,
        *args: Any,
        progress_bar: bool = True,
        callback: Any = None,
        **kwargs: Any,
    ) -> MeanVarResult:
        """``num_steps`` steps; ``callback(step, state)`` (if given) after every
        step."""
        state = self.init(rng_key, *args, **kwargs)
        step_fn = jax.jit(lambda s: self.update(s, *args, **kwargs))
        losses = []
        for i in trange(num_steps, disable=not progress_bar, desc="Mean-Var"):
            state, loss = step_fn(state)
            losses.append(loss)
            if callback is not None:
                callback(i, state)
        params = self.get_params(state)
        return MeanVarResult(params, state, jnp.stack(losses), self._block_kl(params))
