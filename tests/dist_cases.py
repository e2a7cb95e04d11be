"""Shared inputs of the distribution tests: noise samples and parameter sets."""

from __future__ import annotations

import functools

import numpy as np

from ppl_hw import devices
from ppl_hw.core import noise_table as nt

NOISE_NAMES = ("gaussian", "uniform", "mtj", "pcm")
GENERATORS = {
    "gaussian": devices.gaussian_noise,
    "uniform": devices.uniform_noise,
    "mtj": devices.mtj_noise,
    "pcm": devices.pcm_read_noise,
}


@functools.cache
def noise_samples(name: str, n: int = 10_000) -> np.ndarray:
    return GENERATORS[name](n, seed=0)


@functools.cache
def noise_table(name: str) -> nt.NoiseTable:
    return nt.fit_noise_table(noise_samples(name))


def knots(table: nt.NoiseTable) -> np.ndarray:
    return table.z0 + table.dz * np.arange(table.num_knots)


RNG = np.random.default_rng(2024)
DEVICE_LOC = RNG.normal(size=(2, 3))
DEVICE_SCALE = np.exp(RNG.uniform(-2, 0.5, size=(2, 3)))
GRID = (-1.0, 0.0, 1.0)
GRID5 = (-2.0, -0.5, 0.0, 0.5, 2.0)
DISCRETE_LOGITS = RNG.normal(size=(4, 3)) * 2
SS_PROB = np.array([0.0, 0.2, 0.5, 1.0])
SS_SPIKE = np.array([0.01, 0.05, 0.1, 0.02])
SS_SLAB = np.array([1.0, 0.5, 2.0, 0.3])
