"""Discrete-weight networks through the PFP on NumPyro: the digits reference
network (64-256-256-10, ternary everywhere, sign activations, batch norm), sparsity
against p0, the int8 export, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import SVI

from ppl_hw import metrics
from ppl_hw.datasets import load_digits
from ppl_hw.numpyro import nn
from ppl_hw.numpyro.autoguide import AutoDiscreteWeight
from ppl_hw.numpyro.distributions import DiscreteWeight
from ppl_hw.numpyro.infer import PFP_ELBO

DATA = load_digits()
SIZES = [64, 256, 256, 10]


def ternary_net(p0):
    def model(x, y=None):
        probs = jnp.array([(1 - p0) / 2, p0, (1 - p0) / 2])
        prior = DiscreteWeight((-1.0, 0.0, 1.0), probs=probs)
        h = x
        for i in range(3):
            w = numpyro.sample(f"w{i}", prior.expand(SIZES[i : i + 2]).to_event(2))
            h = nn.dense(h, w) / math.sqrt(SIZES[i])
            if i < 2:
                h = nn.sign(nn.batch_norm(h))
        b = numpyro.param("b_out", jnp.zeros(10))
        logits = numpyro.deterministic("logits", nn.sample_logits(3.0 * h + b))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", dist.Categorical(logits=logits), obs=y)

    return model


def _train(p0, kl_weight, steps=1000):
    model = ternary_net(p0)
    guide = AutoDiscreteWeight(model)
    svi = SVI(model, guide, numpyro.optim.Adam(1e-2), PFP_ELBO(kl_weight=kl_weight))
    x, y = jnp.asarray(DATA.x_train), jnp.asarray(DATA.y_train)
    params = svi.run(jax.random.PRNGKey(0), steps, x, y, progress_bar=False).params
    return model, guide, params


def _predict(model, weights, params):
    """The deployed network: the given weights, hard signs (arrays all the way)."""
    sub = numpyro.handlers.substitute(model, data={**weights, "b_out": params["b_out"]})
    tr = numpyro.handlers.trace(numpyro.handlers.seed(sub, 0)).get_trace(
        jnp.asarray(DATA.x_test)
    )
    return np.asarray(tr["logits"]["value"])


@pytest.mark.slow
def test_most_probable_ternary_network_reaches_90_percent_and_exports_exactly():
    model, guide, params = _train(0.5, 0.1, steps=500)
    mp = guide.most_probable(params)
    logits = _predict(model, mp, params)
    acc = metrics.accuracy(jax.nn.softmax(logits, -1), DATA.y_test)
    assert acc >= 0.90, acc
    low = guide.to_low_precision(params)
    for name, (idx, grid) in low.items():
        assert idx.dtype == np.int8 and grid.tolist() == [-1.0, 0.0, 1.0]
        assert idx.shape == tuple(mp[name].shape)
    exported = {k: jnp.asarray(grid[idx]) for k, (idx, grid) in low.items()}
    np.testing.assert_array_equal(_predict(model, exported, params), logits)


@pytest.mark.slow
def test_sparsity_grows_with_p0():
    sparsity = []
    for p0 in (0.34, 0.5, 0.8):
        _, guide, params = _train(p0, 0.1, steps=300)
        s = guide.sparsity(params)
        sparsity.append(np.mean(list(s.values())))
    assert sparsity[0] < sparsity[1] < sparsity[2], sparsity


def test_moments_and_kl_against_the_categorical():
    model = ternary_net(0.5)
    guide = AutoDiscreteWeight(model, seed=3)
    x, y = jnp.asarray(DATA.x_train[:8]), jnp.asarray(DATA.y_train[:8])
    guide._setup_prototype(x, y)
    rng = np.random.default_rng(0)
    params = {
        f"w{i}_auto_logits": jnp.asarray(rng.normal(size=(*SIZES[i : i + 2], 3)))
        for i in range(3)
    }
    params["b_out"] = jnp.zeros(10)
    mom = guide.moments(params)
    q = np.asarray(jax.nn.softmax(params["w0_auto_logits"], -1), np.float64)
    grid = np.array([-1.0, 0.0, 1.0])
    mean = q @ grid
    np.testing.assert_allclose(mom["w0"].mean, mean, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        mom["w0"].var, (q * (grid - mean[..., None]) ** 2).sum(-1), rtol=1e-5, atol=1e-6
    )
    prior = np.array([0.25, 0.5, 0.25])
    kl = sum(
        (
            np.asarray(jax.nn.softmax(params[f"w{i}_auto_logits"], -1), np.float64)
            * np.log(
                np.asarray(jax.nn.softmax(params[f"w{i}_auto_logits"], -1), np.float64)
                / prior
            )
        ).sum()
        for i in range(3)
    )
    assert float(guide.kl(params)) == pytest.approx(kl, rel=1e-4)


def test_bad_input():
    def real_model(x):
        numpyro.sample("w", dist.Normal(0, 1))

    with pytest.raises(ValueError, match="no DiscreteWeight"):
        AutoDiscreteWeight(real_model)._setup_prototype(jnp.ones(3))
    guide = AutoDiscreteWeight(ternary_net(0.5), init_probs={"w0": np.ones((2, 2, 3))})
    with pytest.raises(ValueError, match=r"init_probs\['w0'\]"):
        guide._setup_prototype(jnp.asarray(DATA.x_train[:4]))
    with pytest.raises(ValueError, match="kl_weight"):
        PFP_ELBO(kl_weight=-1.0)
    from numpyro.infer.autoguide import AutoNormal

    model = ternary_net(0.5)
    with pytest.raises(TypeError, match="AutoDiscreteWeight"):
        PFP_ELBO().loss(
            jax.random.PRNGKey(0), {}, model, AutoNormal(model), jnp.ones((2, 64))
        )
