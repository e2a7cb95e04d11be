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

    **Randomness** is ``jax.random``'s threefry stream, bit for bit (per step
    ``split(rng_key, 3)``, one normal draw per site, the epoch keys), with the hash
    written out so that XLA fuses it (:func:`ppl_hw.core.sghmc.threefry2x32`). A step
    that leaves a non-finite value stops the run with an error naming the step and
    the sites (a ``FloatingPointError`` raised in a host callback, as JAX re-raises
    it).

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
    :param rmsprop_beta: pSGLD's averaging rate, in [0, 1).
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
    #: raise on a step leaving non-finite values (``False`` only to time its cost)
    _check_nonfinite = True

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
            batch = self._next_batch(epoch_key, jnp.array(0), _fold(k_run, 2))[0]
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
                batch=batch,
            )

        if vectorized:
            self._sample_fn = jax.vmap(self._sample_fn, in_axes=(0, None, None))
            return jax.vmap(init_one)(rng_key, init_params)
        return init_one(rng_key, init_params)

    def _advance(self, epoch_key: Any, pos: Any, key: Any) -> tuple[Any, Any]:
        """The epoch key and position of the next batch: a new epoch, keyed by
        ``jax.random.bits(key, (4,), uint32)``, when fewer than ``B`` positions are
        left (the last ``N mod B`` indices of an epoch are skipped)."""
        _, n, b = self._plate
        need = pos + b > n
        epoch_key = jnp.where(need, _bits(key, core.FEISTEL_ROUNDS), epoch_key)
        return epoch_key, jnp.where(need, 0, pos)

    def _next_batch(self, epoch_key: Any, pos: Any, key: Any) -> tuple[Any, Any, Any]:
        """``(indices, epoch_key, pos)``: the next ``B`` indices of the epoch's
        permutation (a keyed Feistel bijection cycle-walked onto the data,
        :func:`ppl_hw.core.sghmc.feistel_indices`), and the bookkeeping after them.
        The step from state ``s`` uses ``_next_batch(s.epoch_key, s.pos, k)[0]``
        with ``k = jax.random.split(s.rng_key, 3)[2]`` (kept in ``s.batch``)."""
        if self._plate is None:
            return None, epoch_key, pos
        _, n, b = self._plate
        epoch_key, pos = self._advance(epoch_key, pos, key)
        return _feistel_batch(epoch_key, pos, n, b), epoch_key, pos + b

    def _make_sample(
        self, potential: Callable, settings: core.SGHMCSettings
    ) -> Callable:
        grad_fn = jax.value_and_grad(potential)
        check = self._check_nonfinite

        def sample(state: SGHMCState, model_args: Any, model_kwargs: Any) -> SGHMCState:
            key, k_noise, k_perm = _split(state.rng_key, 3)
            leaves, tree = jax.tree.flatten(state.z)
            noise = jax.tree.unflatten(
                tree,
                [
                    _normal(k, jnp.shape(x), jnp.result_type(x))
                    for k, x in zip(_split(k_noise, len(leaves)), leaves, strict=True)
                ],
            )
            idx, epoch_key, pos = state.batch, state.epoch_key, state.pos
            if self._plate is not None:
                epoch_key, pos = self._advance(epoch_key, pos, k_perm)
                pos = pos + self._plate[2]
            new = core.step(
                state,
                noise,
                lambda z, lam, em_on: grad_fn(z, idx, lam, em_on),
                settings,
                xp=jnp,
            )
            on_bad = _nonfinite_check(state.i, new.z) if check else None
            batch = None
            if self._plate is not None:
                # the next step's batch; its cycle walk's loop also raises on_bad
                _, n, b = self._plate
                ek, p = self._advance(epoch_key, pos, _fold(key, 2))
                batch = _feistel_batch(ek, p, n, b, on_bad)
            elif on_bad is not None:
                lax.cond(on_bad[0], on_bad[1], lambda: None)
            return new._replace(epoch_key=epoch_key, pos=pos, rng_key=key, batch=batch)

        return sample

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


# -- randomness: JAX's threefry stream, with the hash written out --------------------


#: fused cycle-walking steps before the data-dependent loop (measured: 1-3 cost
#: the same without the check; with it, 3 makes the loop, whose body carries the
#: check's callback, run less often)
_WALKS = 3


def _unrolled(key: Any) -> bool:
    """Draw with :func:`ppl_hw.core.sghmc.threefry2x32` (bit for bit ``jax.random``):
    a raw ``uint32[2]`` threefry key in JAX's default partitionable mode."""
    return (
        not jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)
        and key.dtype == jnp.uint32
        and key.shape == (2,)
        and jax.config.jax_threefry_partitionable
        and jax.config.jax_default_prng_impl == "threefry2x32"
    )


def _hash(key: Any, n: int) -> tuple[Any, Any]:
    zeros = jnp.zeros((n,), jnp.uint32)
    return core.threefry2x32(
        key[0], key[1], zeros, jnp.arange(n, dtype=jnp.uint32), xp=jnp
    )


def _split(key: Any, n: int) -> list[Any]:
    """``list(jax.random.split(key, n))``."""
    if not _unrolled(key):
        return list(random.split(key, n))
    y1, y2 = _hash(key, n)
    return [jnp.stack([y1[j], y2[j]]) for j in range(n)]


def _bits(key: Any, n: int) -> Any:
    """``jax.random.bits(key, (n,), jnp.uint32)``."""
    if not _unrolled(key):
        return random.bits(key, (n,), jnp.uint32)
    y1, y2 = _hash(key, n)
    return y1 ^ y2


def _normal(key: Any, shape: tuple, dtype: Any) -> Any:
    """``jax.random.normal(key, shape, dtype)`` (its own transform of the bits:
    uniforms on (-1, 1) from the mantissa, then ``sqrt(2) erfinv``)."""
    if not (_unrolled(key) and jnp.dtype(dtype) == jnp.float32):
        return random.normal(key, shape, dtype)
    size = int(np.prod(shape, dtype=np.int64))
    bits = _bits(key, size).reshape(shape)
    one = jnp.asarray(np.float32(1.0).view(np.uint32))
    u = lax.bitcast_convert_type((bits >> 9) | one, jnp.float32) - np.float32(1.0)
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    u = lax.max(lo, u * (np.float32(1.0) - lo) + lo)
    return np.float32(np.sqrt(2)) * lax.erf_inv(u)


def _fold(key: Any, j: int) -> Any:
    """``jax.random.split(key, n)[j]`` for any ``n > j`` (= ``fold_in(key, j)``)."""
    if not _unrolled(key):
        return random.fold_in(key, j)
    y1, y2 = core.threefry2x32(key[0], key[1], jnp.uint32(0), jnp.uint32(j), xp=jnp)
    return jnp.stack([y1, y2])


def _nonfinite_check(step: Any, z: dict) -> tuple[Any, Callable]:
    """``(bad, raise_)``: whether the step left a non-finite value in ``z`` (one
    scalar: ``sum(z * 0)`` is NaN exactly when some value is not finite, and never
    overflows), and a function that raises :func:`ppl_hw.common.sghmc.nonfinite_error`
    naming the step and the sites (a host callback; call it only where ``bad``)."""
    names = list(z)
    bad = jnp.isnan(sum(jnp.sum(z[k] * 0) for k in names))

    def fail(step: Any, *values: Any) -> None:
        steps = np.asarray(step).reshape(-1)
        chains = [np.asarray(v).reshape(steps.size, -1) for v in values]
        for r in range(steps.size):  # the first chain with non-finite values
            sites = [
                n
                for n, v in zip(names, chains, strict=True)
                if not np.isfinite(v[r]).all()
            ]
            if sites:
                raise sc.nonfinite_error(int(steps[r]), sites)
        # none: under vmap both branches of a cond run

    return bad, lambda: jax.debug.callback(fail, step, *(z[k] for k in names))


def _feistel_batch(
    epoch_key: Any,
    pos: Any,
    n: int,
    b: int,
    on_bad: tuple[Any, Callable] | None = None,
) -> Any:
    """Positions ``pos, ..., pos + b - 1`` of the epoch's permutation of
    ``range(n)``: ``_WALKS`` fused walks, then a loop for the rare stragglers.

    ``on_bad = (bad, raise_)`` (from :func:`_nonfinite_check`) rides on that loop:
    it also runs while ``bad``, and its body calls ``raise_`` then; so the step's
    check costs no control flow of its own."""
    v = core.feistel_walk(
        (pos + jnp.arange(b)).astype(jnp.uint32), epoch_key, n, _WALKS, xp=jnp
    )
    pending = jnp.array(False) if on_bad is None else on_bad[0]

    def body(carry: tuple[Any, Any]) -> tuple[Any, Any]:
        v, pending = carry
        if on_bad is not None:
            lax.cond(pending, on_bad[1], lambda: None)
        v = jnp.where(v >= n, core.feistel_encrypt_mixed(v, epoch_key, n, xp=jnp), v)
        return v, jnp.zeros_like(pending)

    v, _ = lax.while_loop(lambda c: jnp.any(c[0] >= n) | c[1], body, (v, pending))
    return v.astype(jnp.int32)
