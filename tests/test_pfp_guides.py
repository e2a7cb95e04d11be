"""AutoDiscreteWeight and PFP_ELBO on both backends: the loss against the NumPy core
(the Taylor output is deterministic, so NumPyro, Pyro and NumPy must agree on the same
parameters), the read-outs against the categorical, the paper's parameterisations and
initialisation, the export under the crossbar, the Pyro digits network, bad input."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pyro
import pytest
import scipy.special
import scipy.stats
import torch

from ppl_hw import metrics
from ppl_hw.core import NUMPY, pfp
from ppl_hw.datasets import load_digits
from ppl_hw.devices import MTJ, PCM, Ideal
from ppl_hw.numpyro import autoguide as nag
from ppl_hw.numpyro import handlers as nh
from ppl_hw.numpyro import infer as ni
from ppl_hw.numpyro import models as nm
from ppl_hw.numpyro import nn as nnn
from ppl_hw.pyro import autoguide as pag
from ppl_hw.pyro import infer as pi
from ppl_hw.pyro import models as pm
from ppl_hw.pyro import nn as pnn
from ppl_hw.pyro import poutine as pp

DATA = load_digits()
X, Y = DATA.x_train[:40], DATA.y_train[:40]
HIDDEN = (16, 12)
SIZES = (64, *HIDDEN, 10)


def _np_model(x, y=None, **kw):
    return nm.ternary_mlp_classifier(x, y, hidden=HIDDEN, **kw)


def _pyro_model(x, y=None, **kw):
    return pm.ternary_mlp_classifier(x, y, hidden=HIDDEN, **kw)


def _random_params(kind, n, seed=1):
    rng = np.random.default_rng(seed)
    theta = {
        f"w{i}": rng.uniform(-3, 3, size=(*SIZES[i : i + 2], n)).astype(np.float32)
        for i in range(3)
    }
    return theta, rng.normal(size=10).astype(np.float32)


def _reference_loss(theta, b, kind, values, p0, kl_weight):
    """Negative ELBO with the Taylor output, in float64 with the NumPy core."""
    x, y = X.astype(np.float64), Y
    h = pfp.Moments(x, np.zeros_like(x))
    kl = 0.0
    prior = np.array([(1 - p0) / 2, p0, (1 - p0) / 2])
    for i in range(3):
        from ppl_hw.core import discrete as dc

        log_q = dc.log_probs_from_params(
            theta[f"w{i}"].astype(np.float64),
            kind,
            values,
            xp=np,
            special=NUMPY.special,
        )
        q = np.exp(log_q)
        kl += np.sum(q * (log_q - np.log(prior)))
        grid = np.asarray(values)
        mean = q @ grid
        var = (q * (grid - mean[..., None]) ** 2).sum(-1)
        h = pfp.linear_moments(h, mean, var, np.matmul)
        c = SIZES[i] ** -0.5
        h = pfp.Moments(h.mean * c, h.var * c * c)
        if i < 2:
            h = pfp.batch_norm_moments(h, xp=np)
            h = pfp.sign_moments(h, xp=np, special=NUMPY.special)
    out = pfp.Moments(3.0 * h.mean + b, 9.0 * h.var)
    nll = pfp.expected_nll_taylor(out, y, xp=np, special=NUMPY.special).sum()
    log_prior_b = scipy.stats.norm.logpdf(b.astype(np.float64)).sum()
    return nll - log_prior_b + kl_weight * kl


@pytest.mark.parametrize(
    "kind, n", [("logits", 3), ("logits_fixedzero", 2), ("shayer", 2)]
)
def test_taylor_loss_equals_the_numpy_core_on_both_backends(kind, n):
    theta, b = _random_params(kind, n)
    want = _reference_loss(theta, b, kind, (-1.0, 0.0, 1.0), 0.5, 0.3)

    guide = nag.AutoDiscreteWeight(_np_model, parameterization=kind)
    x, y = jnp.asarray(X), jnp.asarray(Y)
    guide._setup_prototype(x, y)
    params = {f"{k}_auto_logits": jnp.asarray(v) for k, v in theta.items()}
    params["b2_auto_loc"] = jnp.asarray(b)
    elbo = ni.PFP_ELBO(kl_weight=0.3, output="taylor")
    got_np = float(elbo.loss(jax.random.PRNGKey(0), params, _np_model, guide, x, y))

    pyro.clear_param_store()
    pguide = pag.AutoDiscreteWeight(_pyro_model, parameterization=kind)
    xt, yt = torch.as_tensor(X), torch.as_tensor(Y)
    pguide._setup_prototype(xt, yt)
    pguide.moments()  # registers the parameters in the store
    store = pyro.get_param_store()
    for k, v in theta.items():
        store[f"AutoDiscreteWeight.logits.{k}"] = torch.as_tensor(v)
    store["AutoDiscreteWeight.locs.b2"] = torch.as_tensor(b)
    got_pyro = pi.PFP_ELBO(kl_weight=0.3, output="taylor").loss(
        _pyro_model, pguide, xt, yt
    )
    # float32 forward passes of a loss of order 100
    assert got_np == pytest.approx(want, rel=2e-5)
    assert got_pyro == pytest.approx(want, rel=2e-5)


def test_sample_output_is_one_gaussian_draw_per_logit():
    m = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3)), jnp.float32)
    v = jnp.asarray(np.random.default_rng(1).uniform(size=(5, 3)), jnp.float32)
    key = jax.random.PRNGKey(3)
    got = nnn.sample_logits(nnn.Moments(m, v), rng_key=key)
    want = m + jnp.sqrt(v) * jax.random.normal(key, (5, 3))
    np.testing.assert_allclose(got, want, rtol=1e-6)
    torch.manual_seed(0)
    mt, vt = torch.tensor(np.array(m)), torch.tensor(np.array(v))
    got_t = pnn.sample_logits(pnn.Moments(mt, vt))
    torch.manual_seed(0)
    np.testing.assert_allclose(got_t, mt + vt.sqrt() * torch.randn(5, 3), rtol=1e-6)
    assert nnn.sample_logits(m) is m


def test_pyro_readouts_against_the_categorical():
    pyro.clear_param_store()
    guide = pag.AutoDiscreteWeight(_pyro_model, seed=2)
    guide._setup_prototype(torch.as_tensor(X), torch.as_tensor(Y))
    guide.moments()
    logits = pyro.param("AutoDiscreteWeight.logits.w1").detach().numpy()
    q = scipy.special.softmax(logits.astype(np.float64), -1)
    grid = np.array([-1.0, 0.0, 1.0])
    mom = guide.moments()
    np.testing.assert_allclose(mom["w1"].mean.detach(), q @ grid, rtol=1e-5, atol=1e-6)
    var = (q * (grid - (q @ grid)[..., None]) ** 2).sum(-1)
    np.testing.assert_allclose(mom["w1"].var.detach(), var, rtol=1e-5, atol=1e-6)
    prior = np.array([0.25, 0.5, 0.25])
    kl = 0.0
    for i in range(3):
        lq = pyro.param(f"AutoDiscreteWeight.logits.w{i}").detach().double().numpy()
        qi = scipy.special.softmax(lq, -1)
        kl += (qi * np.log(qi / prior)).sum()
    assert float(guide.kl().detach()) == pytest.approx(kl, rel=1e-4)
    low = guide.to_low_precision()
    np.testing.assert_array_equal(low["w1"][0], np.argmax(logits, -1))
    mp = guide.most_probable()
    np.testing.assert_array_equal(mp["w1"].numpy(), grid[np.argmax(logits, -1)])
    sp = guide.sparsity()
    assert sp["w1"] == pytest.approx(np.mean(np.argmax(logits, -1) == 1))
    assert guide.bits_per_weight() == pytest.approx(math.log2(3))
    # sampled networks: Predictive draws each weight from its categorical
    pred = pyro.infer.Predictive(_pyro_model, guide=guide, num_samples=2)
    draws = pred(torch.as_tensor(X))["w1"].numpy()
    assert set(np.unique(draws)) <= {-1.0, 0.0, 1.0}


def _np_predict(model, weights, x, device=None, **kw):
    sub = numpyro.handlers.substitute(model, data=weights)
    if device is not None:  # the weight matrices on the chip, the bias digital
        sites = ["w0", "w1", "w2"]
        sub = nh.crossbar(sub, device=device, sites=sites, t_inference=1.0, seed=0)
    tr = numpyro.handlers.trace(numpyro.handlers.seed(sub, 0)).get_trace(
        jnp.asarray(x), **kw
    )
    return np.asarray(tr["logits"]["value"])


def _np_train(model, steps, guide=None, **kw):
    guide = guide or nag.AutoDiscreteWeight(model)
    svi = numpyro.infer.SVI(
        model, guide, numpyro.optim.Adam(1e-2), ni.PFP_ELBO(kl_weight=0.1)
    )
    x, y = jnp.asarray(DATA.x_train), jnp.asarray(DATA.y_train)
    res = svi.run(jax.random.PRNGKey(0), steps, x, y, progress_bar=False, **kw)
    return guide, res.params


def _acc(logits):
    return metrics.accuracy(scipy.special.softmax(logits, -1), DATA.y_test)


@pytest.mark.slow
def test_init_from_a_real_valued_network_and_the_exported_net_under_crossbars():
    # a real-valued tanh network of the same shape, MAP by AutoDelta
    def real_model(x, y=None):
        h = x
        for i in range(3):
            w = numpyro.sample(
                f"w{i}",
                numpyro.distributions.Normal(0, 1)
                .expand(list(SIZES_FULL[i : i + 2]))
                .to_event(2),
            )
            h = nnn.dense(h, w) * SIZES_FULL[i] ** -0.5
            if i < 2:
                h = jnp.tanh(nnn.batch_norm(h))
        b = numpyro.param("b", jnp.zeros(10))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample(
                "y", numpyro.distributions.Categorical(logits=3 * h + b), obs=y
            )

    delta = numpyro.infer.autoguide.AutoDelta(real_model)
    svi = numpyro.infer.SVI(
        real_model, delta, numpyro.optim.Adam(1e-2), numpyro.infer.Trace_ELBO()
    )
    res = svi.run(
        jax.random.PRNGKey(0),
        300,
        jnp.asarray(DATA.x_train),
        jnp.asarray(DATA.y_train),
        progress_bar=False,
    )
    real = {k: np.asarray(v) for k, v in delta.median(res.params).items()}

    model = nm.ternary_mlp_classifier
    init = nag.AutoDiscreteWeight(model, init_weights=real)
    random = nag.AutoDiscreteWeight(model)
    _, p_init = _np_train(model, 1, guide=init)  # one step: set-up only
    _, p_rand = _np_train(model, 1, guide=random)
    acc_init = _acc(_np_predict(model, init.most_probable(p_init), DATA.x_test))
    acc_rand = _acc(_np_predict(model, random.most_probable(p_rand), DATA.x_test))
    # measured: 0.92 from the real network, 0.26 from random parameters
    assert acc_init >= 0.8 and acc_init - acc_rand >= 0.3, (acc_init, acc_rand)

    # train from there; deploy the exported network on chips
    guide, params = _np_train(model, 300, guide=init)
    mp = guide.most_probable(params)
    off = _np_predict(model, mp, DATA.x_test)
    # the ideal device reproduces the off-chip network bit for bit
    np.testing.assert_array_equal(_np_predict(model, mp, DATA.x_test, Ideal()), off)
    acc_off = _acc(off)
    acc_pcm = _acc(_np_predict(model, mp, DATA.x_test, PCM()))
    # measured: 0.958 off-chip and on PCM at t = 1 s
    assert acc_off >= 0.9 and acc_pcm >= acc_off - 0.05, (acc_off, acc_pcm)

    # a binary grid on binary MTJ cells
    def binary(x, y=None):
        return nm.ternary_mlp_classifier(x, y, values=(-1.0, 1.0), p0=None)

    bguide, bparams = _np_train(binary, 300)
    bmp = bguide.most_probable(bparams)
    assert {float(v) for v in np.unique(bmp["w1"])} <= {-1.0, 1.0}
    acc_bin = _acc(_np_predict(binary, bmp, DATA.x_test))
    acc_mtj = _acc(_np_predict(binary, bmp, DATA.x_test, MTJ()))
    # measured: 0.927 off-chip, 0.929 on MTJ cells
    assert acc_bin >= 0.85 and acc_mtj >= acc_bin - 0.1, (acc_bin, acc_mtj)


SIZES_FULL = (64, 256, 256, 10)


@pytest.mark.slow
def test_pyro_ternary_digits_network_reaches_90_percent_and_exports_exactly():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = pm.ternary_mlp_classifier
    guide = pag.AutoDiscreteWeight(model)
    svi = pyro.infer.SVI(
        model, guide, pyro.optim.Adam({"lr": 1e-2}), pi.PFP_ELBO(kl_weight=0.1)
    )
    x, y = torch.as_tensor(DATA.x_train), torch.as_tensor(DATA.y_train)
    for _ in range(400):
        svi.step(x, y)

    def predict(weights, device=None):
        m = pyro.poutine.condition(model, data=weights)
        if device is not None:
            m = pp.crossbar(m, device=device, seed=0)
        tr = pyro.poutine.trace(m).get_trace(torch.as_tensor(DATA.x_test))
        return tr.nodes["logits"]["value"].detach().numpy()

    mp = guide.most_probable()
    logits = predict(mp)
    assert _acc(logits) >= 0.90
    low = guide.to_low_precision()
    exported = {k: torch.as_tensor(grid[i]) for k, (i, grid) in low.items()}
    exported["b2"] = mp["b2"]
    np.testing.assert_array_equal(predict(exported), logits)
    np.testing.assert_array_equal(predict(exported, Ideal()), logits)
    assert np.mean(list(guide.sparsity().values())) > 0.3


def _ones_model(backend):
    if backend == "numpyro":
        return lambda x, y=None: nm.ternary_mlp_classifier(x, y, hidden=HIDDEN)
    return lambda x, y=None: pm.ternary_mlp_classifier(x, y, hidden=HIDDEN)


BAD_GUIDE = [
    (dict(parameterization="softmax"), ValueError, "parameterization must be one of"),
    (dict(logit_bound=0.0), ValueError, "logit_bound must be > 0"),
    (dict(init_scale=-1.0), ValueError, "init_scale must be >= 0"),
    (dict(seed=1.5), TypeError, "seed must be an int"),
    (dict(init_probs=[1.0]), TypeError, "init_probs must be a dict"),
    (dict(init_probs={"w0": np.ones((2, 2, 3))}), ValueError, r"init_probs\['w0'\]"),
    (dict(init_probs={"w0": np.ones((64, 16, 3))}), ValueError, "probabilities"),
    (dict(init_weights={"w0": np.ones(3)}), ValueError, r"init_weights\['w0'\]"),
    (dict(init_weights={"w9": np.ones(3)}), ValueError, r"sites \['w9'\]"),
    (dict(q_max=0.2, init_weights={"w0": np.ones((64, 16))}), ValueError, "q_max"),
]


@pytest.mark.parametrize("kwargs, err, match", BAD_GUIDE)
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_bad_guide_arguments(backend, kwargs, err, match):
    mod = nag if backend == "numpyro" else pag
    conv = jnp.asarray if backend == "numpyro" else torch.as_tensor
    with pytest.raises(err, match=match):
        guide = mod.AutoDiscreteWeight(_ones_model(backend), **kwargs)
        guide._setup_prototype(conv(X), conv(Y))


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_bad_elbo_grid_and_primitive_input(backend):
    mod, inf, nn_, conv = (
        (nag, ni, nnn, jnp.asarray)
        if backend == "numpyro"
        else (pag, pi, pnn, torch.as_tensor)
    )
    with pytest.raises(ValueError, match="kl_weight must be >= 0"):
        inf.PFP_ELBO(kl_weight=-1.0)
    with pytest.raises(ValueError, match="output must be one of"):
        inf.PFP_ELBO(output="probit")
    # shayer needs a ternary grid; a grid of one value is refused by the prior
    with pytest.raises(ValueError, match="ternary grid"):
        g = mod.AutoDiscreteWeight(
            lambda x, y=None: (
                nm if backend == "numpyro" else pm
            ).ternary_mlp_classifier(
                x, y, hidden=HIDDEN, values=(-2.0, -1.0, 0.0, 1.0, 2.0)
            ),
            parameterization="shayer",
        )
        g._setup_prototype(conv(X), conv(Y))
    from ppl_hw.numpyro.distributions import DiscreteWeight as NDW
    from ppl_hw.pyro.distributions import DiscreteWeight as PDW

    with pytest.raises(ValueError, match="at least 2 values"):
        (NDW if backend == "numpyro" else PDW)((1.0,), probs=conv(np.ones(1)))
    with pytest.raises(ValueError, match="p0 needs the value 0"):
        (nm if backend == "numpyro" else pm).ternary_mlp_classifier(
            conv(X), values=(-1.0, 1.0)
        )
    # a weight value that is not on the grid: the int8 export refuses it
    from ppl_hw.core.discrete import grid_indices

    with pytest.raises(ValueError, match=r"1 value\(s\) not on the grid"):
        grid_indices(conv(np.array([0.0, 0.5, 1.0], np.float32)), (-1.0, 0.0, 1.0))
    # primitives without a PFP rule
    m = nn_.Moments(
        conv(np.ones((2, 3), np.float32)), conv(np.ones((2, 3), np.float32))
    )
    w = conv(np.ones((3, 4), np.float32))
    with pytest.raises(TypeError, match="binary_dense has no probabilistic-forward"):
        nn_.binary_dense(m, w, conv(np.ones(4, np.float32)))
    cb = nh.crossbar if backend == "numpyro" else pp.crossbar
    with cb(device=PCM()), pytest.raises(TypeError, match="dense under the crossbar"):
        nn_.dense(m, w)
    # the Taylor output needs one sample_logits output
    prim = numpyro if backend == "numpyro" else pyro
    DW = NDW if backend == "numpyro" else PDW

    def no_output(x, y=None):
        prior = DW((-1.0, 0.0, 1.0), probs=conv(np.ones(3, np.float32) / 3))
        w = prim.sample("w0", prior.expand([64, 10]).to_event(2))
        h = nn_.dense(x, w)
        logits = h.mean if isinstance(h, pfp.Moments) else h  # no sample_logits
        with prim.plate("data", x.shape[0]):
            prim.sample("y", prim.distributions.Categorical(logits=logits), obs=y)

    guide = mod.AutoDiscreteWeight(no_output)
    elbo = inf.PFP_ELBO(output="taylor")
    with pytest.raises(ValueError, match=r"exactly one nn\.sample_logits output"):
        if backend == "numpyro":
            guide._setup_prototype(conv(X), conv(Y))
            params = {"w0_auto_logits": jnp.zeros((64, 10, 3))}
            elbo.loss(jax.random.PRNGKey(0), params, no_output, guide, conv(X), conv(Y))
        else:
            pyro.clear_param_store()
            elbo.loss(no_output, guide, conv(X), conv(Y))
    with pytest.raises(TypeError, match="AutoDiscreteWeight"):
        if backend == "numpyro":
            model = _ones_model(backend)
            elbo.loss(
                jax.random.PRNGKey(0),
                {},
                model,
                numpyro.infer.autoguide.AutoNormal(model),
                conv(X),
            )
        else:
            model = _ones_model(backend)
            elbo.loss(model, pyro.infer.autoguide.AutoNormal(model), conv(X), conv(Y))
