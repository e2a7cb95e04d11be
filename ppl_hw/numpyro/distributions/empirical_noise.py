"""``EmpiricalNoise``: a measured device-noise shape as a NumPyro distribution."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from jax import random
from numpyro.distributions import constraints
from numpyro.distributions.batch_util import vmap_over
from numpyro.distributions.util import validate_sample

from ...core import noise_table as nt
from ._base import BACKEND, HwDistribution

__all__ = ["EmpiricalNoise"]

# Jitted once per table and shape: eager calls then cost one dispatch instead of one
# small XLA compilation per array operation; inside an outer jit they are inlined.
# one_read: the lookup fuses into XLA's element loop (see table_log_prob).
_log_prob = jax.jit(
    functools.partial(BACKEND.bind(nt.table_log_prob), one_read=True),
    static_argnums=1,
)
_cdf = jax.jit(BACKEND.bind(nt.table_cdf), static_argnums=1)
_icdf = jax.jit(BACKEND.bind(nt.table_icdf), static_argnums=1)


class EmpiricalNoise(HwDistribution):
    r"""The standardised shape of measured device noise, as a distribution.

    The samples are smoothed by a Gaussian kernel density estimate and tabulated as a
    piecewise log-linear density on a uniform grid with half-Gaussian tails, then mapped
    by an exact affine transform to mean 0 and variance 1
    (:mod:`ppl_hw.core.noise_table` has the details). The cdf is the exact integral
    of that density, so :math:`\mathrm d\,\mathrm{cdf}/\mathrm dx =
    \exp(\mathrm{log\_prob})`; sampling is by inverse transform; the entropy
    :math:`H_0` is computed once. Use it as the shape of
    :class:`~ppl_hw.numpyro.distributions.DeviceNoise`.

    Construction (the fit) runs in NumPy, once; the tables then live in
    ``pytree_data_fields`` so the distribution survives ``jit``, ``vmap`` and
    ``lax.map``. Given the same samples, the NumPyro and Pyro classes build identical
    tables.

    :param samples: 1-D array (NumPy, JAX or torch) of at least
        :data:`~ppl_hw.core.noise_table.MIN_SAMPLES` finite device-noise samples, not
        all equal, in any units (``1e-300 * N(0, 1)`` as well as ``N(0, 1)``), spread
        over at least :data:`~ppl_hw.core.noise_table.MIN_RESOLUTION` float64 steps
        (standard deviation) at their magnitude.
    :param bandwidth: kernel bandwidth: ``"silverman"`` (default), ``"scott"`` or a
        positive number in the units of ``samples``.
    :param num_knots: grid knots, at most
        :data:`~ppl_hw.core.noise_table.MAX_KNOTS` (raised automatically to four per
        bandwidth; samples whose range needs more, heavy tails or outliers, are
        refused with the bandwidth that would fit).

    **Example**::

        from ppl_hw import devices
        noise = EmpiricalNoise(devices.mtj_noise(10_000, seed=0))
        noise.entropy()          # H0 <= 0.5 log(2 pi e), the Gaussian's
        w = DeviceNoise(loc, scale, noise).sample(key)
    """

    arg_constraints: dict[str, Any] = {}
    support = constraints.real
    reparametrized_params: list[str] = []
    pytree_data_fields = ("_cells", "_cumulative")
    pytree_aux_fields = ("table",)

    def __init__(
        self,
        samples: Any,
        *,
        bandwidth: Any = "silverman",
        num_knots: int = 2049,
        validate_args: bool | None = None,
    ):
        table = nt.fit_noise_table(samples, bandwidth=bandwidth, num_knots=num_knots)
        self._set_table(table)
        super().__init__(batch_shape=(), event_shape=(), validate_args=validate_args)

    def _set_table(self, table: nt.NoiseTable) -> None:
        self.table = table
        # complex128 -> complex64 unless x64 is on, as float64 -> float32
        self._cells = jnp.asarray(table.cells)
        self._cumulative = jnp.asarray(table.cumulative)

    @classmethod
    def from_table(
        cls, table: nt.NoiseTable, *, validate_args: bool | None = None
    ) -> EmpiricalNoise:
        """The distribution of an already fitted
        :class:`~ppl_hw.core.noise_table.NoiseTable` (e.g. ``other.table`` of the other
        backend's ``EmpiricalNoise``)."""
        if not isinstance(table, nt.NoiseTable):
            raise TypeError(f"table must be a NoiseTable, got {type(table).__name__}")
        d = cls.__new__(cls)
        d._set_table(table)
        HwDistribution.__init__(
            d, batch_shape=(), event_shape=(), validate_args=validate_args
        )
        return d

    @classmethod
    def from_file(cls, path: Any, **kwargs: Any) -> EmpiricalNoise:
        """Fit the samples stored in a ``.npy`` file or a one-column ``.csv`` file.

        The file is read once, whole, and refused (``ValueError`` naming it) if it
        changed while it was read (size, modification time or inode), e.g. while
        another process rewrites it; a ``.csv`` is validated field by field, errors
        naming the line (:func:`~ppl_hw.core.noise_table.load_noise_samples`).

        :param path: the file.
        :param kwargs: ``bandwidth``, ``num_knots``, ``validate_args``.
        """
        return cls(nt.load_noise_samples(path), **kwargs)

    @classmethod
    def infer_shapes(
        cls, *args: Any, **kwargs: Any
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        return (), ()

    @property
    def mean(self) -> jnp.ndarray:
        return jnp.zeros(self.batch_shape)

    @property
    def variance(self) -> jnp.ndarray:
        return jnp.ones(self.batch_shape)

    def entropy(self) -> jnp.ndarray:
        """The differential entropy :math:`H_0` (nats)."""
        return jnp.full(self.batch_shape, self.table.entropy)

    def sample(self, key: Any, sample_shape: tuple[int, ...] = ()) -> jnp.ndarray:
        shape = tuple(sample_shape) + self.batch_shape
        dtype = self._cumulative.dtype
        u = random.uniform(
            key, shape, dtype=dtype, minval=jnp.finfo(dtype).tiny, maxval=1.0
        )
        return self.icdf(u)

    @validate_sample
    def log_prob(self, value: Any) -> jnp.ndarray:
        return _log_prob(value, self.table, self._cells)

    def cdf(self, value: Any) -> jnp.ndarray:
        return _cdf(value, self.table, self._cells, self._cumulative)

    def icdf(self, q: Any) -> jnp.ndarray:
        q = jnp.asarray(q, dtype=self._cumulative.dtype)
        return _icdf(q, self.table, self._cells, self._cumulative)

    def __repr__(self) -> str:
        t = self.table
        return (
            f"EmpiricalNoise(num_samples={t.num_samples}, num_knots={t.num_knots}, "
            f"entropy={t.entropy:.4f})"
        )


@vmap_over.register
def _vmap_over_empirical_noise(dist: EmpiricalNoise) -> EmpiricalNoise:
    # The tables are shared by every batch member: never mapped.
    axes = EmpiricalNoise.__new__(EmpiricalNoise)
    axes.__dict__.update(dist.__dict__)
    axes._cells = None
    axes._cumulative = None
    return axes
