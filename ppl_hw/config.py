"""Frozen, validated configurations: :class:`~ppl_hw.core.device.Device` and its
option lists, re-exported from the core (where the crossbar maths reads them), so
that ``from ppl_hw.config import Device`` keeps working."""

from .core.device import (
    DRIFT_MODELS,
    MAPPINGS,
    PROGRAMMING_MODELS,
    READ_NOISE_MODELS,
    Device,
)

__all__ = [
    "DRIFT_MODELS",
    "MAPPINGS",
    "PROGRAMMING_MODELS",
    "READ_NOISE_MODELS",
    "Device",
]
