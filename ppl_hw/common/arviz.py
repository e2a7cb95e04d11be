"""The common layer of :mod:`ppl_hw.arviz`: the registry the adapters fill
(``numpyro/arviz.py``, ``pyro/arviz.py``) with a function that returns the
``InferenceData`` groups of a trained guide, and the array helper both use."""

from __future__ import annotations

import numpy as np

from .registry import Registry

__all__ = ["GROUPS", "with_chain"]

#: guide class (or backend name, for guides that are plain functions) ->
#: ``groups(model, guide, args, kwargs, num_samples, rng_key) -> dict`` of the
#: ``posterior``, ``posterior_predictive``, ``log_likelihood`` and ``observed_data``
#: groups (NumPy arrays; the first three with a leading chain axis)
GROUPS = Registry("InferenceData converter")


def with_chain(d: dict) -> dict:
    """NumPy arrays with a leading chain axis of one."""
    return {k: np.asarray(v)[None] for k, v in d.items()}
