"""Crossbar devices: noise-sample generators (and, with the crossbar handler, device
presets).

The generators return NumPy samples of a device's noise; fit them with
``EmpiricalNoise`` to use the shape as a variational family.
"""

from .noise import gaussian_noise, mtj_noise, pcm_read_noise, uniform_noise

__all__ = ["gaussian_noise", "mtj_noise", "pcm_read_noise", "uniform_noise"]
