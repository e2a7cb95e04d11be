"""Which latent sites each site depends on, by NumPyro's own provenance tracking
(:func:`numpyro.ops.provenance.eval_provenance`: abstract evaluation, no array
computation). Used by the crossbar handler (which sites are weights) and by
``AutoMeanKL`` (which Normal priors are fixed)."""

from __future__ import annotations

from typing import Any

import numpyro

__all__ = ["dependencies"]


def dependencies(fn: Any, args: tuple, kwargs: dict, tr: dict) -> dict[str, frozenset]:
    """Per site of the trace ``tr`` of ``fn(*args, **kwargs)`` (sample: its log
    density; deterministic: its value), the latent sites it depends on. Raises
    whatever the abstract evaluation raises when the model cannot be traced
    abstractly (the callers say what they fall back to)."""
    from numpyro.ops.provenance import eval_provenance

    samples = {
        n: s["value"]
        for n, s in tr.items()
        if s["type"] == "sample" and not s["is_observed"]
    }

    def outputs(**sample: Any) -> dict:
        with (
            numpyro.handlers.trace() as t2,
            numpyro.handlers.seed(rng_seed=0),
            numpyro.handlers.substitute(data=sample),
        ):
            fn(*args, **kwargs)
        out = {}
        for n, s in t2.items():
            if s["type"] == "sample":
                out[n] = s["fn"].log_prob(s["value"])
            elif s["type"] == "deterministic":
                out[n] = s["value"]
        return out

    with numpyro.handlers.block():
        prov = eval_provenance(outputs, **samples)
    return {n: frozenset(p) for n, p in prov.items()}
