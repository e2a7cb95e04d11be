r"""Frozen, validated configurations: crossbar devices and their effects.

A :class:`Device` says how weights are stored on an analog crossbar and which
non-idealities act on them. Every effect has a switch (``None`` / ``0`` / ``False``
is off) and every parameter can be overridden, either at construction or with
:meth:`Device.replace`. The presets :func:`~ppl_hw.devices.PCM`,
:func:`~ppl_hw.devices.RRAM`, :func:`~ppl_hw.devices.MTJ` and
:func:`~ppl_hw.devices.Ideal` are ``Device`` instances with documented defaults.

Effects on the stored weights (applied by the crossbar handler at sample sites):

=====================  ==============================================================
field(s)               effect
=====================  ==============================================================
``gmin, gmax``         conductance range (µS) of each device of a differential pair
``mapping``            weight scale per ``"layer"`` or per ``"column"``
``levels``             conductance quantisation to ``levels`` values in [gmin, gmax]
``stuck_at_0/1``       stuck-at-gmin / stuck-at-gmax fault rates
``programming``        programming noise model: ``"pcm"``, ``"rram"``, ``"gaussian"``
``drift``              conductance drift: ``"pcm"`` or ``"power"``; optional global
                       compensation (``drift_compensation``)
``read_noise``         read noise at time t: ``"pcm"`` (accumulated 1/f) or
                       ``"gaussian"``
``binary``             binary (MTJ) cells with write errors and read disturbs
=====================  ==============================================================

Effects at every matrix product whose weights the handler programmed (the
peripheral converters of the crossbar's tiles; see :doc:`/crossbar` for the layers
that are routed): ``dac_bits`` (input quantisation), ``adc_bits`` (output
quantisation and clipping at ``out_bound``), ``out_noise`` (additive output noise)
and ``ir_drop`` (first-order IR drop).

Tiles: a weight matrix larger than ``max_input_size`` × ``max_output_size`` (default
512 × 512, aihwkit's ``MappingParameter``) is split into tiles, each with its own
weight scale, drift compensation, noise and bound management, DAC and ADC; the
tiles' outputs are summed digitally (aihwkit's ``TileModuleArray``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from .checks import check_choice, check_int, check_number

__all__ = [
    "DRIFT_MODELS",
    "MAPPINGS",
    "PROGRAMMING_MODELS",
    "READ_NOISE_MODELS",
    "Device",
]

MAPPINGS = ("layer", "column")
PROGRAMMING_MODELS = ("pcm", "rram", "gaussian")
DRIFT_MODELS = ("pcm", "power")
READ_NOISE_MODELS = ("pcm", "gaussian")


def _bits(name: str, value: Any) -> int | None:
    """Converter resolution: an int >= 1, or ``None`` (the converter off)."""
    if value is not None and check_int(name, value, allow_none=True) < 1:
        raise ValueError(f"{name} must be >= 1 (or None for off), got {value}")
    return value


@dataclass(frozen=True)
class Device:
    r"""How weights are stored on an analog crossbar, and what happens to them.

    Weights map onto a **differential pair** of devices, per layer or per column,
    with scale :math:`s = (g_\max - g_\min)/\max|w|`:
    :math:`G^+ = \mathrm{clip}(w s, 0, g_\max) + g_\min`,
    :math:`G^- = \mathrm{clip}(-w s, 0, g_\max) + g_\min`, read back as
    :math:`(G^+ - G^-)/s`. Sites with a :class:`DiscreteWeight` prior map their
    value grid (scale from the grid's largest magnitude) and skip ``levels``.

    :param name: a label.
    :param gmin: smallest conductance (µS), ``>= 0``.
    :param gmax: largest conductance (µS), ``> gmin``.
    :param mapping: ``"layer"`` (one scale per site) or ``"column"`` (one per output
        unit: the last axis of 2-D weights, the first of convolution kernels).
    :param levels: conductance levels per device (``>= 2``), or ``None`` (analog).
    :param stuck_at_0: rate of devices stuck at ``gmin`` (in [0, 1]).
    :param stuck_at_1: rate of devices stuck at ``gmax``;
        ``stuck_at_0 + stuck_at_1 <= 1``.
    :param programming: ``"pcm"`` (aihwkit ``PCMLikeNoiseModel``), ``"rram"``
        (aihwkit ``ReRamWan2022NoiseModel``), ``"gaussian"`` (standard deviation
        ``programming_sigma * gmax``) or ``None``.
    :param programming_scale: multiplies the programming noise's standard deviation.
    :param programming_sigma: for ``"gaussian"``: σ as a fraction of ``gmax``.
    :param drift: ``"pcm"`` (aihwkit's conductance-dependent exponent),
        ``"power"`` (``G (t + t0)/t0)^{-ν}``, ``ν ~ |N(drift_nu_mean, drift_nu_std)|``)
        or ``None``.
    :param drift_scale: multiplies the drift exponent ν.
    :param drift_nu_mean: for ``"power"``: mean of ν.
    :param drift_nu_std: for ``"power"``: standard deviation of ν.
    :param drift_t0: reference time t0 (s) of the drift law, ``> 0``.
    :param drift_compensation: rescale each site by the ratio of its mean absolute
        output on a probe input (all ones) right after programming to that at read
        time (global drift compensation, as aihwkit's).
    :param read_noise: ``"pcm"`` (accumulated 1/f noise at time t), ``"gaussian"``
        (relative standard deviation ``read_noise_sigma``) or ``None``.
    :param read_noise_scale: multiplies the read noise's standard deviation.
    :param read_noise_sigma: for ``"gaussian"``: relative σ of a read.
    :param t_read: duration of a read (s), the 1/f integration constant, ``> 0``.
    :param binary: binary cells (MTJ): each weight is one of two values; needs a
        2-value ``DiscreteWeight`` grid, or ``binarize=True``.
    :param binarize: map real weights to ``sign(w) mean|w|`` per site first.
    :param write_error_rate: probability that a binary cell is programmed to the
        wrong state (drawn once per chip).
    :param read_disturb_rate: probability that a read returns the wrong state
        (fresh at every read).
    :param dac_bits: input (DAC) resolution in bits, or ``None``.
    :param adc_bits: output (ADC) resolution in bits, or ``None``.
    :param inp_bound: input range of the DAC after abs-max scaling, ``> 0``.
    :param out_bound: output range of the ADC (in units of the normalised output),
        ``> 0``.
    :param out_noise: standard deviation of the additive output noise (normalised
        output units), ``>= 0``.
    :param ir_drop: strength of the first-order IR-drop approximation, ``>= 0``.
    :param max_input_size: rows of a tile (inputs of a layer per tile), an int
        ``>= 1`` or ``None`` (one tile per layer, however large).
    :param max_output_size: columns of a tile (outputs per tile), an int ``>= 1`` or
        ``None``.
    """

    name: str = "custom"
    gmin: float = 0.0
    gmax: float = 25.0
    mapping: str = "layer"
    levels: int | None = None
    stuck_at_0: float = 0.0
    stuck_at_1: float = 0.0
    programming: str | None = None
    programming_scale: float = 1.0
    programming_sigma: float = 0.0
    drift: str | None = None
    drift_scale: float = 1.0
    drift_nu_mean: float = 0.05
    drift_nu_std: float = 0.01
    drift_t0: float = 20.0
    drift_compensation: bool = False
    read_noise: str | None = None
    read_noise_scale: float = 1.0
    read_noise_sigma: float = 0.0
    t_read: float = 250e-9
    binary: bool = False
    binarize: bool = False
    write_error_rate: float = 0.0
    read_disturb_rate: float = 0.0
    dac_bits: int | None = None
    adc_bits: int | None = None
    inp_bound: float = 1.0
    out_bound: float = 12.0
    out_noise: float = 0.0
    ir_drop: float = 0.0
    max_input_size: int | None = 512
    max_output_size: int | None = 512

    def __post_init__(self) -> None:
        if not isinstance(self.name, str):
            raise TypeError(f"name must be a str, got {self.name!r}")
        gmin = check_number("gmin", self.gmin, low=0.0)
        gmax = check_number("gmax", self.gmax)
        if not gmax > gmin:
            raise ValueError(
                f"gmax must be > gmin, got gmax={self.gmax!r}, gmin={self.gmin!r}"
            )
        check_choice("mapping", self.mapping, MAPPINGS)
        if self.levels is not None:
            if isinstance(self.levels, bool) or not isinstance(self.levels, int):
                raise TypeError(f"levels must be an int or None, got {self.levels!r}")
            if self.levels < 2:
                raise ValueError(
                    f"levels must be >= 2 (or None for analog), got {self.levels}"
                )
        s0 = check_number("stuck_at_0", self.stuck_at_0, low=0.0, high=1.0)
        s1 = check_number("stuck_at_1", self.stuck_at_1, low=0.0, high=1.0)
        if s0 + s1 > 1.0:
            raise ValueError(
                f"stuck_at_0 + stuck_at_1 must be <= 1, got {self.stuck_at_0!r} + "
                f"{self.stuck_at_1!r}"
            )
        check_choice(
            "programming", self.programming, PROGRAMMING_MODELS, allow_none=True
        )
        check_number("programming_scale", self.programming_scale, low=0.0)
        check_number("programming_sigma", self.programming_sigma, low=0.0)
        check_choice("drift", self.drift, DRIFT_MODELS, allow_none=True)
        check_number("drift_scale", self.drift_scale, low=0.0)
        check_number("drift_nu_mean", self.drift_nu_mean)
        check_number("drift_nu_std", self.drift_nu_std, low=0.0)
        check_number("drift_t0", self.drift_t0, low=0.0, open_low=True)
        if not isinstance(self.drift_compensation, bool):
            raise TypeError(
                f"drift_compensation must be a bool, got {self.drift_compensation!r}"
            )
        check_choice("read_noise", self.read_noise, READ_NOISE_MODELS, allow_none=True)
        check_number("read_noise_scale", self.read_noise_scale, low=0.0)
        check_number("read_noise_sigma", self.read_noise_sigma, low=0.0)
        check_number("t_read", self.t_read, low=0.0, open_low=True)
        for flag in ("binary", "binarize"):
            if not isinstance(getattr(self, flag), bool):
                raise TypeError(f"{flag} must be a bool, got {getattr(self, flag)!r}")
        check_number("write_error_rate", self.write_error_rate, low=0.0, high=1.0)
        check_number("read_disturb_rate", self.read_disturb_rate, low=0.0, high=1.0)
        if self.binary:
            analog = [
                f
                for f in ("levels", "programming", "drift", "read_noise")
                if getattr(self, f)
            ]
            if analog or self.drift_compensation:
                raise ValueError(
                    "binary cells take bit errors only; switch off "
                    f"{analog or ['drift_compensation']} "
                    "(they model analog conductances)"
                )
        elif self.binarize:
            raise ValueError("binarize=True needs binary=True (binary cells)")
        _bits("dac_bits", self.dac_bits)
        _bits("adc_bits", self.adc_bits)
        check_number("inp_bound", self.inp_bound, low=0.0, open_low=True)
        check_number("out_bound", self.out_bound, low=0.0, open_low=True)
        check_number("out_noise", self.out_noise, low=0.0)
        check_number("ir_drop", self.ir_drop, low=0.0)
        for field in ("max_input_size", "max_output_size"):
            value = getattr(self, field)
            check_int(field, value, low=1, allow_none=True)

    def replace(self, **changes: Any) -> Device:
        """A copy with ``changes`` applied (and validated)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise TypeError(f"Device has no field(s) {unknown}")
        return dataclasses.replace(self, **changes)

    @property
    def weight_effects_on(self) -> bool:
        """Whether any effect acts on the stored weights (else the handler leaves
        sample sites untouched, bit for bit)."""
        return bool(
            self.levels
            or self.stuck_at_0
            or self.stuck_at_1
            or self.programming
            or self.drift
            or self.read_noise
            or self.binary
        )

    @property
    def converter_effects_on(self) -> bool:
        """Whether any converter effect acts at ``nn.dense`` / ``nn.conv2d``."""
        return bool(self.dac_bits or self.adc_bits or self.out_noise or self.ir_drop)

    @property
    def chip_draws(self) -> tuple[str, ...]:
        """Names of the per-chip standard draws a weight site needs (each of the
        site's shape, for the + and − device): ``normal`` draws for programming
        noise and drift exponents, ``uniform`` draws for faults and write errors."""
        names = []
        if self.programming:
            names.append("prog")
        if self.drift:
            names.append("nu")
        if self.stuck_at_0 or self.stuck_at_1:
            names.append("stuck")
        if self.binary and self.write_error_rate:
            names.append("write")
        return tuple(names)

    @property
    def read_draws(self) -> tuple[str, ...]:
        """Names of the per-read standard draws a weight site needs."""
        names = []
        if self.read_noise:
            names.append("read")
        if self.binary and self.read_disturb_rate:
            names.append("disturb")
        return tuple(names)
