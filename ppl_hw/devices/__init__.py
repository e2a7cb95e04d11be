"""Crossbar devices: presets for the crossbar handler and noise-sample generators.

:func:`PCM`, :func:`RRAM`, :func:`MTJ` and :func:`Ideal` return frozen
:class:`~ppl_hw.core.device.Device` configurations for
:func:`ppl_hw.numpyro.handlers.crossbar` / :func:`ppl_hw.pyro.handlers.crossbar`.
The generators return NumPy samples of a device's noise; fit them with
``EmpiricalNoise`` to use the shape as a variational family.
"""

from ..core.device import Device
from .noise import gaussian_noise, mtj_noise, pcm_read_noise, uniform_noise
from .presets import MTJ, PCM, RRAM, Ideal

__all__ = [
    "MTJ",
    "PCM",
    "RRAM",
    "Device",
    "Ideal",
    "gaussian_noise",
    "mtj_noise",
    "pcm_read_noise",
    "uniform_noise",
]
