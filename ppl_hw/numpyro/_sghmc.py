"""SGHMC-within-EM for NumPyro: ``SGHMC`` and ``SpikeSlabEM`` (exported from
:mod:`ppl_hw.numpyro.infer`)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax, random
from numpyro import handlers
from numpyro.infer.initialization import init_to_uniform
from numpyro.infer.mcmc import MCMCKernel
from numpyro.infer.util import initialize_model, potential_energy
from numpyro.primitives import Messenger
from numpyro.util import is_prng_key

from ..common import sghmc as sc
from ..core import sghmc as core
from ..core.sghmc import SGHMCState
from .distributions import SpikeAndSlab
from .distributions._base import base_distribution

__all__ = ["SGHMC", "SGHMCState", "SpikeSlabEM"]


class SpikeSlabEM(sc.SpikeSlabEM):
    __doc__ = sc.SpikeSlabEM.__doc__


class _MaskSites(Messenger):
    """Keep the log density of the named sites only where ``keep`` (a traced bool):
    the EM surrogate replaces it once EM has started."""

    def __init__(self, fn: Any, names: frozenset, keep: Any):
        self.names, self.keep = names, keep
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "sample" and msg["name"] in self.names:
            msg["fn"] = msg["fn"].mask(self.keep)


class _FullData(Messenger):
    """Force the named subsampled plates to full data."""

    def __init__(self, fn: Any, sizes: dict):
        self.sizes = sizes
        super().__init__(fn)

    def process_message(self, msg: dict) -> None:
        if msg["type"] == "plate" and msg["name"] in self.sizes:
            size = self.sizes[msg["name"]]
            msg["args"] = (size, None)
            msg["value"] = jnp.arange(size)


class SGHMC(MCMCKernel):
    r"""Stochastic-gradient HMC for any NumPyro model, with preconditioning, cyclical
    step sizes and spike-and-slab EM with one-shot pruning (Ke & Fan 2022), run
    through NumPyro's own ``MCMC``.

    The update and its conventions are in :mod:`ppl_hw.core.sghmc`: ``step_size`` is
    :math:`\epsilon` on the model's potential energy (negative log joint, likelihood
    summed over the data), ``temperature=1`` samples the exact posterior (for small
    :math:`\epsilon`), ``momentum_decay`` is the friction per step.

    **Minibatches** come from the model's own subsampled plate
    (``numpyro.plate(name, N, subsample_size=B)``): one pseudo-random permutation of
    the data per epoch (a keyed Feistel bijection, never stored), sliced into
    consecutive batches (the last ``N mod B`` indices of an
    epoch are skipped); the plate scales the likelihood by ``N/B``. A model without a
    subsampled plate runs full-batch. :attr:`model` is the model with the plate forced
    to full data, so ``az.from_numpyro(mcmc)`` computes a full-data log likelihood.

    :param model: the model.
    :param step_size: :math:`\epsilon > 0` (the peak of a cyclical schedule).
    :param temperature: :math:`T \ge 0`.
    :param momentum_decay: friction per step, in (0, 1].
    :param schedule: ``"constant"`` or ``"cyclical"`` (cosine cycles; needs
        ``num_steps``).
    :param num_cycles: cycles of the cyclical schedule.
    :param num_steps: total steps the cyclical schedule spans (warm-up + samples).
    :param preconditioner: ``None``, ``"rmsprop"`` (pSGLD) or ``"ke_fan"`` (the
        paper's :math:`\tau`; see :meth:`ke_fan`).
    :param em: a :class:`SpikeSlabEM`, or ``None``.
    :param init_strategy: a NumPyro init strategy.
    :param rmsprop_beta: pSGLD's averaging rate.
    :param rmsprop_delta: pSGLD's damping.
    :param ke_fan_eta: the step of Ke & Fan's dual update.
    :param mesh: a ``jax.sharding.Mesh`` (e.g. ``jax.make_mesh((2,), ("data",),
        axis_types=(AxisType.Auto,))``): the minibatch indices are sharded over
        ``mesh_axis``, so each device computes the likelihood and its gradient on its
        share of the minibatch and XLA sums them (data parallelism; the data arrays
        may be sharded too, with ``jax.device_put``). Needs a subsampled plate whose
        size is divisible by the number of devices on the axis.
    :param mesh_axis: the mesh axis to shard over (default: the first).
    """

    sample_field = "z"

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
        em: SpikeSlabEM | None = None,
        init_strategy: Callable = init_to_uniform,
        rmsprop_beta: float = 0.99,
        rmsprop_delta: float = 1e-5,
        ke_fan_eta: float = 0.1,
        mesh: Any = None,
        mesh_axis: str | None = None,
    ):
        if mesh is not None and not isinstance(mesh, jax.sharding.Mesh):
            raise TypeError(f"mesh must be a jax.sharding.Mesh or None, got {mesh!r}")
        if mesh is not None:
            axis = mesh.axis_names[0] if mesh_axis is None else mesh_axis
            if axis not in mesh.axis_names:
                raise ValueError(
                    f"mesh_axis must be one of the mesh's axes {mesh.axis_names}, "
                    f"got {mesh_axis!r}"
                )
            self._batch_sharding: Any = jax.sharding.NamedSharding(
                mesh, jax.sharding.PartitionSpec(axis)
            )
        self.mesh = mesh
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
        self._sample_fn: Callable | None = None
        self._postprocess: Callable | None = None
        self._num_weights = 0

    @classmethod
    def ke_fan(cls, model: Callable, **kwargs: Any) -> SGHMC:
        r"""The paper's parameterisation (their code's ``SGHMC_SPL``):
        ``ke_fan(model, *, num_data, c2=0.01, t=None, beta1=0.1, beta2=1.0,
        eta=0.1, **kernel_kwargs)``. ``c2`` is
        :math:`C^2` (the step on the *mean* minibatch loss), ``t`` the noise scale
        :math:`T` (default :math:`N^{-1/2}`, their sparse-regression setting),
        ``beta1`` the momentum kept per step, ``beta2`` the gradient weight, ``eta``
        the step of the :math:`\tau` update. Mapped onto this kernel:
        :math:`\epsilon = \beta_2 C^2/N`, ``momentum_decay`` :math:`= 1 - \beta_1`,
        temperature :math:`= (2 + 2\beta_1^2)\,C T^2 N / (2 (1-\beta_1) \beta_2)` (their
        noise :math:`\sqrt{2 + 2\beta_1^2}\,C^{1.5} T`), ``preconditioner="ke_fan"``.
        With :math:`T = N^{-1/2}` this is a tempered posterior (temperature
        :math:`\approx 1.1\,C`), not the exact one."""
        return sc.ke_fan_kernel(cls, model, **kwargs)

    # -- the model -----------------------------------------------------------------

    @property
    def model(self) -> Callable:
        """The model with subsampled plates forced to full data (for ArviZ and
        ``Predictive``)."""
        if self._plate is None:
            return self._model
        name, size, _ = self._plate
        return _FullData(self._model, {name: size})

    def _inspect(self, rng_key: Any, model_args: tuple, model_kwargs: dict) -> None:
        with warnings.catch_warnings():
            # NumPyro warns (and clamps) when subsample_size > size: we raise below
            warnings.filterwarnings("ignore", message="subsample_size does not match")
            tr = handlers.trace(handlers.seed(self._model, rng_key)).get_trace(
                *model_args, **model_kwargs
            )
        plates = []
        self._ss_sites = {}
        self._num_weights = 0
        for name, site in tr.items():
            if site["type"] == "plate":
                size, sub = site["args"][0], site["args"][1]
                if sub is not None and sub != size:
                    plates.append((name, int(size), int(sub)))
            elif site["type"] == "sample" and not site["is_observed"]:
                if site["fn"].is_discrete:
                    raise sc.discrete_site_error(name, site["fn"])
                self._num_weights += int(np.size(site["value"]))
                ss = base_distribution(site["fn"])
                if isinstance(ss, SpikeAndSlab):
                    shape = tuple(jnp.shape(site["value"]))
                    self._ss_sites[name] = tuple(
                        np.broadcast_to(np.asarray(p, np.float32), shape)
                        for p in (ss.prob, ss.spike_scale, ss.slab_scale)
                    )
        self._plate = sc.select_plate(plates, self.em, bool(self._ss_sites))
        if self.mesh is not None:
            devices = self._batch_sharding.mesh.shape[self._batch_sharding.spec[0]]
            if self._plate is None or self._plate[2] % devices:
                raise ValueError(
                    "mesh= shards the minibatch: it needs a subsampled plate whose "
                    f"subsample_size is divisible by the {devices} devices of the "
                    f"axis, got plate {self._plate}"
                )

    def _potential(self, model_args: tuple, model_kwargs: dict) -> Callable:
        names = frozenset(self._ss_sites)

        def potential(z: dict, idx: Any, lam: dict, em_on: Any) -> Any:
            model = self._model
            if self._plate is not None:
                if self.mesh is not None:
                    idx = lax.with_sharding_constraint(idx, self._batch_sharding)
                model = handlers.substitute(model, data={self._plate[0]: idx})
            if not names:
                return potential_energy(model, model_args, model_kwargs, z)
            pe = potential_energy(
                _MaskSites(model, names, ~em_on), model_args, model_kwargs, z
            )
            surrogate = core.surrogate_energy(z, lam, xp=jnp)
            return pe + jnp.where(em_on, surrogate, 0.0)

        return potential

    # -- MCMCKernel ------------------------------------------------------------------

    def init(
        self,
        rng_key: Any,
        num_warmup: int,
        init_params: Any,
        model_args: tuple,
        model_kwargs: dict,
    ) -> SGHMCState:
        vectorized = not is_prng_key(rng_key)
        key0 = rng_key[0] if vectorized else rng_key
        self._inspect(key0, model_args, model_kwargs)
        batch = self._plate[2] if self._plate else None
        init_model = self._model
        if self._plate is not None:
            init_model = handlers.substitute(
                init_model, data={self._plate[0]: jnp.arange(batch)}
            )
        _, _, postprocess, _ = initialize_model(
            key0,
            self.model,
            init_strategy=self.init_strategy,
            dynamic_args=True,
            model_args=model_args,
            model_kwargs=model_kwargs,
        )
        self._postprocess = postprocess
        spike_slab = {
            k: tuple(jnp.asarray(p) for p in v) for k, v in self._ss_sites.items()
        }
        settings = sc.step_settings(self, spike_slab, self._num_weights)
        potential = self._potential(model_args, model_kwargs)
        self._sample_fn = self._make_sample(potential, settings)

        def init_one(key: Any, params: Any) -> SGHMCState:
            k_init, k_perm, k_run = random.split(key, 3)
            info, *_ = initialize_model(
                k_init,
                init_model,
                init_strategy=self.init_strategy,
                model_args=model_args,
                model_kwargs=model_kwargs,
            )
            z = info.z if params is None else params
            epoch_key = random.bits(k_perm, (core.FEISTEL_ROUNDS,), jnp.uint32)
            dtype = jnp.result_type(float)
            return core.init_state(
                {k: jnp.asarray(v) for k, v in z.items()},
                settings,
                xp=jnp,
                i=jnp.array(0),
                epoch_key=epoch_key,
                pos=jnp.array(0),
                rng_key=k_run,
                potential_energy=jnp.zeros((), dtype),
                step_size=jnp.asarray(self.step_size, dtype),
                sparsity=jnp.zeros((), dtype),
                em_on=jnp.array(False),
            )

        if vectorized:
            self._sample_fn = jax.vmap(self._sample_fn, in_axes=(0, None, None))
            return jax.vmap(init_one)(rng_key, init_params)
        return init_one(rng_key, init_params)

    def _next_batch(self, epoch_key: Any, pos: Any, key: Any) -> tuple[Any, Any, Any]:
        """The next ``B`` indices of the epoch's permutation (a keyed Feistel
        bijection, :func:`ppl_hw.core.sghmc.feistel_encrypt`); a new key per epoch."""
        if self._plate is None:
            return None, epoch_key, pos
        _, n, b = self._plate
        need = pos + b > n
        epoch_key = jnp.where(
            need, random.bits(key, (core.FEISTEL_ROUNDS,), jnp.uint32), epoch_key
        )
        pos = jnp.where(need, 0, pos)
        h = core.feistel_half_bits(n)

        def enc(v: Any) -> Any:
            return core.feistel_encrypt(v, epoch_key, h, xp=jnp)

        v = enc((pos + jnp.arange(b)).astype(jnp.uint32))
        v = lax.while_loop(
            lambda v: jnp.any(v >= n), lambda v: jnp.where(v >= n, enc(v), v), v
        )
        return v.astype(jnp.int32), epoch_key, pos + b

    def _make_sample(
        self, potential: Callable, settings: core.SGHMCSettings
    ) -> Callable:
        grad_fn = jax.value_and_grad(potential)

        def sample(state: SGHMCState, model_args: Any, model_kwargs: Any) -> SGHMCState:
            key, k_noise, k_perm = random.split(state.rng_key, 3)
            idx, epoch_key, pos = self._next_batch(state.epoch_key, state.pos, k_perm)
            leaves, tree = jax.tree.flatten(state.z)
            noise = jax.tree.unflatten(
                tree,
                [
                    random.normal(k, jnp.shape(x), jnp.result_type(x))
                    for k, x in zip(
                        random.split(k_noise, len(leaves)), leaves, strict=True
                    )
                ],
            )
            new = core.step(
                state,
                noise,
                lambda z, lam, em_on: grad_fn(z, idx, lam, em_on),
                settings,
                xp=jnp,
            )
            self._check_finite(state.i, new.z)
            return new._replace(epoch_key=epoch_key, pos=pos, rng_key=key)

        return sample

    @staticmethod
    def _check_finite(i: Any, z: dict) -> None:
        names = list(z)
        bad = jnp.stack([~jnp.all(jnp.isfinite(z[k])) for k in names])

        def fail(step: Any, flags: Any) -> None:
            flags = np.asarray(flags).reshape(-1, len(names)).any(axis=0)
            if not flags.any():  # under vmap both branches of the cond run
                return
            sites = [n for n, f in zip(names, flags, strict=True) if f]
            raise sc.nonfinite_error(int(np.max(step)), sites)

        lax.cond(
            jnp.any(bad),
            lambda: jax.debug.callback(fail, i, bad),
            lambda: None,
        )

    def sample(
        self, state: SGHMCState, model_args: tuple, model_kwargs: dict
    ) -> SGHMCState:
        if self._sample_fn is None:
            raise RuntimeError("SGHMC.sample called before init")
        return self._sample_fn(state, model_args, model_kwargs)

    def postprocess_fn(self, model_args: tuple, model_kwargs: dict) -> Callable:
        if self._postprocess is None:
            return lambda x: x
        return self._postprocess(*model_args, **model_kwargs)

    @property
    def default_fields(self) -> tuple[str, ...]:
        return ("z",)

    def get_diagnostics_str(self, state: SGHMCState) -> str:
        return (
            f"step size {float(state.step_size):.2e}, "
            f"sparsity {float(state.sparsity):.1%}"
        )
