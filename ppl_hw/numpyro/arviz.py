"""NumPyro host glue of :func:`ppl_hw.arviz.from_guide` and
:func:`ppl_hw.arviz.from_mcmc` (registered with :mod:`ppl_hw.common.arviz` on
import): the posterior, predictive and pointwise log likelihood of a trained NumPyro
guide, through NumPyro's ``Predictive`` and ``log_likelihood``; an MCMC run through
ArviZ's own ``from_numpyro``."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np
from numpyro import handlers
from numpyro.infer import MCMC, Predictive
from numpyro.infer.autoguide import AutoGuide
from numpyro.infer.util import log_likelihood

from ..common.arviz import (
    GROUPS,
    MCMC_CONVERTERS,
    arviz_major,
    to_arviz,
    with_chain,
)

__all__: list[str] = []


@MCMC_CONVERTERS.register(MCMC)
def _from_mcmc(
    mcmc: MCMC, *, log_likelihood: bool, coords: dict | None, dims: dict | None
) -> Any:
    if getattr(mcmc, "_states", None) is None:
        raise ValueError("mcmc has not been run: call mcmc.run(...) first")
    import arviz as az

    if arviz_major() >= 1 and any("/" in k for k in mcmc.get_samples()):
        # ArviZ 1.x's from_numpyro fails on '/' in site names (xarray's DataTree
        # refuses them; flax's random_flax_module names its sites net/Dense_0...):
        # the same groups built here, and to_arviz renames '/' to '.'
        return to_arviz(_mcmc_groups(mcmc, log_likelihood), coords=coords, dims=dims)
    # both lines have from_numpyro; their log_likelihood defaults differ
    return az.from_numpyro(
        mcmc, log_likelihood=log_likelihood, coords=coords, dims=dims
    )


def _mcmc_groups(mcmc: MCMC, with_log_likelihood: bool) -> dict:
    """The groups ArviZ's ``from_numpyro`` makes of a run, as NumPy arrays: the
    posterior (every sample and deterministic site, ``(chain, draw, ...)``),
    ``sample_stats`` (``diverging`` where the kernel records it), the pointwise log
    likelihood of each observed site (NumPyro's ``log_likelihood`` at every draw,
    the model called with the run's arguments) and the observed data."""
    samples = mcmc.get_samples(group_by_chain=True)
    chains, draws = next(iter(samples.values())).shape[:2]
    groups: dict = {"posterior": {k: np.asarray(v) for k, v in samples.items()}}
    extra = mcmc.get_extra_fields(group_by_chain=True)
    if "diverging" in extra:
        groups["sample_stats"] = {"diverging": np.asarray(extra["diverging"])}
    model = mcmc.sampler.model
    args, kwargs = mcmc._args, mcmc._kwargs
    flat = {k: v.reshape((chains * draws, *v.shape[2:])) for k, v in samples.items()}
    first = {k: v[0] for k, v in flat.items()}
    trace = handlers.trace(
        handlers.seed(handlers.substitute(model, data=first), 0)
    ).get_trace(*args, **kwargs)
    observed = {
        n: np.asarray(s["value"])
        for n, s in trace.items()
        if s["type"] == "sample" and s["is_observed"]
    }
    if with_log_likelihood and observed:
        loglik = log_likelihood(model, flat, *args, **kwargs)
        groups["log_likelihood"] = {
            k: np.asarray(v).reshape((chains, draws, *np.shape(v)[1:]))
            for k, v in loglik.items()
        }
    if observed:
        groups["observed_data"] = observed
    return groups


@GROUPS.register(AutoGuide)
@GROUPS.register("numpyro")
def _groups(
    model: Any,
    guide: Any,
    args: tuple,
    kwargs: dict,
    num_samples: int,
    rng_key: Any,
) -> dict:
    if not args or not isinstance(args[0], dict):
        got = type(args[0]).__name__ if args else "nothing"
        raise TypeError(
            "for a NumPyro guide, from_guide(model, guide, params, *args): params "
            f"must be the dict of trained parameters, got {got}"
        )
    params, args = args[0], args[1:]
    key = jax.random.PRNGKey(0) if rng_key is None else rng_key
    k_post, k_pred = jax.random.split(key)
    # the model's own numpyro.param sites take their trained values, as the guide's
    model = handlers.substitute(model, data=params)
    trace = handlers.trace(handlers.seed(model, 0)).get_trace(*args, **kwargs)
    latent = [
        n for n, s in trace.items() if s["type"] == "sample" and not s["is_observed"]
    ]
    observed = {
        n: s["value"]
        for n, s in trace.items()
        if s["type"] == "sample" and s["is_observed"]
    }
    # every parameter the guide (and the model) declares must be among the trained
    # ones: a missing or misspelt name would silently take its initial value
    guide_trace = handlers.trace(
        handlers.seed(handlers.substitute(guide, data=params), 0)
    ).get_trace(*args, **kwargs)
    declared = {n for n, s in guide_trace.items() if s["type"] == "param"}
    declared |= {n for n, s in trace.items() if s["type"] == "param"}
    missing = sorted(n for n in declared if n not in params)
    unknown = sorted(n for n in params if n not in declared)
    if missing or unknown:
        raise ValueError(
            "params must be the trained parameters of this guide "
            "(svi_result.params or svi.get_params(state)): "
            + (f"missing {missing}" if missing else "")
            + ("; " if missing and unknown else "")
            + (f"unknown {unknown}" if unknown else "")
            + f" (the guide declares {sorted(declared)})"
        )
    post = Predictive(guide, params=params, num_samples=num_samples)(
        k_post, *args, **kwargs
    )
    post = {k: v for k, v in post.items() if k in latent}

    def predict(key, sample):
        tr = handlers.trace(
            handlers.seed(handlers.substitute(model, data=sample), key)
        ).get_trace(*args, **kwargs)
        return {
            n: tr[n]["fn"].sample(jax.random.fold_in(key, i))
            for i, n in enumerate(observed)
        }

    keys = jax.random.split(k_pred, num_samples)
    pred = jax.vmap(predict)(keys, post)
    loglik = log_likelihood(model, post, *args, **kwargs)
    return {
        "posterior": with_chain(post),
        "posterior_predictive": with_chain(pred),
        "log_likelihood": with_chain(loglik),
        "observed_data": {k: np.asarray(v) for k, v in observed.items()},
    }
