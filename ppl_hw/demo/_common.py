"""Rows, configuration and evaluation shared by the demo's jobs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import metrics
from ..datasets import Split

__all__ = [
    "BACKENDS",
    "DEPLOY_TIMES",
    "SIZES",
    "SPIKE_AND_SLAB",
    "DemoConfig",
    "NoiseRow",
    "Row",
    "evaluate",
]

SIZES = {
    # name: (SVI steps, learning rate, posterior predictive samples, noise samples)
    "smoke": (300, 1e-2, 20, 2_000),
    "default": (2000, 1e-2, 100, 20_000),
}
"""Run sizes of the demo: ``(svi_steps, learning_rate, num_samples, noise_samples)``."""

BACKENDS = ("numpyro", "pyro")

DEPLOY_TIMES = {"1 s": 1.0, "1 day": 86_400.0, "1 year": 31_536_000.0}
"""Times since programming at which the demo reads the PCM crossbar."""

SPIKE_AND_SLAB = (0.5, 0.05, 1.0)
"""The demo's spike-and-slab weight prior: slab weight, spike scale, slab scale."""


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run (see ``python -m ppl_hw.demo --help``)."""

    backends: tuple[str, ...] = BACKENDS
    size: str = "default"
    steps: int = SIZES["default"][0]
    learning_rate: float = SIZES["default"][1]
    num_samples: int = SIZES["default"][2]
    noise_samples: int = SIZES["default"][3]
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class Row:
    """One line of the demo's main table.

    ``sparsity`` is the share of weights the method switches off (for the
    spike-and-slab prior: weights whose posterior slab probability is below 0.5),
    ``None`` where it does not apply.
    """

    backend: str
    method: str
    accuracy: float
    nll: float
    ece: float
    seconds: float
    sparsity: float | None = None


@dataclass(frozen=True)
class NoiseRow:
    """One noise generator as fitted by ``EmpiricalNoise``: its standardised moments
    and entropy (nats)."""

    generator: str
    num_samples: int
    bandwidth: float
    mean: float
    variance: float
    skewness: float
    kurtosis: float
    entropy: float


def evaluate(
    backend: str, method: str, probs, data: Split, seconds: float, sparsity=None
) -> Row:
    """Test accuracy, NLL and ECE of predictive probabilities, as a :class:`Row`."""
    probs = np.asarray(probs, dtype=np.float64)
    return Row(
        backend=backend,
        method=method,
        accuracy=metrics.accuracy(probs, data.y_test),
        nll=metrics.nll(probs, data.y_test),
        ece=metrics.expected_calibration_error(probs, data.y_test),
        seconds=seconds,
        sparsity=None if sparsity is None else float(sparsity),
    )
