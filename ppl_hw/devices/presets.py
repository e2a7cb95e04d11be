r"""Crossbar device presets: frozen, validated
:class:`~ppl_hw.core.device.Device` configs.

Each preset takes keyword overrides of any :class:`~ppl_hw.core.device.Device`
field, e.g.
``PCM(drift_compensation=True)``, ``PCM(read_noise=None)``, ``RRAM(levels=16)``;
``Device.replace`` does the same on an instance.

- ``PCM`` (aihwkit): gmax 25 µS, gmin 0; programming noise, drift and read noise of
  aihwkit's ``PCMLikeNoiseModel``, applied in aihwkit's order (the programmed
  weights are converted to conductances again before drift and read noise); global
  drift compensation **on** (aihwkit's ``InferenceRPUConfig`` default,
  ``GlobalDriftCompensation``; ``PCM(drift_compensation=False)`` for the raw
  drift); 7-bit DAC, 9-bit ADC, output noise 0.06, ``out_bound`` 12 (aihwkit's
  ``IOParameters`` defaults); 512 × 512 tiles (aihwkit's ``MappingParameter``).
- ``RRAM`` (aihwkit + ours): gmax 40 µS (the fit's reference); programming noise of
  aihwkit's ``ReRamWan2022NoiseModel``; drift ``"power"`` with
  ν ~ abs(N(0.005, 0.002)) and Gaussian read noise of 1 % (ours: aihwkit's model has
  neither; its docs suggest about 1 % read noise); the same converters.
- ``MTJ`` (ours): binary cells, gmin 100 µS / gmax 200 µS (parallel ≈ 5 kΩ,
  anti-parallel ≈ 10 kΩ), write error rate 1e-3, read-disturb rate 1e-5; the same
  converters.
- ``Ideal``: no effect at all: the crossbar handler is an exact identity.
"""

from __future__ import annotations

from typing import Any

from ..core.device import Device

__all__ = ["MTJ", "PCM", "RRAM", "Ideal"]

_CONVERTERS = dict(
    dac_bits=7, adc_bits=9, out_noise=0.06, inp_bound=1.0, out_bound=12.0
)


def PCM(**overrides: Any) -> Device:
    """Phase-change memory as in aihwkit's ``PCMLikeNoiseModel`` (Nandakumar et al.,
    ICECS 2019) with aihwkit's default converters; see :mod:`ppl_hw.core.pcm`."""
    base = dict(
        name="PCM",
        gmin=0.0,
        gmax=25.0,
        programming="pcm",
        drift="pcm",
        read_noise="pcm",
        drift_t0=20.0,
        drift_compensation=True,
        t_read=250e-9,
        **_CONVERTERS,
    )
    return Device(**{**base, **overrides})


def RRAM(**overrides: Any) -> Device:
    """Resistive RAM: aihwkit's ``ReRamWan2022NoiseModel`` programming noise (Wan et
    al., Nature 2022); drift and read noise ours (documented above)."""
    base = dict(
        name="RRAM",
        gmin=0.0,
        gmax=40.0,
        programming="rram",
        drift="power",
        drift_nu_mean=0.005,
        drift_nu_std=0.002,
        read_noise="gaussian",
        read_noise_sigma=0.01,
        **_CONVERTERS,
    )
    return Device(**{**base, **overrides})


def MTJ(**overrides: Any) -> Device:
    """Binary magnetic tunnel junctions: two states per cell, write errors once per
    chip and read disturbs at every read (ours). Sites need a 2-value
    ``DiscreteWeight`` grid, or ``binarize=True``."""
    base = dict(
        name="MTJ",
        gmin=100.0,
        gmax=200.0,
        binary=True,
        write_error_rate=1e-3,
        read_disturb_rate=1e-5,
        **_CONVERTERS,
    )
    return Device(**{**base, **overrides})


def Ideal(**overrides: Any) -> Device:
    """No non-ideality: with it the crossbar handler changes nothing."""
    return Device(**{"name": "Ideal", **overrides})
