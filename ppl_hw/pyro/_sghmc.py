"""SGHMC-within-EM for Pyro: ``SGHMC`` and ``SpikeSlabEM`` (exported from
:mod:`ppl_hw.pyro.infer`)."""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import pyro
import torch
import torch.distributed as dist
from pyro import poutine
from pyro.infer.autoguide.initialization import InitMessenger, init_to_uniform
from pyro.infer.mcmc.mcmc_kernel import MCMCKernel
from pyro.util import ignore_jit_warnings as _ignore_jit_warnings
from torch.distributions import biject_to

from ..common import sghmc as sc
from ..core import sghmc as core
from ..core.sghmc import SGHMCState
from .distributions import SpikeAndSlab
from .distributions._base import base_distribution

__all__ = ["SGHMC", "SpikeSlabEM"]


class SpikeSlabEM(sc.SpikeSlabEM):
    __doc__ = sc.SpikeSlabEM.__doc__


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

    ``jit_compile=True`` traces the potential energy once with
    :func:`torch.jit.trace`, as Pyro's own ``HMC``/``NUTS`` do with the same option:
    the model is then no longer run through Pyro's effect handlers at every step (about
    half the step's time on small models). The unconstrained sample, the minibatch
    indices and the EM surrogate's precisions are inputs of the traced function, so it
    stays exact as they change (EM's pruning masks act on the sample before the
    potential and its :math:`\pi` only on the E-step: neither enters the trace); it is
    traced again when the input shapes change, when EM switches the surrogate on, and
    at every ``setup`` (a new ``MCMC.run``, i.e. new model arguments). Everything else
    the model computes is frozen at the first trace: like Pyro's, it is for models
    whose structure does not depend on the values of the latent sites (no Python
    control flow on tensor values, no ``.item()``, no NumPy randomness; data and
    ``pyro.param`` values fixed during the run). Samples equal those of
    ``jit_compile=False`` on the same seed up to float rounding, and the non-finite
    check runs after every step as without it. ``ignore_jit_warnings=True`` silences
    the tracer's warnings (its warning that tensors made from Python numbers, as in
    ``dist.Normal(0.0, 1.0)``, are constants is always silenced: they are).

    ``process_group=`` (a :mod:`torch.distributed` process group, e.g.
    ``torch.distributed.group.WORLD``; default ``None``: one process) runs the chain
    data-parallel over the group's ``R`` ranks, one replica per rank (see
    :mod:`ppl_hw.pyro.distributed`). The model's plate ``subsample_size=b`` is then
    the *per-rank* minibatch: every rank draws the same ``torch.randperm`` per epoch
    (all ranks seeded alike with ``pyro.set_rng_seed``; checked at ``setup``), takes
    the global minibatch of ``R b`` indices a single process with
    ``subsample_size=R b`` takes, and keeps its contiguous share; the potential and
    its gradient (each rank's likelihood scaled ``N / b``) are averaged over the group,
    which gives the global minibatch's ``N / (R b)`` estimate; the injected noise is
    drawn by every rank from the same generator state. The replicas stay identical and
    the chain equals the single-process one with ``subsample_size=R b`` up to float
    rounding (when ``R b < N``: with ``R b = N`` that model has no subsampled plate
    and draws no permutation, so its random stream differs). The initial values are
    broadcast from the group's rank 0. Works with ``jit_compile=True`` (the
    all-reduce is outside the traced potential); the model needs a subsampled plate;
    :meth:`potential_energy` stays this rank's own.
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
        jit_compile: bool = False,
        ignore_jit_warnings: bool = False,
        process_group: Any = None,
    ):
        for name, flag in (
            ("jit_compile", jit_compile),
            ("ignore_jit_warnings", ignore_jit_warnings),
        ):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        self.jit_compile, self.ignore_jit_warnings = jit_compile, ignore_jit_warnings
        self.process_group = None
        if process_group is not None:
            from .distributed import resolve_group

            self.process_group = resolve_group(process_group, none_means="one process")
        self._compiled: dict[tuple, Callable] = {}
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
        self._state: SGHMCState | None = None
        self.sparsity = 0.0

    def __getstate__(self) -> dict:
        # traced functions do not pickle (MCMC's chains in other processes); each
        # copy traces again on first use
        if self.process_group is not None:
            raise TypeError(
                "an SGHMC kernel with process_group= runs in its own process and "
                "cannot be copied to another (MCMC(num_chains > 1) is not supported "
                "with it: launch one process per rank instead)"
            )
        state = self.__dict__.copy()
        state["_compiled"] = {}
        return state

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
        self._compiled = {}  # new arguments: trace again
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
                raise sc.discrete_site_error(name, fn)
            latent[name] = site
            ss = base_distribution(fn)
            if isinstance(ss, SpikeAndSlab):
                shape = tuple(site["value"].shape)
                self._ss_sites[name] = tuple(
                    torch.as_tensor(p, dtype=site["value"].dtype).expand(shape)
                    for p in (ss.prob, ss.spike_scale, ss.slab_scale)
                )
        self._plate = sc.select_plate(plates, self.em, bool(self._ss_sites))
        if self.process_group is not None:
            self._setup_distributed()
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
        if self.process_group is not None:
            from .distributed import broadcast_

            # the sites' order is the model's (the noise is drawn in this order)
            init = {
                k: torch.as_tensor(v).clone() for k, v in self._initial_params.items()
            }
            broadcast_(list(init.values()), self.process_group)
            self._initial_params = init
        self._settings = sc.step_settings(self, self._ss_sites, self._num_weights)
        # epoch_key holds the epoch's permutation (torch's generator is global)
        self._state = core.init_state(
            dict(self._initial_params), self._settings, xp=torch
        )
        self.sparsity = 0.0

    def _setup_distributed(self) -> None:
        """Checks for ``process_group=``: a subsampled plate whose global minibatch
        fits in the data, and a generator shared by the ranks."""
        from . import distributed as pd

        if self._plate is None:
            raise ValueError(
                "SGHMC(process_group=...) shares the model's subsampled plate's "
                "minibatch out over the ranks; the model has no subsampled plate "
                "(write pyro.plate(name, N, subsample_size=b) with b the per-rank "
                "minibatch)"
            )
        name, n, b = self._plate
        world = dist.get_world_size(self.process_group)
        pd.check_global_batch(n, b, world, f"plate {name!r}")
        pd.check_shared_generator(self.process_group, "SGHMC(process_group=...)")

    # -- pieces ------------------------------------------------------------------------

    def _next_batch(self, state: SGHMCState) -> tuple[Any, Any, int]:
        """``(indices, permutation, position)``: the next ``B`` indices of the
        epoch's permutation, a new ``torch.randperm`` per epoch."""
        if self._plate is None:
            return None, None, 0
        _, n, b = self._plate
        share = b
        if self.process_group is not None:  # the global minibatch, then our share
            rank = dist.get_rank(self.process_group)
            b = b * dist.get_world_size(self.process_group)
        perm, pos = state.epoch_key, state.pos
        if perm is None or pos + b > n:
            perm, pos = torch.randperm(n), 0
        idx = perm[pos : pos + b]
        if self.process_group is not None:
            idx = idx[rank * share : (rank + 1) * share]
        return idx, perm, pos + b

    def potential_energy(
        self,
        z: dict,
        idx: torch.Tensor | None = None,
        lam: dict | None = None,
        em_on: bool | None = None,
    ) -> Any:
        """Potential energy at unconstrained ``z`` on the minibatch ``idx`` (full data
        when ``None``), with the EM surrogate (precisions ``lam``) once EM has started
        (``em_on``; both default to the kernel's state). Traced once per input shapes
        and ``em_on`` with ``jit_compile=True`` (class docstring)."""
        assert self._state is not None
        lam = self._state.lam if lam is None else lam
        em_on = bool(self._state.em_on if em_on is None else em_on)
        if self.jit_compile:
            return self._potential_jit(z, idx, lam, em_on)
        return self._potential_eager(z, idx, lam, em_on)

    def _potential_eager(
        self, z: dict, idx: torch.Tensor | None, lam: dict, em_on: bool
    ) -> Any:
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
            if em_on and name in self._ss_sites:
                continue
            lp = site["fn"].log_prob(site["value"])
            if site.get("mask") is not None:
                lp = lp * site["mask"]
            log_joint = log_joint + site["scale"] * lp.sum()
        pe = -(log_joint + ladj)
        if em_on:
            pe = pe + core.surrogate_energy(z, lam, xp=torch)
        return pe

    def _potential_jit(
        self, z: dict, idx: torch.Tensor | None, lam: dict, em_on: bool
    ) -> Any:
        """:meth:`_potential_eager` traced with :func:`torch.jit.trace`: ``z``, the
        minibatch ``idx`` and (once EM is on) the precisions ``lam`` are the traced
        function's inputs, never constants; one trace per ``em_on`` and input
        shapes (``em_on`` changes which terms the potential has). Autograd
        differentiates the traced graph, as for Pyro's ``HMC(jit_compile=True)``."""
        if not z:  # nothing to trace
            return self._potential_eager(z, idx, lam, em_on)
        names = tuple(z)
        lam_names = tuple(lam) if em_on else ()
        inputs = [z[k] for k in names]
        if idx is not None:
            inputs.append(idx)
        inputs += [torch.as_tensor(lam[k]) for k in lam_names]
        key = (
            em_on,
            names,
            lam_names,
            idx is None,
            tuple((tuple(v.shape), v.dtype) for v in inputs),
        )
        fn = self._compiled.get(key)
        if fn is None:
            fn = self._compiled[key] = self._trace(
                names, lam_names, idx is not None, em_on, inputs
            )
        return fn(*inputs)

    def _trace(
        self,
        names: tuple,
        lam_names: tuple,
        has_idx: bool,
        em_on: bool,
        inputs: list,
    ) -> Callable:
        n = len(names)

        def potential(*args: torch.Tensor) -> torch.Tensor:
            z = dict(zip(names, args[:n], strict=True))
            idx = args[n] if has_idx else None
            lam = dict(zip(lam_names, args[n + has_idx :], strict=True))
            return self._potential_eager(z, idx, lam, em_on)

        if self.ignore_jit_warnings:
            potential = _ignore_jit_warnings()(potential)
        # as Pyro's HMC: no validation checks (Python control flow on values) in the
        # trace, and params of the param store enter as constants, not graph inputs
        frozen = [
            v for _, v in pyro.get_param_store().named_parameters() if v.requires_grad
        ]
        try:
            for v in frozen:
                v.requires_grad_(False)
            with pyro.validation_enabled(False), warnings.catch_warnings():
                # torch 2.9+ deprecates TorchScript; the tracer still works (Pyro's
                # own jit_compile uses it)
                warnings.filterwarnings(
                    "ignore",
                    message=r"`torch\.jit\.trace` is (deprecated|not supported)",
                    category=DeprecationWarning,
                )
                # every ``dist.Normal(0.0, 1.0)`` makes a tensor of a Python
                # number: a true constant. Tensors made from traced values pass
                # through ``.item()``/``.tolist()``/``bool``, which keep warning.
                warnings.filterwarnings(
                    "ignore",
                    message=r"torch\.(as_)?tensor results are registered as constants",
                    category=torch.jit.TracerWarning,
                )
                return torch.jit.trace(potential, tuple(inputs), check_trace=False)
        finally:
            for v in frozen:
                v.requires_grad_(True)

    def _conditioned(self, idx: torch.Tensor) -> Callable:
        assert self._plate is not None
        return poutine.condition(self._model, data={self._plate[0]: idx})

    # -- MCMCKernel --------------------------------------------------------------------

    @torch.no_grad()
    def sample(self, params: dict) -> dict:
        assert self._state is not None
        state = self._state._replace(z={k: v.detach() for k, v in params.items()})
        idx, perm, pos = self._next_batch(state)
        noise = {k: torch.randn_like(v) for k, v in state.z.items()}

        def potential_and_grad(z: dict, lam: dict, em_on: bool) -> tuple:
            with torch.enable_grad():
                zg = {k: v.clone().requires_grad_(True) for k, v in z.items()}
                pe = self.potential_energy(zg, idx, lam, em_on)
                grads = torch.autograd.grad(pe, list(zg.values()))
            pe = pe.detach()
            if self.process_group is not None:  # the global minibatch's estimate
                from .distributed import all_reduce_mean

                pe, *grads = all_reduce_mean([pe, *grads], self.process_group)
            return pe, dict(zip(zg, grads, strict=True))

        state = core.step(state, noise, potential_and_grad, self._settings, xp=torch)
        bad = [k for k, v in state.z.items() if not torch.isfinite(v).all()]
        if bad:
            raise sc.nonfinite_error(state.i - 1, bad)
        self._state = state._replace(epoch_key=perm, pos=pos)
        self.potential = float(state.potential_energy)
        self.sparsity = float(state.sparsity)
        return dict(state.z)

    def logging(self) -> OrderedDict:
        return OrderedDict(
            [
                ("step size", f"{float(self._state.step_size):.2e}"),
                ("sparsity", f"{self.sparsity:.1%}"),
            ]
        )

    def diagnostics(self) -> dict:
        return {"divergences": [], "sparsity": self.sparsity}
