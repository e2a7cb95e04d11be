"""The demo's NumPyro jobs."""

from __future__ import annotations

import functools
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
from numpyro import handlers
from numpyro.infer import SVI, TraceMeanField_ELBO
from numpyro.infer.autoguide import AutoNormal
from tqdm.auto import trange

from .. import coding
from ..datasets import Split
from ..devices import mtj_noise
from ..numpyro.autoguide import AutoDeviceNoise, AutoDiscreteWeight, AutoMeanKL
from ..numpyro.deploy import deployment_sweep
from ..numpyro.distributions import EmpiricalNoise, SpikeAndSlab
from ..numpyro.infer import PFP_ELBO, SGHMC, SpikeSlabEM
from ..numpyro.models import mlp_classifier, ternary_mlp_classifier
from ._common import (
    CODING_BITS_PER_BLOCK,
    CODING_MARGIN_BITS,
    DEMO_KL_BUDGET_BITS,
    SGHMC_BATCH,
    SGHMC_STEP_SIZE,
    SGHMC_TEMPERATURE,
    SPIKE_AND_SLAB,
    TERNARY_KL_WEIGHT,
    TERNARY_METHOD,
    DemoConfig,
    Row,
    coded_row,
    deploy,
    evaluate,
    kl_bits,
    meankl_method,
    sghmc_em_settings,
    sghmc_method,
    ternary_steps,
    zero_share,
)

__all__ = ["JOBS"]

_deploy = functools.partial(deploy, "numpyro", deployment_sweep, mlp_classifier)
"""The off-chip and the deployed rows of a posterior trained on the MLP (see
:func:`~ppl_hw.demo._common.deploy`)."""


def _posterior(guide, params, data: Split, cfg: DemoConfig) -> dict:
    """``cfg.num_samples`` draws of the guide's sites, ``vmap``-ed eagerly
    (``Predictive`` would compile the guide at every call)."""
    keys = jax.random.split(_keys(cfg)[0], cfg.num_samples)
    x = jnp.asarray(data.x_test)

    def one(key):
        seeded = handlers.seed(handlers.substitute(guide, data=params), key)
        tr = handlers.trace(seeded).get_trace(x)
        return {
            k: s["value"]
            for k, s in tr.items()
            if s["type"] in ("sample", "deterministic")
        }

    return jax.vmap(one)(keys)


def _latent(model, samples: dict, data: Split) -> dict:
    """The ``samples`` of the model's latent sites (MCMC also returns deterministic
    and observed-site values, which must not be substituted)."""
    x, y = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    tr = handlers.trace(handlers.seed(model, 0)).get_trace(x, y)
    names = {k for k, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}
    return {k: v for k, v in samples.items() if k in names}


def _mean_softmax(model, keys, samples: dict, x, y):
    """The model's class probabilities averaged over the posterior ``samples``, one
    key each (the labels observed: the model computes its logits without sampling
    them)."""

    def one(key, sample):
        seeded = handlers.seed(handlers.substitute(model, data=sample), key)
        tr = handlers.trace(seeded).get_trace(x, y)
        return jax.nn.softmax(tr["logits"]["value"], axis=-1)

    return jax.vmap(one)(keys, samples).mean(axis=0)


def _probs(model, samples: dict, data: Split, cfg: DemoConfig) -> np.ndarray:
    """Posterior predictive class probabilities of ``model`` over the posterior
    ``samples``, eagerly (``Predictive`` would compile the model at every call)."""
    num = jax.tree_util.tree_leaves(samples)[0].shape[0]
    keys = jax.random.split(_keys(cfg)[1], num)
    x, y = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    return np.asarray(_mean_softmax(model, keys, samples, x, y))


def _predict_fixed(model, weights, data: Split, key):
    """Class probabilities of the one network with every latent site fixed."""
    deployed = handlers.seed(handlers.substitute(model, data=weights), key)
    tr = handlers.trace(deployed).get_trace(jnp.asarray(data.x_test))
    return jax.block_until_ready(jax.nn.softmax(tr["logits"]["value"], axis=-1))


def _keys(cfg: DemoConfig):
    """The keys of the posterior samples and of the model in :func:`_probs`: of the
    ``"rbg"`` implementation, whose normal draws under ``vmap`` compile in a fraction
    of the time of the default threefry's (about a second per shape)."""
    return jax.random.split(jax.random.key(cfg.seed + 1, impl="rbg"))


def _fit(model, data: Split, cfg: DemoConfig, guide=None):
    """SVI with ``TraceMeanField_ELBO``: the guide and its parameters."""
    guide = AutoNormal(model) if guide is None else guide
    svi = SVI(
        model, guide, numpyro.optim.Adam(cfg.learning_rate), TraceMeanField_ELBO()
    )
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    key = jax.random.PRNGKey(cfg.seed)
    params = _run_svi(svi, key, cfg.steps, x, y, cfg, type(guide).__name__)
    return guide, params


def _run_svi(svi, key, steps: int, x, y, cfg: DemoConfig, desc: str) -> dict:
    """``steps`` SVI steps and the trained params. The first step (which compiles)
    runs before the progress bar starts, under a "compiling" line: the bar's rate
    and time left are those of compiled steps (``svi.run``'s bar counts the
    compilation as its first step and shows an ETA of hours)."""
    state = svi.init(key, x, y)
    update = jax.jit(svi.update)
    start = time.perf_counter()
    if cfg.progress:
        print(f"numpyro {desc}: compiling the SVI step ...", file=sys.stderr, end="")
    state, loss = update(state, x, y)
    jax.block_until_ready(loss)
    if cfg.progress:
        print(f" {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    with trange(
        1,
        steps,
        initial=1,
        total=steps,
        disable=not cfg.progress,
        desc=f"numpyro {desc}",
    ) as bar:
        for i in bar:
            state, loss = update(state, x, y)
            if i % 100 == 0:
                bar.set_postfix(loss=f"{float(loss):.4g}")
    if not np.isfinite(float(loss)):
        raise FloatingPointError(f"numpyro {desc}: the SVI loss is {float(loss)}")
    return svi.get_params(state)


def autonormal(data: Split, cfg: DemoConfig) -> list[Row]:
    """AutoNormal, then the same posterior deployed on crossbars."""
    start = time.perf_counter()
    guide, params = _fit(mlp_classifier, data, cfg)
    kl = kl_bits(_loc_scale(params))
    offchip, deployed = _deploy(
        guide, "AutoNormal", data, cfg, start, kl, params=params
    )
    return [offchip, *deployed]


def spike_and_slab(data: Split, cfg: DemoConfig) -> list[Row]:
    """AutoNormal with spike-and-slab weight priors; sparsity from inclusion
    probabilities at the posterior median."""
    start = time.perf_counter()
    prior = SpikeAndSlab(*SPIKE_AND_SLAB)
    model = functools.partial(mlp_classifier, weight_prior=prior)
    guide, params = _fit(model, data, cfg)
    probs = _probs(model, _posterior(guide, params, data, cfg), data, cfg)
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
    """AutoMeanKL at a fixed KL budget split over MIRACLE's coding blocks (every
    block's KL fixed by construction); the KL column is recomputed from (mu, sigma).
    Then the guide MIRACLE-coded with the guide's blocks (one posterior sample in
    about its KL in bits), decoded and evaluated as one network; then the posterior
    deployed on crossbars."""
    start = time.perf_counter()
    bits = CODING_BITS_PER_BLOCK[cfg.size]
    guide = AutoMeanKL(
        mlp_classifier,
        kl_budget_bits=DEMO_KL_BUDGET_BITS,
        budget_split="blocks",
        bits_per_block=bits,
        block_seed=cfg.seed,
    )
    _, params = _fit(mlp_classifier, data, cfg, guide)
    trained = time.perf_counter()

    # bits per block and seed come from the guide's blocks
    compressed = coding.encode(guide, params, bits_per_block=bits + CODING_MARGIN_BITS)
    weights = coding.decode(compressed, backend="numpyro")
    probs = _predict_fixed(mlp_classifier, weights, data, jax.random.PRNGKey(cfg.seed))
    coding_seconds = time.perf_counter() - trained
    coded = coded_row("numpyro", bits, compressed, probs, data, coding_seconds)

    kl = kl_bits(guide.loc_scale(params).values())
    method = meankl_method(bits)
    # the off-chip row's time: the training and its evaluation, not the coding
    offchip, deployed = _deploy(
        guide, method, data, cfg, start + coding_seconds, kl, params=params
    )
    return [offchip, coded, *deployed]


def device_noise(data: Split, cfg: DemoConfig) -> list[Row]:
    """AutoDeviceNoise with the MTJ noise shape, then deployed on crossbars."""
    start = time.perf_counter()
    noise = EmpiricalNoise(mtj_noise(cfg.noise_samples, seed=cfg.seed))
    guide = AutoDeviceNoise(mlp_classifier, noise=noise)
    _, params = _fit(mlp_classifier, data, cfg, guide)
    kl = kl_bits(_loc_scale(params), float(noise.table.entropy))
    method = "AutoDeviceNoise, MTJ shape"
    offchip, deployed = _deploy(guide, method, data, cfg, start, kl, params=params)
    return [offchip, *deployed]


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
        SGHMC(model, step_size=SGHMC_STEP_SIZE, temperature=SGHMC_TEMPERATURE, em=em),
        num_warmup=cfg.steps,
        num_samples=cfg.steps,
        thinning=max(1, cfg.steps // 100),
        # NumPyro's bar counts the compilation as the first step (an ETA of hours):
        # one compiled loop instead, timed on a line of its own
        progress_bar=False,
    )
    key_run = jax.random.PRNGKey(cfg.seed)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    if cfg.progress:
        print(
            f"numpyro SGHMC: {cfg.steps} warm-up + {cfg.steps} sampling steps in one "
            "compiled loop ...",
            file=sys.stderr,
            end="",
            flush=True,
        )
    mcmc.run(key_run, x, y, extra_fields=("sparsity",))
    if cfg.progress:
        print(f" {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    full = functools.partial(mlp_classifier, weight_prior=prior)
    probs = _probs(full, _latent(full, mcmc.get_samples(), data), data, cfg)
    sparsity = float(mcmc.get_extra_fields()["sparsity"][-1])
    seconds = time.perf_counter() - start
    method = sghmc_method(SGHMC_TEMPERATURE)
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
    params = _run_svi(svi, key_train, steps, x, y, cfg, "AutoDiscreteWeight")
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
