"""Bad inputs to the adapters' public names, on both backends under the same name:
one row per case — the call (given the backend's modules), the exception type, and
words the message must contain (the argument and the value). Nothing may pass
silently (issue "Nothing silent")."""

from __future__ import annotations

import math
import types

import jax.numpy as jnp
import numpy as np
import pytest
import torch

import ppl_hw.numpyro.infer as ninfer
import ppl_hw.numpyro.models as nmodels
import ppl_hw.numpyro.nn as nnn
import ppl_hw.pyro.infer as pinfer
import ppl_hw.pyro.models as pmodels
import ppl_hw.pyro.nn as pnn
from ppl_hw import coding
from ppl_hw.arviz import from_guide
from ppl_hw.devices import PCM, gaussian_noise


def _numpyro():
    import numpyro
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.optim import Adam

    def trace(model, *args, **kw):
        seeded = numpyro.handlers.seed(model, 0)
        return numpyro.handlers.trace(seeded).get_trace(*args, **kw)

    return types.SimpleNamespace(
        nn=nnn,
        infer=ninfer,
        models=nmodels,
        array=jnp.asarray,
        AutoNormal=AutoNormal,
        optim=lambda: Adam(1e-3),
        trace=trace,
    )


def _pyro():
    import pyro
    from pyro.infer.autoguide import AutoNormal
    from pyro.optim import Adam

    def trace(model, *args, **kw):
        return pyro.poutine.trace(model).get_trace(*args, **kw)

    return types.SimpleNamespace(
        nn=pnn,
        infer=pinfer,
        models=pmodels,
        array=lambda a: torch.as_tensor(np.asarray(a)),
        AutoNormal=AutoNormal,
        optim=lambda: Adam({"lr": 1e-3}),
        trace=trace,
    )


BACKENDS = {"numpyro": _numpyro, "pyro": _pyro}
X = np.zeros((6, 3), np.float32)


def _mv(b, **kw):
    model = lambda x: b.models.mlp_classifier(x, hidden=(2,))  # noqa: E731
    return b.infer.MeanVarAnnealing(
        model, b.AutoNormal(model), b.optim(), kl_budget_bits=100.0, **kw
    )


def _noop():
    return None


def _mlp(b, **kw):
    return b.trace(b.models.mlp_classifier, b.array(X), **kw)


CASES = [
    # nn
    (
        "batch_norm batch of one",
        lambda b: b.nn.batch_norm(b.array(np.ones((1, 3)))),
        ValueError,
        ["batch_norm", "at least 2", "(1, 3)"],
    ),
    (
        "batch_norm eps inf",
        lambda b: b.nn.batch_norm(b.array(np.ones((2, 3))), eps=math.inf),
        ValueError,
        ["eps", "inf"],
    ),
    (
        "batch_norm eps negative",
        lambda b: b.nn.batch_norm(b.array(np.ones((2, 3))), eps=-1.0),
        ValueError,
        ["eps", "-1.0"],
    ),
    (
        "dropout p 1",
        lambda b: b.nn.dropout(b.array(np.ones((2, 3))), 1.0),
        ValueError,
        ["p", "1.0"],
    ),
    # PFP_ELBO
    (
        "pfp num_particles 0",
        lambda b: b.infer.PFP_ELBO(num_particles=0),
        ValueError,
        ["num_particles", "0"],
    ),
    (
        "pfp num_particles float",
        lambda b: b.infer.PFP_ELBO(num_particles=2.5),
        TypeError,
        ["num_particles", "2.5"],
    ),
    (
        "pfp kl_weight inf",
        lambda b: b.infer.PFP_ELBO(kl_weight=math.inf),
        ValueError,
        ["kl_weight", "inf"],
    ),
    (
        "pfp output",
        lambda b: b.infer.PFP_ELBO(output="logits"),
        ValueError,
        ["output", "'logits'"],
    ),
    # MeanVarAnnealing
    (
        "meanvar epsilon inf",
        lambda b: _mv(b, epsilon=math.inf),
        ValueError,
        ["epsilon", "inf"],
    ),
    (
        "meanvar epsilon 2",
        lambda b: _mv(b, epsilon=2.0),
        ValueError,
        ["epsilon", "2.0"],
    ),
    (
        "meanvar epsilon 0",
        lambda b: _mv(b, epsilon=0.0),
        ValueError,
        ["epsilon", "0.0"],
    ),
    ("meanvar seed float", lambda b: _mv(b, seed=2.9), TypeError, ["seed", "2.9"]),
    ("meanvar seed negative", lambda b: _mv(b, seed=-1), ValueError, ["seed", "-1"]),
    (
        "meanvar bits_per_block 0",
        lambda b: _mv(b, bits_per_block=0),
        ValueError,
        ["bits_per_block", "0"],
    ),
    (
        "meanvar bits_per_block nan",
        lambda b: _mv(b, bits_per_block=math.nan),
        ValueError,
        ["bits_per_block", "nan"],
    ),
    (
        "meanvar beta_init str",
        lambda b: _mv(b, beta_init="1e-8"),
        TypeError,
        ["beta_init", "'1e-8'"],
    ),
    # SGHMC
    (
        "sghmc step_size inf",
        lambda b: b.infer.SGHMC(_noop, step_size=math.inf),
        ValueError,
        ["step_size", "inf"],
    ),
    (
        "sghmc temperature inf",
        lambda b: b.infer.SGHMC(_noop, step_size=0.1, temperature=math.inf),
        ValueError,
        ["temperature", "inf"],
    ),
    (
        "sghmc rmsprop_beta 1.5",
        lambda b: b.infer.SGHMC(_noop, step_size=0.1, rmsprop_beta=1.5),
        ValueError,
        ["rmsprop_beta", "1.5"],
    ),
    (
        "sghmc rmsprop_beta 1",
        lambda b: b.infer.SGHMC(_noop, step_size=0.1, rmsprop_beta=1.0),
        ValueError,
        ["rmsprop_beta", "1.0"],
    ),
    (
        "ke_fan num_data float",
        lambda b: b.infer.SGHMC.ke_fan(_noop, num_data=2.7),
        TypeError,
        ["num_data", "2.7"],
    ),
    (
        "ke_fan beta2 0",
        lambda b: b.infer.SGHMC.ke_fan(_noop, num_data=100, beta2=0),
        ValueError,
        ["beta2", "0"],
    ),
    # ready-made models
    (
        "mlp prior_scale inf",
        lambda b: _mlp(b, prior_scale=math.inf),
        ValueError,
        ["prior_scale", "inf"],
    ),
    (
        "mlp prior_scale 0",
        lambda b: _mlp(b, prior_scale=0.0),
        ValueError,
        ["prior_scale", "0.0"],
    ),
    (
        "mlp hidden float",
        lambda b: _mlp(b, hidden=(2.5,)),
        TypeError,
        ["hidden[0]", "2.5"],
    ),
    (
        "mlp hidden zero",
        lambda b: _mlp(b, hidden=(4, 0)),
        ValueError,
        ["hidden[1]", "0"],
    ),
    ("mlp hidden int", lambda b: _mlp(b, hidden=3), TypeError, ["hidden", "3"]),
    (
        "mlp num_classes float",
        lambda b: _mlp(b, num_classes=3.0),
        TypeError,
        ["num_classes", "3.0"],
    ),
    (
        "mlp num_classes 1",
        lambda b: _mlp(b, num_classes=1),
        ValueError,
        ["num_classes", "1"],
    ),
    (
        "mlp batch_size float",
        lambda b: _mlp(b, batch_size=2.7),
        TypeError,
        ["batch_size", "2.7"],
    ),
    (
        "mlp batch_size > N",
        lambda b: _mlp(b, batch_size=7),
        ValueError,
        ["batch_size", "7"],
    ),
    (
        "mlp activation",
        lambda b: _mlp(b, activation="gelu"),
        ValueError,
        ["activation", "'gelu'"],
    ),
]


def _modules(prefix):
    import importlib

    def mod(name):
        return importlib.import_module(f"ppl_hw.{prefix}.{name}")

    return types.SimpleNamespace(
        ag=mod("autoguide"),
        d=mod("distributions"),
        h=mod("handlers"),
        dp=mod("deploy"),
        bnn=mod("bnn"),
    )


MODULES = {"numpyro": lambda: _modules("numpyro"), "pyro": lambda: _modules("pyro")}


noise = gaussian_noise(500)


def m(b):
    return lambda x=None: b.models.mlp_classifier(
        b.array(np.zeros((4, 3), np.float32)), hidden=(2,)
    )


def _sweep(b, M, **kw):
    x, y = b.array(np.zeros((4, 3))), b.array(np.zeros(4))
    return M.dp.deployment_sweep(m(b), _noop, x, y, device=PCM(), **kw)


#: guides, distributions, the crossbar handler, devices, sweeps, ArviZ, coding,
#: bayesian(): ``call(b, M)`` with ``M`` the backend's modules
MORE_CASES = [
    (
        "meankl budget nan",
        lambda b, M: M.ag.AutoMeanKL(m(b), kl_budget_bits=math.nan),
        ValueError,
        ["kl_budget_bits", "nan"],
    ),
    (
        "meankl budget negative",
        lambda b, M: M.ag.AutoMeanKL(m(b), kl_budget_bits=-1.0),
        ValueError,
        ["kl_budget_bits", "-1.0"],
    ),
    (
        "meankl budget both",
        lambda b, M: M.ag.AutoMeanKL(m(b), kl_budget_bits=10.0, kl_budget_nats=10.0),
        ValueError,
        ["kl_budget_bits", "kl_budget_nats", "exactly one"],
    ),
    (
        "meankl budget none",
        lambda b, M: M.ag.AutoMeanKL(m(b)),
        ValueError,
        ["kl_budget_bits", "kl_budget_nats", "exactly one"],
    ),
    (
        "meankl budget str",
        lambda b, M: M.ag.AutoMeanKL(m(b), kl_budget_bits="10"),
        TypeError,
        ["kl_budget_bits", "'10'"],
    ),
    (
        "meankl split",
        lambda b, M: M.ag.AutoMeanKL(m(b), kl_budget_bits=10.0, budget_split="blockz"),
        ValueError,
        ["budget_split", "'blockz'"],
    ),
    (
        "meankl bits_per_block 25",
        lambda b, M: M.ag.AutoMeanKL(
            m(b), kl_budget_bits=100.0, budget_split="blocks", bits_per_block=25
        ),
        ValueError,
        ["bits_per_block", "25"],
    ),
    (
        "meankl block_seed negative",
        lambda b, M: M.ag.AutoMeanKL(
            m(b),
            kl_budget_bits=100.0,
            budget_split="blocks",
            bits_per_block=8,
            block_seed=-1,
        ),
        ValueError,
        ["block_seed", "-1"],
    ),
    (
        "meankl init_scale 0",
        lambda b, M: M.ag.AutoMeanKL(m(b), kl_budget_bits=10.0, init_scale=0.0),
        ValueError,
        ["init_scale", "0.0"],
    ),
    (
        "meankl init_scale inf",
        lambda b, M: M.ag.AutoMeanKL(m(b), kl_budget_bits=10.0, init_scale=math.inf),
        ValueError,
        ["init_scale", "inf"],
    ),
    (
        "scaledrop p 1",
        lambda b, M: M.ag.AutoScaleDropout(m(b), p=1.0),
        ValueError,
        ["p must", "1.0"],
    ),
    (
        "scaledrop p negative",
        lambda b, M: M.ag.AutoScaleDropout(m(b), p=-0.1),
        ValueError,
        ["p must", "-0.1"],
    ),
    (
        "scaledrop p str",
        lambda b, M: M.ag.AutoScaleDropout(m(b), p="0.1"),
        TypeError,
        ["p must", "'0.1'"],
    ),
    (
        "scaledrop dropped",
        lambda b, M: M.ag.AutoScaleDropout(m(b), p=0.1, dropped="two"),
        ValueError,
        ["dropped", "'two'"],
    ),
    (
        "devicenoise noise None",
        lambda b, M: M.ag.AutoDeviceNoise(m(b), noise=None),
        TypeError,
        ["noise", "EmpiricalNoise", "NoneType"],
    ),
    (
        "devicenoise init_scale neg",
        lambda b, M: M.ag.AutoDeviceNoise(
            m(b), noise=M.d.EmpiricalNoise(noise), init_scale=-1.0
        ),
        ValueError,
        ["init_scale", "-1.0"],
    ),
    (
        "DeviceNoise scale inf",
        lambda b, M: M.d.DeviceNoise(
            b.array(0.0), b.array(math.inf), M.d.EmpiricalNoise(noise)
        ),
        ValueError,
        ["scale", "inf"],
    ),
    (
        "DeviceNoise noise None",
        lambda b, M: M.d.DeviceNoise(b.array(0.0), b.array(1.0), None),
        TypeError,
        ["noise", "EmpiricalNoise", "NoneType"],
    ),
    (
        "SpikeAndSlab pi 1.5",
        lambda b, M: M.d.SpikeAndSlab(1.5, 0.1, 1.0),
        ValueError,
        ["prob", "1.5"],
    ),
    (
        "SpikeAndSlab scale 0",
        lambda b, M: M.d.SpikeAndSlab(0.5, 0.0, 1.0),
        ValueError,
        ["spike_scale", "0.0"],
    ),
    (
        "SpikeAndSlab scale nan",
        lambda b, M: M.d.SpikeAndSlab(0.5, 0.1, math.nan),
        ValueError,
        ["slab_scale", "nan"],
    ),
    (
        "DiscreteWeight duplicate values",
        lambda b, M: M.d.DiscreteWeight([0.0, 0.0, 1.0], logits=b.array(np.zeros(3))),
        ValueError,
        ["values", "[0.0, 0.0, 1.0]"],
    ),
    (
        "DiscreteWeight values nan",
        lambda b, M: M.d.DiscreteWeight(
            [-1.0, math.nan, 1.0], logits=b.array(np.zeros(3))
        ),
        ValueError,
        ["values", "nan"],
    ),
    (
        "DiscreteWeight logits shape",
        lambda b, M: M.d.DiscreteWeight([-1.0, 0.0, 1.0], logits=b.array(np.zeros(4))),
        ValueError,
        ["logits", "(4,)"],
    ),
    (
        "DiscreteWeight one value",
        lambda b, M: M.d.DiscreteWeight([1.0], logits=b.array(np.zeros(1))),
        ValueError,
        ["values", "[1.0]"],
    ),
    (
        "crossbar device str",
        lambda b, M: M.h.crossbar(device="pcm"),
        TypeError,
        ["device", "str"],
    ),
    (
        "crossbar t_inference negative",
        lambda b, M: M.h.crossbar(device=PCM(), t_inference=-1.0),
        ValueError,
        ["t_inference", "-1.0"],
    ),
    (
        "crossbar t_inference inf",
        lambda b, M: M.h.crossbar(device=PCM(), t_inference=math.inf),
        ValueError,
        ["t_inference", "inf"],
    ),
    (
        "crossbar seed 2**64",
        lambda b, M: M.h.crossbar(device=PCM(), seed=2**64),
        ValueError,
        ["seed", "18446744073709551616"],
    ),
    (
        "crossbar seed float",
        lambda b, M: M.h.crossbar(device=PCM(), seed=1.5),
        TypeError,
        ["seed", "1.5"],
    ),
    (
        "crossbar reprogram",
        lambda b, M: M.h.crossbar(device=PCM(), reprogram="twice"),
        ValueError,
        ["reprogram", "'twice'"],
    ),
    (
        "crossbar sites int key",
        lambda b, M: M.h.crossbar(device=PCM(), sites={1: PCM()}),
        TypeError,
        ["sites", "1"],
    ),
    (
        "PCM gmax negative",
        lambda b, M: PCM(gmax=-1.0),
        ValueError,
        ["gmax", "-1.0"],
    ),
    (
        "PCM levels 1",
        lambda b, M: PCM(levels=1),
        ValueError,
        ["levels", "1"],
    ),
    (
        "PCM drift model",
        lambda b, M: PCM(drift="linear"),
        ValueError,
        ["drift", "'linear'"],
    ),
    (
        "PCM t_read 0",
        lambda b, M: PCM(t_read=0.0),
        ValueError,
        ["t_read", "0.0"],
    ),
    (
        "PCM programming_sigma nan",
        lambda b, M: PCM(programming_sigma=math.nan),
        ValueError,
        ["programming_sigma", "nan"],
    ),
    (
        "sweep chips 0",
        lambda b, M: _sweep(b, M, times=[0.0], chips=0),
        ValueError,
        ["chips", "0"],
    ),
    (
        "sweep times negative",
        lambda b, M: _sweep(b, M, times=[-1.0]),
        ValueError,
        ["times[0]", "-1.0"],
    ),
    (
        "sweep task",
        lambda b, M: _sweep(b, M, times=[0.0], task="ranking"),
        ValueError,
        ["task", "'ranking'"],
    ),
    (
        "sweep num_samples float",
        lambda b, M: _sweep(b, M, times=[0.0], num_samples=2.5),
        TypeError,
        ["num_samples", "2.5"],
    ),
    (
        "from_guide num_samples 0",
        lambda b, M: from_guide(m(b), _noop, {}, num_samples=0),
        ValueError,
        ["num_samples", "0"],
    ),
    (
        "from_guide model None",
        lambda b, M: from_guide(None, _noop, {}),
        TypeError,
        ["model", "None"],
    ),
    (
        "encode bits 25",
        lambda b, M: coding.encode(_noop, {}, bits_per_block=25),
        ValueError,
        ["bits_per_block", "25"],
    ),
    (
        "encode seed negative",
        lambda b, M: coding.encode(_noop, {}, seed=-1),
        ValueError,
        ["seed", "-1"],
    ),
    (
        "encode selection",
        lambda b, M: coding.encode(_noop, {}, selection="best"),
        ValueError,
        ["selection", "'best'"],
    ),
    (
        "encode chunks 0",
        lambda b, M: coding.encode(_noop, {}, chunks=0),
        ValueError,
        ["chunks", "0"],
    ),
    (
        "encode executor class",
        lambda b, M: coding.encode(_noop, {}, executor=object),
        TypeError,
        ["executor", "object"],
    ),
    (
        "encode kl_bits_per_block 0",
        lambda b, M: coding.encode(_noop, {}, kl_bits_per_block=0),
        ValueError,
        ["kl_bits_per_block", "0"],
    ),
    (
        "encode finetune not callable",
        lambda b, M: coding.encode(_noop, {}, finetune=3),
        TypeError,
        ["finetune", "3"],
    ),
    (
        "bayesian likelihood",
        lambda b, M: M.bnn.bayesian(None, None, likelihood="poisson"),
        TypeError,
        ["module", "None"],
    ),
]


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize(
    "call, exc, words", [c[1:] for c in MORE_CASES], ids=[c[0] for c in MORE_CASES]
)
def test_more_bad_inputs_are_refused_naming_the_argument(backend, call, exc, words):
    b, M = BACKENDS[backend](), MODULES[backend]()
    with pytest.raises(exc) as info:
        call(b, M)
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize(
    "call, exc, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_is_refused_naming_the_argument(backend, call, exc, words):
    b = BACKENDS[backend]()
    with pytest.raises(exc) as info:
        call(b)
    message = str(info.value)
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_batch_norm_of_two_inputs_is_the_formula(backend):
    """The smallest valid batch (two inputs) normalises with the batch's mean and its
    n - 1 variance (the NumPy formula)."""
    b = BACKENDS[backend]()
    x = np.array([[0.0, 1.0], [2.0, 5.0]], np.float32)
    mean, var = x.mean(0), x.var(0, ddof=1)
    expected = (x - mean) / np.sqrt(var + 1e-5)
    out = np.asarray(b.nn.batch_norm(b.array(x)))
    np.testing.assert_allclose(out, expected, rtol=1e-5)


def _numpyro_guide_and_params():
    import jax
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal
    from numpyro.optim import Adam

    def model(y):
        mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
        with numpyro.plate("n", y.shape[0]):
            numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)

    y = jnp.array([0.5, 1.0, 1.5])
    guide = AutoNormal(model)
    svi = SVI(model, guide, Adam(0.05), Trace_ELBO())
    params = svi.run(jax.random.PRNGKey(0), 20, y, progress_bar=False).params
    return model, guide, params, y


def test_from_guide_refuses_params_that_are_not_the_guides():
    """NumPyro: empty or misspelt params would silently give the untrained guide."""
    from ppl_hw.arviz import from_guide

    model, guide, params, y = _numpyro_guide_and_params()
    with pytest.raises(ValueError, match=r"missing \['mu_auto_loc', 'mu_auto_scale'\]"):
        from_guide(model, guide, {}, y, num_samples=2)
    typo = {**params, "mu_auto_lco": params["mu_auto_loc"]}
    del typo["mu_auto_loc"]
    with pytest.raises(
        ValueError, match=r"missing \['mu_auto_loc'\]; unknown \['mu_auto_lco'\]"
    ):
        from_guide(model, guide, typo, y, num_samples=2)
    idata = from_guide(model, guide, params, y, num_samples=3)  # the right ones pass
    assert idata.posterior["mu"].shape == (1, 3)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_from_guide_refuses_a_guide_that_is_not_callable(backend):
    from ppl_hw.arviz import from_guide

    b = BACKENDS[backend]()
    with pytest.raises(TypeError, match=r"guide must be a trained guide.*got None"):
        from_guide(lambda y: None, None, {}, b.array(np.zeros(2)))
