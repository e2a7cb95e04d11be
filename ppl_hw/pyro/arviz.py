"""Pyro host glue of :func:`ppl_hw.arviz.from_guide` and
:func:`ppl_hw.arviz.from_mcmc` (registered with :mod:`ppl_hw.common.arviz` on
import): the posterior, predictive and pointwise log likelihood of a trained Pyro
guide, by tracing the guide and replaying the model; the groups of a Pyro MCMC run
with the semantics of ArviZ 0.x's ``from_pyro`` (which ArviZ 1.x lacks), handed to
:func:`ppl_hw.common.arviz.to_arviz` for the installed ArviZ line."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from pyro import poutine
from pyro.infer import MCMC, Predictive
from pyro.nn import PyroModule
from pyro.poutine.util import site_is_subsample

from ..common.arviz import GROUPS, MCMC_CONVERTERS, to_arviz, with_chain

__all__: list[str] = []


def _observed_sites(trace: Any) -> list[str]:
    return [
        n
        for n, s in trace.nodes.items()
        if s["type"] == "sample"
        and s["is_observed"]
        and not s["infer"].get("_deterministic")
    ]


def _mcmc_groups(mcmc: MCMC, log_likelihood: bool) -> dict:
    """``{group: {variable: array}}`` of a finished Pyro MCMC run (see
    :func:`ppl_hw.arviz.from_mcmc`)."""
    if getattr(mcmc, "_samples", None) is None:
        raise ValueError("mcmc has not been run: call mcmc.run(...) first")
    chains, draws = mcmc.num_chains, mcmc.num_samples
    samples = mcmc.get_samples(group_by_chain=True)
    groups: dict[str, dict] = {
        "posterior": {k: v.detach().cpu().numpy() for k, v in samples.items()}
    }
    # diverging, as from_pyro: the divergences (draw indices) each chain's kernel
    # reported, read without MCMC.diagnostics(), which also computes every site's
    # ESS over all draws (memory quadratic in the number of draws)
    diverging = np.zeros((chains, draws), dtype=bool)
    for i, diag in enumerate(mcmc._diagnostics):
        diverging[i, list((diag or {}).get("divergences", []))] = True
    groups["sample_stats"] = {"diverging": diverging}
    model = mcmc.kernel.model
    if model is None:  # e.g. SGHMC on a subsampled plate: no full-data model
        return groups
    args, kwargs = mcmc._args, mcmc._kwargs
    with torch.no_grad():
        trace = poutine.trace(model).get_trace(*args, **kwargs)
        observed = _observed_sites(trace)
        if not observed:
            return groups
        groups["observed_data"] = {
            n: trace.nodes[n]["value"].detach().cpu().numpy() for n in observed
        }
        if log_likelihood:
            trace.compute_log_prob()
            shapes = {n: tuple(trace.nodes[n]["log_prob"].shape) for n in observed}
            flat = mcmc.get_samples(group_by_chain=False)
            groups["log_likelihood"] = {
                n: v.reshape((chains, draws, *v.shape[1:]))
                for n, v in _pointwise(model, flat, args, kwargs, shapes).items()
            }
    return groups


def _pointwise(model: Any, flat: dict, args: tuple, kwargs: dict, shapes: dict) -> dict:
    """Log likelihood of each observed site at each draw, ``(draws,) + shape``: one
    vectorized trace as ``from_pyro`` computes it, or one trace per draw when the
    model does not vectorize (an error, or a log likelihood of the wrong shape)."""
    num = len(next(iter(flat.values())))
    try:
        vtrace = Predictive(model, flat).get_vectorized_trace(*args, **kwargs)
        out = {}
        for n, shape in shapes.items():
            site = vtrace.nodes[n]
            out[n] = site["fn"].log_prob(site["value"]).detach().cpu().numpy()
            if out[n].shape != (num, *shape):
                raise ValueError(f"{n!r}: vectorized shape {out[n].shape}")
        return out
    except Exception:  # the model does not vectorize: replay it at each draw
        pass
    per_draw: dict[str, list] = {n: [] for n in shapes}
    for i in range(num):
        draw = {k: v[i] for k, v in flat.items()}
        tr = poutine.trace(poutine.condition(model, data=draw)).get_trace(
            *args, **kwargs
        )
        for n in shapes:
            site = tr.nodes[n]
            per_draw[n].append(site["fn"].log_prob(site["value"]).detach().cpu())
    return {n: torch.stack(v).numpy() for n, v in per_draw.items()}


@MCMC_CONVERTERS.register(MCMC)
def _from_mcmc(
    mcmc: MCMC, *, log_likelihood: bool, coords: dict | None, dims: dict | None
) -> Any:
    return to_arviz(_mcmc_groups(mcmc, log_likelihood), coords=coords, dims=dims)


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
        observed = {n: trace.nodes[n]["value"] for n in _observed_sites(trace)}
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
