"""``EmpiricalNoise``: a measured device-noise shape as a Pyro distribution."""

from __future__ import annotations

from typing import Any

import torch
from pyro.distributions import TorchDistribution, constraints

from ...core import noise_table as nt
from ._base import BACKEND, uniform_open

__all__ = ["EmpiricalNoise"]

_xp, _sp = BACKEND.xp, BACKEND.special


class EmpiricalNoise(TorchDistribution):
    r"""The standardised shape of measured device noise, as a distribution.

    The samples are smoothed by a Gaussian kernel density estimate and tabulated as a
    piecewise log-linear density on a uniform grid with half-Gaussian tails, then mapped
    by an exact affine transform to mean 0 and variance 1
    (:mod:`ppl_hw.core.noise_table` has the details). The cdf is the exact integral
    of that density, so :math:`\mathrm d\,\mathrm{cdf}/\mathrm dx =
    \exp(\mathrm{log\_prob})`; sampling is by inverse transform; the entropy
    :math:`H_0` is computed once. Use it as the shape of
    :class:`~ppl_hw.pyro.distributions.DeviceNoise`.

    The fit runs in NumPy, once, in float64; the tables are handed to torch in the
    dtype and on the device of the values they meet. Given the same samples, the
    NumPyro and Pyro classes build identical tables.

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
        w = DeviceNoise(loc, scale, noise).rsample()
    """

    arg_constraints: dict[str, Any] = {}
    support = constraints.real
    has_rsample = True

    def __init__(
        self,
        samples: Any,
        *,
        bandwidth: Any = "silverman",
        num_knots: int = 2049,
        validate_args: bool | None = None,
    ):
        self.table = nt.fit_noise_table(
            samples, bandwidth=bandwidth, num_knots=num_knots
        )
        self._cache: dict[Any, tuple[torch.Tensor, torch.Tensor]] = {}
        super().__init__(torch.Size(), torch.Size(), validate_args=validate_args)

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
        d.table = table
        d._cache = {}
        TorchDistribution.__init__(
            d, torch.Size(), torch.Size(), validate_args=validate_args
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
    def infer_shapes(cls, **arg_shapes: Any) -> tuple[torch.Size, torch.Size]:
        """``((), ())``: the shape of ``samples`` is not a batch shape."""
        return torch.Size(), torch.Size()

    def tables(
        self, like: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The cell table (complex: log-density and log-slope per cell) and the
        cumulative table, in the precision and on the device of ``like`` (default:
        torch's default dtype, CPU); the cells are complex128 for float64 values,
        complex64 otherwise."""
        dtype = like.dtype if like is not None and like.is_floating_point() else None
        dtype = dtype or torch.get_default_dtype()
        cdtype = torch.complex128 if dtype == torch.float64 else torch.complex64
        device = like.device if like is not None else torch.device("cpu")
        key = (dtype, device)
        if key not in self._cache:
            self._cache[key] = (
                torch.as_tensor(self.table.cells, dtype=cdtype, device=device),
                torch.as_tensor(self.table.cumulative, dtype=dtype, device=device),
            )
        return self._cache[key]

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(self.batch_shape)

    @property
    def variance(self) -> torch.Tensor:
        return torch.ones(self.batch_shape)

    def entropy(self) -> torch.Tensor:
        """The differential entropy :math:`H_0` (nats)."""
        return torch.full(self.batch_shape, self.table.entropy)

    def rsample(self, sample_shape: Any = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        u = uniform_open(shape, torch.get_default_dtype(), None)
        return self.icdf(u)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        cells, _ = self.tables(value)
        return nt.table_log_prob(value, self.table, cells, xp=_xp, special=_sp)

    def cdf(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        cells, cumulative = self.tables(value)
        return nt.table_cdf(value, self.table, cells, cumulative, xp=_xp, special=_sp)

    def icdf(self, value: torch.Tensor) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            value = torch.as_tensor(value, dtype=torch.get_default_dtype())
        cells, cumulative = self.tables(value)
        return nt.table_icdf(value, self.table, cells, cumulative, xp=_xp, special=_sp)

    def __repr__(self) -> str:
        t = self.table
        return (
            f"EmpiricalNoise(num_samples={t.num_samples}, num_knots={t.num_knots}, "
            f"entropy={t.entropy:.4f})"
        )
