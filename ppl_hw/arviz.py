"""ArviZ helpers: :func:`from_guide` turns a trained guide into ``InferenceData``.

``az.from_numpyro`` / ``az.from_pyro`` read MCMC objects; variational guides need
this helper. It works for any NumPyro or Pyro guide (ppl_hw's or the hosts').
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["from_guide"]


def _is_pyro_guide(guide: Any) -> bool:
    return any(c.__module__.startswith("pyro.") for c in type(guide).__mro__) or type(
        guide
    ).__module__.startswith("ppl_hw.pyro")


def from_guide(
    model: Any,
    guide: Any,
    *args: Any,
    num_samples: int = 1000,
    rng_key: Any = None,
    **kwargs: Any,
) -> Any:
    """``arviz.InferenceData`` of a guide's posterior: groups ``posterior`` (guide
    samples of the model's latent sites), ``posterior_predictive`` (the observed
    sites, resampled under each posterior draw), ``log_likelihood`` (pointwise, for
    ``az.loo`` / ``az.waic``) and ``observed_data``; one chain.

    NumPyro: ``from_guide(model, guide, params, *args, num_samples=..., rng_key=...,
    **kwargs)``. Pyro: ``from_guide(model, guide, *args, num_samples=..., **kwargs)``
    (no ``params``: the param store; randomness from ``pyro.set_rng_seed``).

    :param model: the model.
    :param guide: its trained guide.
    :param args: (NumPyro: ``params`` first, then) the model's arguments, including
        the observed data.
    :param num_samples: posterior draws.
    :param rng_key: a JAX key (NumPyro; default ``PRNGKey(0)``).
    :param kwargs: the model's keyword arguments.
    """
    if (
        isinstance(num_samples, bool)
        or not isinstance(num_samples, int)
        or num_samples < 1
    ):
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if _is_pyro_guide(guide):
        if rng_key is not None:
            raise TypeError(
                "rng_key is for NumPyro guides; Pyro uses pyro.set_rng_seed"
            )
        groups = _pyro_groups(model, guide, args, kwargs, num_samples)
    else:
        if not args or not isinstance(args[0], dict):
            got = type(args[0]).__name__ if args else "nothing"
            raise TypeError(
                "for a NumPyro guide, from_guide(model, guide, params, *args): params "
                f"must be the dict of trained parameters, got {got}"
            )
        groups = _numpyro_groups(
            model, guide, args[0], args[1:], kwargs, num_samples, rng_key
        )
    import arviz as az

    return az.from_dict(**groups)


def _with_chain(d: dict) -> dict:
    return {k: np.asarray(v)[None] for k, v in d.items()}


def _numpyro_groups(model, guide, params, args, kwargs, num_samples, rng_key) -> dict:
    import jax
    from numpyro import handlers
    from numpyro.infer import Predictive
    from numpyro.infer.util import log_likelihood

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
        "posterior": _with_chain(post),
        "posterior_predictive": _with_chain(pred),
        "log_likelihood": _with_chain(loglik),
        "observed_data": {k: np.asarray(v) for k, v in observed.items()},
    }


def _pyro_groups(model, guide, args, kwargs, num_samples) -> dict:
    import torch
    from pyro import poutine
    from pyro.poutine.util import site_is_subsample

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
        "posterior": _with_chain(stack(post)),
        "posterior_predictive": _with_chain(stack(pred)),
        "log_likelihood": _with_chain(stack(loglik)),
        "observed_data": {k: v.numpy() for k, v in observed.items()},
    }
