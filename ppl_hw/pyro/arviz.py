"""Pyro host glue of :func:`ppl_hw.arviz.from_guide` (registered with
:mod:`ppl_hw.common.arviz` on import): the posterior, predictive and pointwise log
likelihood of a trained Pyro guide, by tracing the guide and replaying the model."""

from __future__ import annotations

from typing import Any

import torch
from pyro import poutine
from pyro.nn import PyroModule
from pyro.poutine.util import site_is_subsample

from ..common.arviz import GROUPS, with_chain

__all__: list[str] = []


@GROUPS.register(PyroModule)
@GROUPS.register("pyro")
def _groups(
    model: Any,
    guide: Any,
    args: tuple,
    kwargs: dict,
    num_samples: int,
    rng_key: Any,
) -> dict:
    if rng_key is not None:
        raise TypeError("rng_key is for NumPyro guides; Pyro uses pyro.set_rng_seed")
    with torch.no_grad():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
        latent = [
            n
            for n, s in trace.nodes.items()
            if s["type"] == "sample"
            and not s["is_observed"]
            and not site_is_subsample(s)
        ]
        observed = {
            n: s["value"]
            for n, s in trace.nodes.items()
            if s["type"] == "sample"
            and s["is_observed"]
            and not s["infer"].get("_deterministic")
        }
        post: dict[str, list] = {n: [] for n in latent}
        pred: dict[str, list] = {n: [] for n in observed}
        loglik: dict[str, list] = {n: [] for n in observed}
        for _ in range(num_samples):
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            tr = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(
                *args, **kwargs
            )
            tr.compute_log_prob()
            for n in latent:
                post[n].append(tr.nodes[n]["value"])
            for n in observed:
                site = tr.nodes[n]
                loglik[n].append(site["log_prob"])
                pred[n].append(site["fn"].sample())

    def stack(d: dict) -> dict:
        return {k: torch.stack(v).numpy() for k, v in d.items()}

    return {
        "posterior": with_chain(stack(post)),
        "posterior_predictive": with_chain(stack(pred)),
        "log_likelihood": with_chain(stack(loglik)),
        "observed_data": {k: v.numpy() for k, v in observed.items()},
    }
