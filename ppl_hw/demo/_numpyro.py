"""The demo's NumPyro jobs."""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpyro
from numpyro import handlers
from numpyro.infer import SVI, Predictive, TraceMeanField_ELBO
from numpyro.infer.autoguide import AutoNormal

from .. import coding
from ..datasets import Split
from ..devices import PCM, mtj_noise
from ..numpyro.autoguide import AutoDeviceNoise, AutoDiscreteWeight, AutoMeanKL
from ..numpyro.distributions import EmpiricalNoise, SpikeAndSlab
from ..numpyro.handlers import crossbar
from ..numpyro.infer import PFP_ELBO, SGHMC, SpikeSlabEM
from ..numpyro.models import mlp_classifier, ternary_mlp_classifier
from ._common import (
    CODING_BITS_PER_BLOCK,
    DEMO_KL_BUDGET_BITS,
    DEPLOY_TIMES,
    SGHMC_BATCH,
    SGHMC_STEP_SIZE,
    SPIKE_AND_SLAB,
    TERNARY_KL_WEIGHT,
    TERNARY_METHOD,
    DemoConfig,
    Row,
    coded_row,
    evaluate,
    kl_bits,
    sghmc_em_settings,
    ternary_steps,
    zero_share,
)

__all__ = ["JOBS"]


def _predict(model, guide, params, data: Split, cfg: DemoConfig, key):
    predictive = Predictive(
        model,
        guide=guide,
        params=params,
        num_samples=cfg.num_samples,
        return_sites=["logits"],
    )
    logits = predictive(key, jnp.asarray(data.x_test))["logits"]
    return jax.block_until_ready(jax.nn.softmax(logits, axis=-1).mean(axis=0))


def _predict_fixed(model, weights, data: Split, key):
    """Class probabilities of the one network with every latent site fixed."""
    deployed = handlers.seed(handlers.substitute(model, data=weights), key)
    tr = handlers.trace(deployed).get_trace(jnp.asarray(data.x_test))
    return jax.block_until_ready(jax.nn.softmax(tr["logits"]["value"], axis=-1))


def _fit_predict(model, data: Split, cfg: DemoConfig, guide=None):
    guide = AutoNormal(model) if guide is None else guide
    svi = SVI(
        model, guide, numpyro.optim.Adam(cfg.learning_rate), TraceMeanField_ELBO()
    )
    key_train, key_pred = jax.random.split(jax.random.PRNGKey(cfg.seed))
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    result = svi.run(key_train, cfg.steps, x, y, progress_bar=cfg.progress)
    probs = _predict(model, guide, result.params, data, cfg, key_pred)
    return guide, result.params, probs


def autonormal(data: Split, cfg: DemoConfig) -> list[Row]:
    """AutoNormal, then the same posterior deployed on a PCM crossbar."""
    start = time.perf_counter()
    guide, params, probs = _fit_predict(mlp_classifier, data, cfg)
    seconds = time.perf_counter() - start
    kl = kl_bits(_loc_scale(params))
    rows = [evaluate("numpyro", "AutoNormal", probs, data, seconds, kl_bits=kl)]
    for label, t in DEPLOY_TIMES.items():
        start = time.perf_counter()
        chip = crossbar(mlp_classifier, device=PCM(), t_inference=t, seed=cfg.seed)
        probs = _predict(
            chip, guide, params, data, cfg, jax.random.PRNGKey(cfg.seed + 1)
        )
        seconds = time.perf_counter() - start
        rows.append(
            evaluate("numpyro", f"AutoNormal on PCM, t = {label}", probs, data, seconds)
        )
    return rows


def spike_and_slab(data: Split, cfg: DemoConfig) -> list[Row]:
    """AutoNormal with spike-and-slab weight priors; sparsity from inclusion
    probabilities at the posterior median."""
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
    seconds = time.perf_counter() - start
    sparsity = float(jnp.mean(incl < 0.5))
    method = "AutoNormal, SpikeAndSlab prior"
    return [evaluate("numpyro", method, probs, data, seconds, sparsity=sparsity)]


def _loc_scale(params: dict) -> list:
    """``(loc, scale)`` per site from ``AutoNormal``-style parameter names."""
    suffix = "_auto_loc"
    return [
        (v, params[k[: -len(suffix)] + "_auto_scale"])
        for k, v in params.items()
        if k.endswith(suffix)
    ]


def meankl(data: Split, cfg: DemoConfig) -> list[Row]:
    """AutoMeanKL at a fixed KL budget; the KL column is recomputed from (mu, sigma).
    Then the guide MIRACLE-coded (one posterior sample in about its KL in bits),
    decoded and evaluated as one network."""
    start = time.perf_counter()
    guide = AutoMeanKL(mlp_classifier, kl_budget_bits=DEMO_KL_BUDGET_BITS)
    _, params, probs = _fit_predict(mlp_classifier, data, cfg, guide)
    seconds = time.perf_counter() - start
    kl = kl_bits(guide.loc_scale(params).values())
    method = f"AutoMeanKL, {DEMO_KL_BUDGET_BITS:,.0f}-bit budget"
    rows = [evaluate("numpyro", method, probs, data, seconds, kl_bits=kl)]

    start = time.perf_counter()
    bits = CODING_BITS_PER_BLOCK[cfg.size]
    compressed = coding.encode(guide, params, bits_per_block=bits, seed=cfg.seed)
    weights = coding.decode(compressed, backend="numpyro")
    probs = _predict_fixed(mlp_classifier, weights, data, jax.random.PRNGKey(cfg.seed))
    seconds = time.perf_counter() - start
    rows.append(coded_row("numpyro", compressed, probs, data, seconds))
    return rows


def device_noise(data: Split, cfg: DemoConfig) -> list[Row]:
    """AutoDeviceNoise with the MTJ noise shape."""
    start = time.perf_counter()
    noise = EmpiricalNoise(mtj_noise(cfg.noise_samples, seed=cfg.seed))
    guide = AutoDeviceNoise(mlp_classifier, noise=noise)
    _, params, probs = _fit_predict(mlp_classifier, data, cfg, guide)
    seconds = time.perf_counter() - start
    kl = kl_bits(_loc_scale(params), float(noise.table.entropy))
    method = "AutoDeviceNoise, MTJ shape"
    return [evaluate("numpyro", method, probs, data, seconds, kl_bits=kl)]


def sghmc(data: Split, cfg: DemoConfig) -> list[Row]:
    """SGHMC with spike-and-slab priors and SpikeSlabEM (posterior E-step, hard
    pruning); sparsity is the share of weights pruned."""
    from numpyro.infer import MCMC

    start = time.perf_counter()
    prior = SpikeAndSlab(*SPIKE_AND_SLAB)
    model = functools.partial(
        mlp_classifier, weight_prior=prior, batch_size=SGHMC_BATCH
    )
    em = SpikeSlabEM(**sghmc_em_settings(data.x_train.shape[0], cfg.steps))
    mcmc = MCMC(
        SGHMC(model, step_size=SGHMC_STEP_SIZE, em=em),
        num_warmup=cfg.steps,
        num_samples=cfg.steps,
        thinning=max(1, cfg.steps // 100),
        progress_bar=cfg.progress,
    )
    key_run, key_pred = jax.random.split(jax.random.PRNGKey(cfg.seed))
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    mcmc.run(key_run, x, y, extra_fields=("sparsity",))
    full = functools.partial(mlp_classifier, weight_prior=prior)
    predictive = Predictive(
        full, posterior_samples=mcmc.get_samples(), return_sites=["logits"]
    )
    logits = predictive(key_pred, jnp.asarray(data.x_test))["logits"]
    probs = jax.nn.softmax(logits, axis=-1).mean(axis=0)
    sparsity = float(mcmc.get_extra_fields()["sparsity"][-1])
    seconds = time.perf_counter() - start
    method = "SGHMC + SpikeSlabEM"
    return [evaluate("numpyro", method, probs, data, seconds, sparsity=sparsity)]


def ternary(data: Split, cfg: DemoConfig) -> list[Row]:
    """``ternary_mlp_classifier`` (DiscreteWeight priors, p0 = 0.5, sign activations,
    batch norm) with AutoDiscreteWeight and PFP_ELBO, full batch; the most probable
    network is evaluated, sparsity is its share of zero weights."""
    start = time.perf_counter()
    model = ternary_mlp_classifier
    guide = AutoDiscreteWeight(model, seed=cfg.seed)
    svi = SVI(
        model,
        guide,
        numpyro.optim.Adam(cfg.learning_rate),
        PFP_ELBO(kl_weight=TERNARY_KL_WEIGHT),
    )
    key_train, key_pred = jax.random.split(jax.random.PRNGKey(cfg.seed))
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    steps = ternary_steps(cfg.steps)
    params = svi.run(key_train, steps, x, y, progress_bar=cfg.progress).params
    weights = guide.most_probable(params)
    probs = _predict_fixed(model, weights, data, key_pred)
    seconds = time.perf_counter() - start
    shares = guide.sparsity(params)
    sparsity = zero_share(shares, {k: weights[k].size for k in shares})
    return [
        evaluate(
            "numpyro",
            TERNARY_METHOD,
            probs,
            data,
            seconds,
            sparsity=sparsity,
            bits_per_weight=guide.bits_per_weight(),
        )
    ]


JOBS = [autonormal, spike_and_slab, meankl, device_noise, sghmc, ternary]
