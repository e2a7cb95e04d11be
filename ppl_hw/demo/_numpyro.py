"""The demo's NumPyro jobs."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpyro
from numpyro.infer import SVI, Predictive, TraceMeanField_ELBO
from numpyro.infer.autoguide import AutoNormal

from ..datasets import Split
from ..numpyro.distributions import SpikeAndSlab
from ..numpyro.models import mlp_classifier
from ._common import SPIKE_AND_SLAB, DemoConfig, Row, evaluate

__all__ = ["JOBS"]


def _fit_predict(model, data: Split, cfg: DemoConfig):
    guide = AutoNormal(model)
    svi = SVI(
        model, guide, numpyro.optim.Adam(cfg.learning_rate), TraceMeanField_ELBO()
    )
    key_train, key_pred = jax.random.split(jax.random.PRNGKey(cfg.seed))
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    result = svi.run(key_train, cfg.steps, x, y, progress_bar=cfg.progress)
    predictive = Predictive(
        model,
        guide=guide,
        params=result.params,
        num_samples=cfg.num_samples,
        return_sites=["logits"],
    )
    logits = predictive(key_pred, jnp.asarray(data.x_test))["logits"]
    probs = jax.block_until_ready(jax.nn.softmax(logits, axis=-1).mean(axis=0))
    return guide, result.params, probs


def autonormal(data: Split, cfg: DemoConfig) -> Row:
    start = time.perf_counter()
    _, _, probs = _fit_predict(mlp_classifier, data, cfg)
    return evaluate("numpyro", "AutoNormal", probs, data, time.perf_counter() - start)


def spike_and_slab(data: Split, cfg: DemoConfig) -> Row:
    start = time.perf_counter()
    prior = SpikeAndSlab(*SPIKE_AND_SLAB)
    model = functools.partial(mlp_classifier, weight_prior=prior)
    guide, params, probs = _fit_predict(model, data, cfg)
    median = guide.median(params)
    incl = jnp.concatenate(
        [
            prior.inclusion_prob(w).ravel()
            for k, w in median.items()
            if k.startswith("w")
        ]
    )
    return evaluate(
        "numpyro",
        "AutoNormal, SpikeAndSlab prior",
        probs,
        data,
        time.perf_counter() - start,
        sparsity=float(jnp.mean(incl < 0.5)),
    )


JOBS = [autonormal, spike_and_slab]
