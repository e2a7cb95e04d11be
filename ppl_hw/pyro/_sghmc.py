"""SGHMC-within-EM for Pyro: ``SGHMC`` and ``SpikeSlabEM`` (exported from
:mod:`ppl_hw.pyro.infer`)."""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import MaskedDistribution
from pyro.infer.autoguide.initialization import InitMessenger, init_to_uniform
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from torch.distributions import biject_to
from torch.distributions.independent import Independent

from .. import _sghmc_common as sc
from ..core import sghmc as core
from .distributions import SpikeAndSlab

__all__ = ["SGHMC", "SpikeSlabEM"]


class SpikeSlabEM(sc.SpikeSlabEM):
    __doc__ = sc.SpikeSlabEM.__doc__


def _base_spike_slab(fn: Any) -> SpikeAndSlab | None:
    while True:
        if isinstance(fn, Independent | MaskedDistribution):
            fn = fn.base_dist
        elif type(fn).__name__ == "ExpandedDistribution":
            fn = fn.base_dist
        else:
            break
    return fn if isinstance(fn, SpikeAndSlab) else None


class SGHMC(MCMCKernel):
    r"""Stochastic-gradient HMC for any Pyro model, with preconditioning, cyclical
    step sizes and spike-and-slab EM with one-shot pruning, run through Pyro's own
    ``MCMC``. Arguments, conventions and the update are those of
    :class:`ppl_hw.numpyro.infer.SGHMC` (see :mod:`ppl_hw.core.sghmc`); randomness
    comes from torch's global generator (``pyro.set_rng_seed``).

    Minibatches come from the model's subsampled plate
    (``pyro.plate(name, N, subsample_size=B)``): one ``torch.randperm`` per epoch,
    sliced. Pyro's ``initialize_model`` refuses subsample sites, so this kernel does
    its own initialisation (the ``init_strategy`` on the first minibatch).

    Pyro's limits: ``MCMC(..., num_chains > 1)`` runs chains in separate processes
    (Pyro's own mechanism); ``az.from_pyro(mcmc)`` gives the posterior and a
    ``diverging`` sample stat (always false: SGHMC has no accept step), plus the log
    likelihood and observed data only for models without a subsampled plate (see
    :attr:`model`). NumPyro's kernel gives the full-data log likelihood.
    """

    def __init__(
        self,
        model: Callable,
        *,
        step_size: float,
        temperature: float = 1.0,
        momentum_decay: float = 0.1,
        schedule: str = "constant",
        num_cycles: int = 1,
        num_steps: int | None = None,
        preconditioner: str | None = None,
        em: sc.SpikeSlabEM | None = None,
        init_strategy: Callable = init_to_uniform,
        rmsprop_beta: float = 0.99,
        rmsprop_delta: float = 1e-5,
        ke_fan_eta: float = 0.1,
    ):
        sc.configure(
            self,
            model,
            step_size=step_size,
            temperature=temperature,
            momentum_decay=momentum_decay,
            schedule=schedule,
            num_cycles=num_cycles,
            num_steps=num_steps,
            preconditioner=preconditioner,
            em=em,
            init_strategy=init_strategy,
            rmsprop_beta=rmsprop_beta,
            rmsprop_delta=rmsprop_delta,
            ke_fan_eta=ke_fan_eta,
        )
        self.transforms: dict[str, Any] | None = None
        self._initial_params: dict | None = None
        self._i = 0
        self._current_step_size = self.step_size
        self.sparsity = 0.0

    @classmethod
    def ke_fan(cls, model: Callable, **kwargs: Any) -> SGHMC:
        """The paper's parameterisation; see
        :meth:`ppl_hw.numpyro.infer.SGHMC.ke_fan`."""
        return sc.ke_fan_kernel(cls, model, **kwargs)

    @property
    def model(self) -> Callable | None:
        """The model; ``None`` for a model with a subsampled plate, which Pyro cannot
        force to full data from outside (it checks ``subsample_size`` against the
        indices), so that ``az.from_pyro`` gives the posterior and sample stats
        without a misleading minibatch ``observed_data``."""
        return self._model if self._plate is None else None

    @property
    def initial_params(self) -> dict | None:
        return self._initial_params

    @initial_params.setter
    def initial_params(self, params: dict) -> None:
        self._initial_params = params

    # -- set-up ----------------------------------------------------------------------

    def setup(self, warmup_steps: int, *args: Any, **kwargs: Any) -> None:
        self._args, self._kwargs = args, kwargs
        with poutine.block():
            tr = poutine.trace(self._model).get_trace(*args, **kwargs)
        plates, self._ss_sites, latent = [], {}, {}
        for name, site in tr.nodes.items():
            if site["type"] != "sample":
                continue
            fn = site["fn"]
            if type(fn).__name__ == "_Subsample":
                if fn.subsample_size is not None and fn.subsample_size != fn.size:
                    plates.append((name, int(fn.size), int(fn.subsample_size)))
                continue
            if site["is_observed"]:
                continue
            if fn.support.is_discrete:
                raise ValueError(
                    f"SGHMC needs continuous latent sites; site {name!r} is "
                    f"discrete ({type(fn).__name__})"
                )
            latent[name] = site
            ss = _base_spike_slab(fn)
            if ss is not None:
                shape = tuple(site["value"].shape)
                self._ss_sites[name] = (
                    shape,
                    *(
                        torch.as_tensor(p, dtype=site["value"].dtype).expand(shape)
                        for p in (ss.prob, ss.spike_scale, ss.slab_scale)
                    ),
                )
        self._plate = sc.select_plate(plates, self.em, bool(self._ss_sites))
        self.transforms = {k: biject_to(s["fn"].support).inv for k, s in latent.items()}
        self._num_weights = sum(int(s["value"].numel()) for s in latent.values())
        if self._initial_params is None:
            init_model = self._model
            if self._plate is not None:
                init_model = poutine.condition(
                    init_model, data={self._plate[0]: torch.arange(self._plate[2])}
                )
            with poutine.block():
                itr = poutine.trace(InitMessenger(self.init_strategy)(init_model))
                itr = itr.get_trace(*args, **kwargs)
            self._initial_params = {
                k: self.transforms[k](itr.nodes[k]["value"].detach()) for k in latent
            }
        z = self._initial_params
        self._u = {k: torch.zeros_like(v) for k, v in z.items()}
        ss = self._ss_sites
        self._lam = {k: 1.0 / s[3] ** 2 for k, s in ss.items()}
        self._mask = {k: torch.ones(s[0], dtype=s[3].dtype) for k, s in ss.items()}
        self._pi = {k: s[1].mean() for k, s in ss.items()}
        self._em_on = False
        if self.preconditioner == "rmsprop":
            self._precond: Any = {k: torch.zeros_like(v) for k, v in z.items()}
        elif self.preconditioner == "ke_fan":
            self._precond = (
                {k: torch.zeros_like(v) for k, v in z.items()},
                {k: torch.full_like(v, 0.5) for k, v in z.items()},
                {k: torch.zeros_like(v) for k, v in z.items()},
            )
        else:
            self._precond = None
        self._i, self.sparsity = 0, 0.0
        self._perm, self._pos = None, 0

    # -- pieces ------------------------------------------------------------------------

    def _next_batch(self) -> torch.Tensor | None:
        if self._plate is None:
            return None
        _, n, b = self._plate
        if self._perm is None or self._pos + b > n:
            self._perm, self._pos = torch.randperm(n), 0
        idx = self._perm[self._pos : self._pos + b]
        self._pos += b
        return idx

    def potential_energy(self, z: dict, idx: torch.Tensor | None = None) -> Any:
        """Potential energy at unconstrained ``z`` on the minibatch ``idx`` (full data
        when ``None``), with the EM surrogate once EM has started."""
        model = self._model if idx is None else self._conditioned(idx)
        values, ladj = {}, 0.0
        for k, v in z.items():
            t = self.transforms[k].inv
            x = t(v)
            values[k] = x
            ladj = ladj + t.log_abs_det_jacobian(v, x).sum()
        tr = poutine.trace(poutine.condition(model, data=values)).get_trace(
            *self._args, **self._kwargs
        )
        log_joint = 0.0
        for name, site in tr.nodes.items():
            if site["type"] != "sample" or type(site["fn"]).__name__ == "_Subsample":
                continue
            if self._em_on and name in self._ss_sites:
                continue
            lp = site["fn"].log_prob(site["value"])
            if site.get("mask") is not None:
                lp = lp * site["mask"]
            log_joint = log_joint + site["scale"] * lp.sum()
        pe = -(log_joint + ladj)
        if self._em_on:
            for k in self._ss_sites:
                pe = pe + 0.5 * (self._lam[k] * z[k] ** 2).sum()
        return pe

    def _conditioned(self, idx: torch.Tensor) -> Callable:
        assert self._plate is not None
        return poutine.condition(self._model, data={self._plate[0]: idx})

    def _step_size(self) -> float:
        if self.schedule == "constant":
            return self.step_size
        assert self.num_steps is not None
        return float(
            core.cyclical_step_size(
                self._i, self.step_size, self.num_steps, self.num_cycles, xp=np
            )
        )

    def _em_step(self, z: dict) -> None:
        em = self.em
        assert em is not None
        if not (self._i >= em.warmup and (self._i - em.warmup) % em.every == 0):
            return
        for k, (shape, _, spike, slab) in self._ss_sites.items():
            ms = core.group_mean_square(z[k], em.groups, xp=torch)
            d = core.group_size(shape, em.groups)
            p = core.e_step(
                ms,
                d,
                self._pi[k],
                spike,
                slab,
                soft_threshold=em.soft_threshold,
                xp=torch,
            ).expand(shape)
            self._lam[k] = core.surrogate_precision(p, spike, slab)
            if em.hard_threshold is not None:
                keep = (ms >= em.hard_threshold).expand(shape)
                self._mask[k] = self._mask[k] * keep.to(self._mask[k].dtype)
            if em.update_pi:
                self._pi[k] = p.mean().clamp(1e-6, 1 - 1e-6)
        self._em_on = True

    # -- MCMCKernel --------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, params: dict) -> dict:
        z = {k: v.detach() for k, v in params.items()}
        idx = self._next_batch()
        if self.em is not None:
            self._em_step(z)
            z = {k: v * self._mask[k] if k in self._mask else v for k, v in z.items()}
        eps = self._step_size()
        with torch.enable_grad():
            zg = {k: v.clone().requires_grad_(True) for k, v in z.items()}
            pe = self.potential_energy(zg, idx)
            grads = dict(
                zip(zg, torch.autograd.grad(pe, list(zg.values())), strict=True)
            )
        n_data = self._plate[1] if self._plate else 1
        noise = {k: torch.randn_like(v) for k, v in z.items()}
        precond, noise_precond = None, True
        if self.preconditioner == "rmsprop":
            pairs = {
                k: core.rmsprop_precondition(
                    self._precond[k],
                    grads[k] / n_data,
                    beta=self.rmsprop_beta,
                    delta=self.rmsprop_delta,
                    xp=torch,
                )
                for k in z
            }
            self._precond = {k: v[0] for k, v in pairs.items()}
            mean = sum(v[1].sum() for v in pairs.values()) / self._num_weights
            precond = {k: v[1] / mean for k, v in pairs.items()}
        elif self.preconditioner == "ke_fan":
            kf = self._ke_fan_params or dict(t=1.0, n=n_data)
            rho, tau, xi_prev = self._precond
            c = math.sqrt(eps * n_data)
            new = {
                k: core.ke_fan_precondition(
                    rho[k],
                    tau[k],
                    xi_prev[k],
                    grads[k] / kf["n"],
                    (self._lam[k] if k in self._lam else 0.0) / kf["n"],
                    c=c,
                    t=kf["t"],
                    n=kf["n"],
                    eta=self.ke_fan_eta,
                    xp=torch,
                )
                for k in z
            }
            rho = {k: v[0] for k, v in new.items()}
            tau = {k: v[1] for k, v in new.items()}
            self._precond = (rho, tau, noise)
            precond, noise_precond = tau, False
        out = {}
        for k in z:
            theta, u = core.sghmc_step(
                z[k],
                self._u[k],
                grads[k],
                noise[k],
                step_size=eps,
                momentum_decay=self.momentum_decay,
                temperature=self.temperature,
                precond=None if precond is None else precond[k],
                noise_precond=noise_precond,
                xp=torch,
            )
            if k in self._mask:
                theta, u = theta * self._mask[k], u * self._mask[k]
            if not torch.isfinite(theta).all():
                bad = [k]
                raise FloatingPointError(
                    f"SGHMC: non-finite values at step {self._i} in site(s) {bad}; "
                    "lower step_size (or check the model's log density)"
                )
            out[k], self._u[k] = theta, u
        self._i += 1
        self._current_step_size = eps
        self.potential = float(pe)
        pruned = sum(float((1 - m).sum()) for m in self._mask.values())
        self.sparsity = pruned / self._num_weights
        return out

    def logging(self) -> OrderedDict:
        return OrderedDict(
            [
                ("step size", f"{self._current_step_size:.2e}"),
                ("sparsity", f"{self.sparsity:.1%}"),
            ]
        )

    def diagnostics(self) -> dict:
        return {"divergences": [], "sparsity": self.sparsity}
