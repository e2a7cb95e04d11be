"""The demo's Pyro jobs."""

from __future__ import annotations

import functools
import operator
import time

import pyro
import torch
from pyro import poutine
from pyro.infer import SVI, Predictive, TraceMeanField_ELBO
from pyro.infer.autoguide import AutoNormal, init_to_uniform
from tqdm.auto import trange

from .. import coding
from ..datasets import Split
from ..devices import mtj_noise
from ..pyro.autoguide import AutoDeviceNoise, AutoDiscreteWeight, AutoMeanKL
from ..pyro.deploy import deployment_sweep
from ..pyro.distributions import EmpiricalNoise, SpikeAndSlab
from ..pyro.infer import PFP_ELBO, SGHMC, SpikeSlabEM
from ..pyro.models import mlp_classifier, ternary_mlp_classifier
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

_deploy = functools.partial(deploy, "pyro", deployment_sweep, mlp_classifier)
"""The off-chip and the deployed rows of a posterior trained on the MLP (see
:func:`~ppl_hw.demo._common.deploy`)."""


def _one_thread(job):
    """Run ``job`` with one PyTorch intra-op thread (restored after), as
    ``tests/conftest.py`` under xdist and the benchmarks do. On idle cores a second
    thread gains nothing on the 64-64-10 MLP and ~1.6x on the ternary network's
    256-wide layers; but with any other busy process on the 2 cores, PyTorch's
    threads spin against it and every step runs many times slower (measured: 2 000
    ``AutoNormal`` steps took 527 s with two threads at a load average of ~8, 16 s
    with one at ~3)."""

    @functools.wraps(job)
    def wrapper(data: Split, cfg: DemoConfig) -> list[Row]:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            return job(data, cfg)
        finally:
            torch.set_num_threads(threads)

    return wrapper


def _predict(model, guide, data: Split, cfg: DemoConfig):
    """Posterior predictive class probabilities, from a fixed seed."""
    pyro.set_rng_seed(cfg.seed + 1)
    predictive = Predictive(
        model, guide=guide, num_samples=cfg.num_samples, return_sites=["logits"]
    )
    with torch.no_grad():
        logits = predictive(torch.as_tensor(data.x_test))["logits"]
        return torch.softmax(logits, dim=-1).mean(dim=0).numpy()


@torch.no_grad()
def _predict_fixed(model, weights, data: Split):
    """Class probabilities of the one network with every latent site given."""
    tr = poutine.trace(poutine.condition(model, data=weights)).get_trace(
        torch.as_tensor(data.x_test)
    )
    return torch.softmax(tr.nodes["logits"]["value"], dim=-1).numpy()


def _train(
    model, guide, loss, data: Split, cfg: DemoConfig, desc: str, steps: int = 0
) -> None:
    """``steps`` (default ``cfg.steps``) full-batch SVI steps with Adam (the caller
    cleared the param store and seeded Pyro before building the guide)."""
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": cfg.learning_rate}), loss)
    bar = trange(steps or cfg.steps, disable=not cfg.progress, desc=f"pyro {desc}")
    for step in bar:
        value = svi.step(x, y)
        if step % 100 == 0:
            bar.set_postfix(loss=f"{value:.4g}")


def _fit(model, data: Split, cfg: DemoConfig, desc: str, make_guide=None):
    pyro.clear_param_store()
    pyro.set_rng_seed(cfg.seed)
    # NumPyro's default initialisation (Pyro's, init_to_feasible, starts every weight
    # at 0, inside the spike of a spike-and-slab prior, where it stays); ppl_hw's
    # guides default to init_to_uniform already
    if make_guide is None:
        guide = AutoNormal(model, init_loc_fn=init_to_uniform)
    else:
        guide = make_guide(model)
    _train(model, guide, TraceMeanField_ELBO(), data, cfg, desc)
    return guide


def autonormal(data: Split, cfg: DemoConfig) -> list[Row]:
    """AutoNormal, then the same posterior deployed on crossbars."""
    start = time.perf_counter()
    guide = _fit(mlp_classifier, data, cfg, "AutoNormal")
    kl = kl_bits(_loc_scale(guide))
    offchip, deployed = _deploy(guide, "AutoNormal", data, cfg, start, kl)
    return [offchip, *deployed]


def spike_and_slab(data: Split, cfg: DemoConfig) -> list[Row]:
    """AutoNormal with spike-and-slab weight priors; sparsity from inclusion
    probabilities at the posterior median."""
    start = time.perf_counter()
    prior = SpikeAndSlab(*SPIKE_AND_SLAB)
    model = functools.partial(mlp_classifier, weight_prior=prior)
    guide = _fit(model, data, cfg, "SpikeAndSlab prior")
    probs = _predict(model, guide, data, cfg)
    with torch.no_grad():
        median = guide.median()
        incl = torch.cat(
            [
                prior.inclusion_prob(w).reshape(-1)
                for k, w in median.items()
                if k.startswith("w")
            ]
        )
    seconds = time.perf_counter() - start
    sparsity = float((incl < 0.5).double().mean())
    method = "AutoNormal, SpikeAndSlab prior"
    return [evaluate("pyro", method, probs, data, seconds, sparsity=sparsity)]


@torch.no_grad()
def _loc_scale(guide) -> list:
    """``(loc, scale)`` per site of a guide with ``locs`` / ``scales`` modules."""
    names = [name for name, _ in guide.prototype_trace.iter_stochastic_nodes()]
    return [
        tuple(
            operator.attrgetter(name)(m).detach().numpy()
            for m in (guide.locs, guide.scales)
        )
        for name in names
    ]


def meankl(data: Split, cfg: DemoConfig) -> list[Row]:
    """AutoMeanKL at a fixed KL budget split over MIRACLE's coding blocks (every
    block's KL fixed by construction); the KL column is recomputed from (mu, sigma).
    Then the guide MIRACLE-coded with the guide's blocks, decoded and evaluated as one
    network; then the posterior deployed on crossbars."""
    start = time.perf_counter()
    bits = CODING_BITS_PER_BLOCK[cfg.size]

    def make(model):
        return AutoMeanKL(
            model,
            kl_budget_bits=DEMO_KL_BUDGET_BITS,
            budget_split="blocks",
            bits_per_block=bits,
            block_seed=cfg.seed,
        )

    guide = _fit(mlp_classifier, data, cfg, "AutoMeanKL", make)
    trained = time.perf_counter()

    # MIRACLE-coded: one posterior sample in about its KL in bits (bits per block and
    # seed from the guide's blocks), decoded and evaluated as one network
    compressed = coding.encode(guide, bits_per_block=bits + CODING_MARGIN_BITS)
    weights = coding.decode(compressed, backend="pyro")
    probs = _predict_fixed(mlp_classifier, weights, data)
    coding_seconds = time.perf_counter() - trained
    coded = coded_row("pyro", bits, compressed, probs, data, coding_seconds)

    kl = kl_bits((a.numpy(), b.numpy()) for a, b in guide.loc_scale().values())
    method = meankl_method(bits)
    # the off-chip row's time: the training and its evaluation, not the coding
    offchip, deployed = _deploy(guide, method, data, cfg, start + coding_seconds, kl)
    return [offchip, coded, *deployed]


def device_noise(data: Split, cfg: DemoConfig) -> list[Row]:
    """AutoDeviceNoise with the MTJ noise shape, then deployed on crossbars."""
    start = time.perf_counter()
    noise = EmpiricalNoise(mtj_noise(cfg.noise_samples, seed=cfg.seed))

    def make(model):
        return AutoDeviceNoise(model, noise=noise)

    guide = _fit(mlp_classifier, data, cfg, "AutoDeviceNoise", make)
    kl = kl_bits(_loc_scale(guide), float(noise.table.entropy))
    method = "AutoDeviceNoise, MTJ shape"
    offchip, deployed = _deploy(guide, method, data, cfg, start, kl)
    return [offchip, *deployed]


def sghmc(data: Split, cfg: DemoConfig) -> list[Row]:
    """SGHMC with spike-and-slab priors and SpikeSlabEM (posterior E-step, hard
    pruning); sparsity is the share of weights pruned."""
    from pyro.infer import MCMC

    start = time.perf_counter()
    pyro.set_rng_seed(cfg.seed)
    prior = SpikeAndSlab(*SPIKE_AND_SLAB)
    model = functools.partial(
        mlp_classifier, weight_prior=prior, batch_size=SGHMC_BATCH
    )
    em = SpikeSlabEM(**sghmc_em_settings(data.x_train.shape[0], cfg.steps))
    kernel = SGHMC(
        model, step_size=SGHMC_STEP_SIZE, temperature=SGHMC_TEMPERATURE, em=em
    )
    mcmc = MCMC(
        kernel,
        num_samples=cfg.steps,
        warmup_steps=cfg.steps,
        disable_progbar=not cfg.progress,
    )
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    mcmc.run(x, y)
    thin = max(1, cfg.steps // 100)
    samples = {k: v[::thin] for k, v in mcmc.get_samples().items()}
    full = functools.partial(mlp_classifier, weight_prior=prior)
    with torch.no_grad():
        predictive = Predictive(
            full, posterior_samples=samples, return_sites=["logits"]
        )
        logits = predictive(torch.as_tensor(data.x_test))["logits"]
        probs = torch.softmax(logits, -1).mean(0).numpy()
    seconds = time.perf_counter() - start
    method = sghmc_method(SGHMC_TEMPERATURE)
    return [evaluate("pyro", method, probs, data, seconds, sparsity=kernel.sparsity)]


def ternary(data: Split, cfg: DemoConfig) -> list[Row]:
    """``ternary_mlp_classifier`` (DiscreteWeight priors, p0 = 0.5, sign activations,
    batch norm) with AutoDiscreteWeight and PFP_ELBO, full batch; the most probable
    network is evaluated, sparsity is its share of zero weights."""
    start = time.perf_counter()
    pyro.clear_param_store()
    pyro.set_rng_seed(cfg.seed)
    model = ternary_mlp_classifier
    guide = AutoDiscreteWeight(model, seed=cfg.seed)
    loss = PFP_ELBO(kl_weight=TERNARY_KL_WEIGHT)
    _train(
        model, guide, loss, data, cfg, "AutoDiscreteWeight", ternary_steps(cfg.steps)
    )
    weights = guide.most_probable()
    probs = _predict_fixed(model, weights, data)
    seconds = time.perf_counter() - start
    shares = guide.sparsity()
    sparsity = zero_share(shares, {k: weights[k].numel() for k in shares})
    return [
        evaluate(
            "pyro",
            TERNARY_METHOD,
            probs,
            data,
            seconds,
            sparsity=sparsity,
            bits_per_weight=guide.bits_per_weight(),
        )
    ]


JOBS = [
    _one_thread(job)
    for job in (autonormal, spike_and_slab, meankl, device_noise, sghmc, ternary)
]
