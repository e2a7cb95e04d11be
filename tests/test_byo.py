"""Bring your own network: ppl_hw's guides, coder and handler on models ppl_hw never
wrote — a regression BNN with a learned noise scale (plain, flax linen, PyroModule),
eight schools (non-centred and centred), and the four network styles' site names.

References: the float64 closed-form Normal KL (the budget), NumPyro's/Pyro's own
``AutoNormal`` trained the same steps (sigma), the posterior samples' own RMSE
quantiles (the decoded network), scipy quadrature (the KL of a constrained site),
and the param store's values themselves (the Pyro coder).
"""

import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import optax
import pyro
import pyro.distributions as pdist
import pytest
import scipy.integrate as si
import scipy.stats as ss
import torch
from numpyro.contrib.module import random_flax_module
from numpyro.infer import SVI, Predictive, TraceMeanField_ELBO
from numpyro.infer.autoguide import AutoNormal as NAutoNormal
from pyro.infer.autoguide import AutoNormal as PAutoNormal
from pyro.nn import PyroModule, PyroSample

import ppl_hw.numpyro.autoguide as nag
import ppl_hw.pyro.autoguide as pag
from ppl_hw import coding
from ppl_hw.numpyro.distributions import EmpiricalNoise as NNoise
from ppl_hw.pyro.distributions import EmpiricalNoise as PNoise

RNG = np.random.default_rng(0)
X = RNG.normal(size=(64, 2)).astype(np.float32)
Y = (np.sin(X[:, 0]) + 0.3 * X[:, 1] + 0.2 * RNG.normal(size=64)).astype(np.float32)
STEPS = 800  # Adam from 0.05 decaying to 0.005: sigma settles in 800 steps
SMALL_INIT = 0.5  # init_to_uniform radius (both guides): the budget must hold the
# initial means


# -- the models ----------------------------------------------------------------------


def n_plain(x, y=None):
    w1 = numpyro.sample("w1", ndist.Normal(0, 1).expand([2, 16]).to_event(2))
    b1 = numpyro.sample("b1", ndist.Normal(0, 1).expand([16]).to_event(1))
    w2 = numpyro.sample("w2", ndist.Normal(0, 1).expand([16]).to_event(1))
    sigma = numpyro.sample("sigma", ndist.HalfNormal(1.0))
    mu = numpyro.deterministic("mu", jnp.tanh(x @ w1 + b1) @ w2)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", ndist.Normal(mu, sigma), obs=y)


class LinenMLP(fnn.Module):
    @fnn.compact
    def __call__(self, x):
        return fnn.Dense(1)(jnp.tanh(fnn.Dense(16)(x)))


def n_flax(x, y=None):
    net = random_flax_module("mlp", LinenMLP(), ndist.Normal(0, 1), input_shape=(1, 2))
    sigma = numpyro.sample("sigma", ndist.HalfNormal(1.0))
    mu = numpyro.deterministic("mu", net(x)[..., 0])
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", ndist.Normal(mu, sigma), obs=y)


def p_plain(x, y=None):
    w1 = pyro.sample("w1", pdist.Normal(0.0, 1.0).expand([2, 16]).to_event(2))
    b1 = pyro.sample("b1", pdist.Normal(0.0, 1.0).expand([16]).to_event(1))
    w2 = pyro.sample("w2", pdist.Normal(0.0, 1.0).expand([16]).to_event(1))
    sigma = pyro.sample("sigma", pdist.HalfNormal(1.0))
    mu = pyro.deterministic("mu", torch.tanh(x @ w1 + b1) @ w2)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", pdist.Normal(mu, sigma), obs=y)


class TorchMLP(PyroModule):
    def __init__(self):
        super().__init__()
        self.fc = PyroModule[torch.nn.Linear](2, 16)
        self.fc.weight = PyroSample(pdist.Normal(0.0, 1.0).expand([16, 2]).to_event(2))
        self.fc.bias = PyroSample(pdist.Normal(0.0, 1.0).expand([16]).to_event(1))
        self.out = PyroModule[torch.nn.Linear](16, 1)
        self.out.weight = PyroSample(pdist.Normal(0.0, 1.0).expand([1, 16]).to_event(2))
        self.out.bias = PyroSample(pdist.Normal(0.0, 1.0).expand([1]).to_event(1))

    def forward(self, x, y=None):
        sigma = pyro.sample("sigma", pdist.HalfNormal(1.0))
        mu = pyro.deterministic("mu", self.out(torch.tanh(self.fc(x)))[..., 0])
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("y", pdist.Normal(mu, sigma), obs=y)


def _kl_bits_float64(loc_scale, priors):
    """The closed-form Normal KL, recomputed in float64 (the reference)."""
    total = 0.0
    for name, (m, s) in loc_scale.items():
        m, s = np.asarray(m, np.float64), np.asarray(s, np.float64)
        nu, rho = priors[name]
        total += np.sum(np.log(rho / s) + (s**2 + (m - nu) ** 2) / (2 * rho**2) - 0.5)
    return total / np.log(2.0)


def _rmse(mu):
    return np.sqrt(np.mean((np.asarray(mu) - Y) ** 2, axis=-1))


# -- 1. the regression BNN with a learned noise scale ---------------------------------


def _numpyro_fit(model, guide):
    lr = optax.exponential_decay(0.05, STEPS, 0.1)
    svi = SVI(model, guide, optax.adam(lr), TraceMeanField_ELBO())
    run = svi.run(jax.random.key(0), STEPS, X, Y, progress_bar=False)
    assert np.all(np.isfinite(run.losses))
    return run.params


def _numpyro_weight_kl_bits(guide, params):
    """AutoNormal's own KL on the Normal-prior sites, in bits: the budget that asks
    AutoMeanKL for the same trade-off between fit and KL."""
    bits = 0.0
    for name, site in guide.prototype_trace.items():
        if site["type"] == "sample" and not site["is_observed"] and name != "sigma":
            m = np.asarray(params[f"{name}_auto_loc"], np.float64)
            s = np.asarray(params[f"{name}_auto_scale"], np.float64)
            bits += np.sum(-np.log(s) + (s**2 + m**2) / 2 - 0.5) / np.log(2)
    return bits


@pytest.mark.parametrize("kind", ["plain", "flax"])
def test_numpyro_meankl_on_a_regression_bnn_with_a_noise_scale(kind):
    model = n_plain if kind == "plain" else n_flax
    normal = NAutoNormal(
        model, init_loc_fn=numpyro.infer.init_to_uniform(radius=SMALL_INIT)
    )
    n_params = _numpyro_fit(model, normal)
    budget = round(_numpyro_weight_kl_bits(normal, n_params))
    guide = nag.AutoMeanKL(
        model,
        kl_budget_bits=budget,
        budget_split="blocks",  # every coding block's KL fixed: what MIRACLE needs
        init_loc_fn=numpyro.infer.init_to_uniform(radius=SMALL_INIT),
    )
    params = _numpyro_fit(model, guide)
    assert guide.outside_sites == {"sigma": "HalfNormal prior (not Normal)"}
    latent = set(n_params and guide.median(params))
    assert set(guide.budget_sites) == latent - {"sigma"}
    # the budget holds on the weights (float64 recompute)
    np.testing.assert_allclose(
        _kl_bits_float64(guide.loc_scale(params), guide.priors), budget, rtol=1e-5
    )
    np.testing.assert_allclose(float(guide.kl(params)[0]) / np.log(2), budget, 1e-5)
    # sigma is learnt as AutoNormal learns it
    sigma, ref = guide.median(params)["sigma"], normal.median(n_params)["sigma"]
    assert abs(float(sigma) / float(ref) - 1) < 0.3, (sigma, ref)
    # the coded network predicts like a posterior sample; sigma travels with it
    comp = coding.encode(guide, params)
    assert comp.point_sites == ("sigma",)
    decoded = coding.decode(comp, backend="numpyro")
    assert set(decoded) == latent
    np.testing.assert_allclose(decoded["sigma"], sigma, rtol=1e-6)
    post = Predictive(model, guide=guide, params=params, num_samples=200)(
        jax.random.key(1), X
    )
    lo, hi = np.quantile(_rmse(post["mu"]), [0.05, 0.95])
    tr = numpyro.handlers.trace(
        numpyro.handlers.seed(numpyro.handlers.substitute(model, data=decoded), 0)
    ).get_trace(X)
    assert lo <= _rmse(tr["mu"]["value"]) <= hi, (_rmse(tr["mu"]["value"]), lo, hi)


def _pyro_fit(model, guide):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    optim = pyro.optim.ClippedAdam({"lr": 0.05, "lrd": 0.1 ** (1 / STEPS)})
    svi = pyro.infer.SVI(model, guide, optim, pyro.infer.TraceMeanField_ELBO())
    x, y = torch.as_tensor(X), torch.as_tensor(Y)
    losses = [svi.step(x, y) for _ in range(STEPS)]
    assert np.all(np.isfinite(losses))


@pytest.mark.parametrize("kind", ["plain", "pyromodule"])
def test_pyro_meankl_on_a_regression_bnn_with_a_noise_scale(kind):
    model = p_plain if kind == "plain" else TorchMLP()
    normal = PAutoNormal(
        model, init_loc_fn=pyro.infer.autoguide.init_to_uniform(radius=SMALL_INIT)
    )
    _pyro_fit(model, normal)
    bits = 0.0
    for name in normal.prototype_trace.stochastic_nodes:
        if name != "sigma":
            m, s = (
                t.detach().double().numpy() for t in normal._get_loc_and_scale(name)
            )
            bits += np.sum(-np.log(s) + (s**2 + m**2) / 2 - 0.5) / np.log(2)
    ref = float(normal.median()["sigma"])
    budget = round(bits)
    guide = pag.AutoMeanKL(
        model,
        kl_budget_bits=budget,
        budget_split="blocks",
        init_loc_fn=pyro.infer.autoguide.init_to_uniform(radius=SMALL_INIT),
    )
    _pyro_fit(model, guide)
    assert guide.outside_sites == {"sigma": "HalfNormal prior (not Normal)"}
    np.testing.assert_allclose(
        _kl_bits_float64(guide.loc_scale(), guide.priors), budget, rtol=1e-5
    )
    sigma = float(guide.median()["sigma"])
    assert abs(sigma / ref - 1) < 0.3, (sigma, ref)
    comp = coding.encode(guide)
    assert comp.point_sites == ("sigma",)
    decoded = coding.decode(comp, backend="pyro")
    assert set(decoded) == set(guide.budget_sites) | {"sigma"}
    pyro.set_rng_seed(1)
    x = torch.as_tensor(X)
    with torch.no_grad():
        post = pyro.infer.Predictive(model, guide=guide, num_samples=200)(x)
        tr = pyro.poutine.trace(pyro.poutine.condition(model, data=decoded)).get_trace(
            x
        )
    lo, hi = np.quantile(_rmse(post["mu"].reshape(200, -1).numpy()), [0.05, 0.95])
    assert lo <= _rmse(tr.nodes["mu"]["value"].numpy()) <= hi


# -- 2. eight schools ------------------------------------------------------------------

J = 8
SCHOOL_Y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0], np.float32)
SCHOOL_SIGMA = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0], np.float32)


def n_schools(sigma, y=None, centred=False):
    mu = numpyro.sample("mu", ndist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", ndist.HalfCauchy(5.0))
    with numpyro.plate("J", J):
        if centred:
            theta = numpyro.sample("theta", ndist.Normal(mu, tau))
        else:
            theta = mu + tau * numpyro.sample("theta_tilde", ndist.Normal(0.0, 1.0))
        numpyro.sample("obs", ndist.Normal(theta, sigma), obs=y)


def p_schools(sigma, y=None, centred=False):
    mu = pyro.sample("mu", pdist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", pdist.HalfCauchy(5.0))
    with pyro.plate("J", J):
        if centred:
            theta = pyro.sample("theta", pdist.Normal(mu, tau))
        else:
            theta = mu + tau * pyro.sample("theta_tilde", pdist.Normal(0.0, 1.0))
        pyro.sample("obs", pdist.Normal(theta, sigma), obs=y)


OUTSIDE = {
    False: {"tau": "HalfCauchy prior (not Normal)"},
    True: {
        "tau": "HalfCauchy prior (not Normal)",
        "theta": "its Normal prior depends on latent sites ['mu', 'tau']",
    },
}


@pytest.mark.parametrize("centred", [False, True])
def test_eight_schools_with_meankl_on_both_backends(centred):
    args = (SCHOOL_SIGMA, SCHOOL_Y, centred)
    guide = nag.AutoMeanKL(n_schools, kl_budget_bits=40)
    svi = SVI(n_schools, guide, optax.adam(1e-2), TraceMeanField_ELBO())
    run = svi.run(jax.random.key(0), 1000, *args, progress_bar=False)
    assert np.all(np.isfinite(run.losses))
    assert guide.outside_sites == OUTSIDE[centred]
    np.testing.assert_allclose(float(guide.kl(run.params)[0]), 40 * np.log(2), 1e-5)
    kl = guide.kl_outside(jax.random.key(1), run.params, *args, num_samples=200)
    assert set(kl) == set(OUTSIDE[centred])
    assert all(np.isfinite(float(v)) and float(e) > 0 for v, e in kl.values())
    assert float(guide.median(run.params)["tau"]) > 0

    pguide = pag.AutoMeanKL(p_schools, kl_budget_bits=40)
    pargs = (torch.as_tensor(SCHOOL_SIGMA), torch.as_tensor(SCHOOL_Y), centred)
    _ = pyro.clear_param_store(), pyro.set_rng_seed(0)
    psvi = pyro.infer.SVI(
        p_schools,
        pguide,
        pyro.optim.Adam({"lr": 1e-2}),
        pyro.infer.TraceMeanField_ELBO(),
    )
    assert all(np.isfinite(psvi.step(*pargs)) for _ in range(200))
    assert pguide.outside_sites == OUTSIDE[centred]
    np.testing.assert_allclose(float(pguide.kl()[0]), 40 * np.log(2), 1e-5)
    pkl = pguide.kl_outside(*pargs, num_samples=50)
    assert set(pkl) == set(OUTSIDE[centred])


def _kl_lognormal_halfcauchy(loc, scale, prior_scale):
    """KL(exp N(loc, scale^2) || HalfCauchy(prior_scale)) by quadrature over the
    unconstrained value u: E[log N(u) - log p(e^u) - u]."""

    def integrand(u):
        q, p = ss.norm(loc, scale), ss.halfcauchy(scale=prior_scale)
        return q.pdf(u) * (q.logpdf(u) - p.logpdf(np.exp(u)) - u)

    return si.quad(integrand, loc - 12 * scale, loc + 12 * scale)[0]


def test_kl_outside_matches_quadrature_on_both_backends():
    """A fixed HalfCauchy prior: the Monte Carlo KL is within 4 standard errors of
    the quadrature (false-alarm rate 6e-5 per backend for a Gaussian estimate)."""
    args = (SCHOOL_SIGMA, SCHOOL_Y)
    guide = nag.AutoMeanKL(n_schools, kl_budget_bits=40)
    svi = SVI(n_schools, guide, optax.adam(1e-2), TraceMeanField_ELBO())
    params = dict(svi.get_params(svi.init(jax.random.key(0), *args)))
    params["tau_auto_loc"] = jnp.asarray(1.2)
    params["tau_auto_scale"] = jnp.asarray(0.4)
    est, se = guide.kl_outside(jax.random.key(2), params, *args, num_samples=4000)[
        "tau"
    ]
    ref = _kl_lognormal_halfcauchy(1.2, 0.4, 5.0)
    assert abs(float(est) - ref) < 4 * float(se), (est, se, ref)

    pguide = pag.AutoMeanKL(p_schools, kl_budget_bits=40)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pargs = (torch.as_tensor(SCHOOL_SIGMA), torch.as_tensor(SCHOOL_Y))
    pguide(*pargs)
    store = pyro.get_param_store()
    store["AutoMeanKL.locs.tau"] = torch.tensor(1.2)
    store["AutoMeanKL.scales.tau"] = torch.tensor(0.4)
    est, se = pguide.kl_outside(*pargs, num_samples=2000)["tau"]
    assert abs(float(est) - ref) < 4 * float(se), (est, se, ref)


# -- 3. names: the model's own site names, for every network style --------------------


def _numpyro_latent(model, *args):
    tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(*args)
    return {n for n, s in tr.items() if s["type"] == "sample" and not s["is_observed"]}


@pytest.mark.parametrize("kind", ["linen", "nnx", "eqx"])
def test_numpyro_names_are_the_models_own(kind):
    from ppl_hw import devices
    from ppl_hw.arviz import from_guide
    from ppl_hw.numpyro.handlers import crossbar

    from .test_crossbar_networks import X as X3
    from .test_crossbar_networks import n_foreign

    model, y3 = n_foreign(kind), X3[:, 0]
    latent = _numpyro_latent(model, X3, y3)
    assert any("/" in n for n in latent)  # the module's scope is in the names
    guide = NAutoNormal(model)
    svi = SVI(model, guide, optax.adam(1e-2), TraceMeanField_ELBO())
    params = svi.run(jax.random.key(0), 20, X3, y3, progress_bar=False).params
    idata = from_guide(model, guide, params, X3, y3, num_samples=4)
    assert set(idata.posterior.data_vars) == latent
    comp = coding.encode(guide, params, bits_per_block=8)
    assert {n for n, _ in comp.sites} | set(comp.point_sites) == latent
    assert comp.point_sites == ("sigma",)
    chip = crossbar(model, device=devices.PCM(), record=True)
    post = guide.sample_posterior(jax.random.key(1), params, sample_shape=(2,))
    with pytest.warns() if kind == "eqx" else _no_warning():  # eqx: vmap noise
        out = Predictive(chip, posterior_samples=post)(jax.random.key(2), X3)
    recorded = {k[: -len("_chip")] for k in out if k.endswith("_chip")}
    assert recorded == latent - {"sigma"} == chip.weight_sites


class _no_warning:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("error")

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def test_pyro_names_are_the_models_own():
    from ppl_hw import devices
    from ppl_hw.arviz import from_guide
    from ppl_hw.pyro.handlers import crossbar

    model = TorchMLP()
    x, y = torch.as_tensor(X), torch.as_tensor(Y)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    tr = pyro.poutine.trace(model).get_trace(x, y)
    latent = {n for n in tr.stochastic_nodes if n != "data"}
    assert latent == {"fc.weight", "fc.bias", "out.weight", "out.bias", "sigma"}
    guide = PAutoNormal(model)
    svi = pyro.infer.SVI(
        model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.TraceMeanField_ELBO()
    )
    for _ in range(5):
        svi.step(x, y)
    idata = from_guide(model, guide, x, y, num_samples=4)
    assert set(idata.posterior.data_vars) == latent
    comp = coding.encode(guide, bits_per_block=8)
    assert {n for n, _ in comp.sites} | set(comp.point_sites) == latent
    chip = crossbar(model, device=devices.PCM(), record=True)
    with torch.no_grad():
        out = pyro.infer.Predictive(chip, guide=guide, num_samples=2)(x)
    recorded = {k[: -len("_chip")] for k in out if k.endswith("_chip")}
    assert recorded == latent - {"sigma"}


# -- 4. the Pyro coder reads what the user trained -------------------------------------


def test_pyro_encode_reads_the_param_store_after_clear_and_load(tmp_path):
    model = TorchMLP()
    x, y = torch.as_tensor(X), torch.as_tensor(Y)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = pag.AutoMeanKL(
        model,
        kl_budget_bits=60,
        init_loc_fn=pyro.infer.autoguide.init_to_uniform(radius=SMALL_INIT),
    )
    svi = pyro.infer.SVI(
        model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.TraceMeanField_ELBO()
    )
    for _ in range(30):
        svi.step(x, y)
    path = tmp_path / "params.pt"
    pyro.get_param_store().save(path)
    saved = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    for _ in range(30):  # the guide moves on ...
        svi.step(x, y)
    moved = coding.encode(guide, bits_per_block=8)
    # ... the user reloads the saved state: encode codes the loaded values
    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"the param store lacks .*fc\.weight"):
        coding.encode(guide, bits_per_block=8)
    pyro.get_param_store().load(path)
    loaded = coding.encode(guide, bits_per_block=8)
    reference = coding.encode(guide, saved, bits_per_block=8)
    assert loaded._to_bytes() == reference._to_bytes() != moved._to_bytes()
    for name, value in coding.decode(loaded).items():
        np.testing.assert_array_equal(value, coding.decode(reference)[name])
    # sigma is stored: the loaded median, bit for bit in float32
    # (HalfNormal's support is positive: biject_to is exp)
    sigma = torch.exp(saved["AutoMeanKL.locs.sigma"])
    np.testing.assert_array_equal(dict(loaded.points)["sigma"], sigma.numpy())
    # wrong or partial params are refused, naming the sites
    partial = {k: v for k, v in saved.items() if "out." not in k}
    with pytest.raises(ValueError, match=r"params lacks .*'out\.bias', 'out\.weight'"):
        coding.encode(guide, partial, bits_per_block=8)
    with pytest.raises(TypeError, match="params must be None"):
        coding.encode(guide, [1, 2], bits_per_block=8)
    # AutoNormal likewise
    pyro.clear_param_store()
    normal = PAutoNormal(model)
    normal(x, y)
    state = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    pyro.clear_param_store()
    with pytest.raises(ValueError, match="param store lacks"):
        coding.encode(normal, bits_per_block=8)
    assert coding.encode(normal, state, bits_per_block=8).point_sites == ("sigma",)


def test_numpyro_encode_refuses_wrong_params_naming_them():
    guide = nag.AutoMeanKL(
        n_plain,
        kl_budget_bits=60,
        init_loc_fn=numpyro.infer.init_to_uniform(radius=SMALL_INIT),
    )
    svi = SVI(n_plain, guide, optax.adam(1e-2), TraceMeanField_ELBO())
    params = svi.get_params(svi.init(jax.random.key(0), X, Y))
    partial = {k: v for k, v in params.items() if not k.startswith("w2")}
    with pytest.raises(ValueError, match=r"params lacks .*w2_auto_m"):
        coding.encode(guide, partial)
    with pytest.raises(ValueError, match=r"params lacks .*sigma_auto_loc"):
        coding.encode(guide, {k: v for k, v in params.items() if "sigma" not in k})


# -- 5. the other guides on a model with a constrained, non-Normal site ----------------


def n_binary_regression(x, y=None):
    import ppl_hw.numpyro.nn as nnn

    w = numpyro.sample("w", ndist.Normal(0, 1).expand([2, 16]).to_event(2))
    scale = numpyro.sample("scale", ndist.LogNormal(0, 1).expand([16]).to_event(1))
    w2 = numpyro.sample("w2", ndist.Normal(0, 1).expand([16]).to_event(1))
    sigma = numpyro.sample("sigma", ndist.HalfNormal(1.0))
    mu = numpyro.deterministic("mu", jnp.tanh(nnn.binary_dense(x, w, scale)) @ w2)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", ndist.Normal(mu, sigma), obs=y)


def p_binary_regression(x, y=None):
    import ppl_hw.pyro.nn as pnn

    w = pyro.sample("w", pdist.Normal(0.0, 1.0).expand([2, 16]).to_event(2))
    scale = pyro.sample("scale", pdist.LogNormal(0.0, 1.0).expand([16]).to_event(1))
    w2 = pyro.sample("w2", pdist.Normal(0.0, 1.0).expand([16]).to_event(1))
    sigma = pyro.sample("sigma", pdist.HalfNormal(1.0))
    mu = pyro.deterministic("mu", torch.tanh(pnn.binary_dense(x, w, scale)) @ w2)
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", pdist.Normal(mu, sigma), obs=y)


def test_other_guides_on_a_noise_scale_work_or_refuse_clearly():
    """AutoDeviceNoise (sigma through AutoNormal's bijection), AutoScaleDropout and
    AutoDiscreteWeight (point estimates in the support) train on models with a
    HalfNormal sigma; without scale sites AutoScaleDropout refuses naming the
    remedy, without discrete sites AutoDiscreteWeight says so."""
    from ppl_hw import devices
    from ppl_hw.numpyro.infer import PFP_ELBO as NPFP

    noise = devices.mtj_noise(2000, seed=0)
    cases = [
        (nag.AutoDeviceNoise(n_plain, noise=NNoise(noise)), n_plain),
        (nag.AutoScaleDropout(n_binary_regression, p=0.2), n_binary_regression),
    ]
    for guide, model in cases:
        svi = SVI(model, guide, optax.adam(1e-2), TraceMeanField_ELBO())
        run = svi.run(jax.random.key(0), 200, X, Y, progress_bar=False)
        assert np.all(np.isfinite(run.losses)), type(guide).__name__
        assert run.losses[-20:].mean() < run.losses[:20].mean()
        assert float(guide.median(run.params)["sigma"]) > 0
    with pytest.raises(ValueError, match=r"no scale sites among .*scale_sites=\["):
        guide = nag.AutoScaleDropout(n_plain, p=0.2)
        SVI(n_plain, guide, optax.adam(1e-2), TraceMeanField_ELBO()).init(
            jax.random.key(0), X, Y
        )
    with pytest.raises(ValueError, match="AutoDiscreteWeight found no DiscreteW"):
        guide = nag.AutoDiscreteWeight(n_plain)
        NPFP().loss(jax.random.key(0), {}, n_plain, guide, X, Y)

    def ternary_regression(x, y=None):
        from ppl_hw.numpyro.distributions import DiscreteWeight

        grid = DiscreteWeight(np.array([-1.0, 0.0, 1.0]), probs=np.ones(3) / 3)
        w = numpyro.sample("w", grid.expand([2, 1]).to_event(2))
        sigma = numpyro.sample("sigma", ndist.HalfNormal(1.0))
        import ppl_hw.numpyro.nn as nnn

        # the PFP's moments become one Gaussian draw per output (sample_logits)
        mu = nnn.sample_logits(nnn.dense(x, w))[:, 0]
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", ndist.Normal(mu, sigma), obs=y)

    # ternary weights with a HalfNormal sigma: sigma is a point estimate in its
    # support, trained through the probabilistic forward pass
    guide = nag.AutoDiscreteWeight(ternary_regression)
    svi = SVI(ternary_regression, guide, optax.adam(5e-2), NPFP())
    run = svi.run(jax.random.key(0), 300, X, Y, progress_bar=False)
    assert np.all(np.isfinite(run.losses))
    assert run.losses[-20:].mean() < run.losses[:20].mean()
    assert float(run.params["sigma_auto_loc"]) > 0

    x, y = torch.as_tensor(X), torch.as_tensor(Y)
    pcases = [
        (
            pag.AutoDeviceNoise(p_plain, noise=PNoise(noise)),
            p_plain,
        ),
        (pag.AutoScaleDropout(p_binary_regression, p=0.2), p_binary_regression),
    ]
    for guide, model in pcases:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        svi = pyro.infer.SVI(
            model,
            guide,
            pyro.optim.Adam({"lr": 1e-2}),
            pyro.infer.TraceMeanField_ELBO(),
        )
        losses = [svi.step(x, y) for _ in range(100)]
        assert np.all(np.isfinite(losses)), type(guide).__name__
        assert float(guide.median()["sigma"]) > 0
    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"no scale sites among .*scale_sites=\["):
        pag.AutoScaleDropout(p_plain, p=0.2)(x, y)


# -- 6. every guide on a network made by bnn.bayesian ------------------------------------


def test_every_guide_on_a_bayesian_network_from_a_users_module():
    """A torch ``nn.Sequential`` (Pyro) and a flax linen MLP (NumPyro) made Bayesian
    by ``bnn.bayesian`` with a learned noise scale: AutoNormal, AutoMeanKL and
    AutoDeviceNoise train (finite, decreasing loss), AutoMeanKL codes the weights and
    stores ``sigma``, AutoScaleDropout refuses naming the remedy."""
    from ppl_hw import devices
    from ppl_hw.numpyro.bnn import bayesian as nbayesian
    from ppl_hw.pyro.bnn import bayesian as pbayesian

    noise = devices.mtj_noise(2000, seed=0)
    nmodel = nbayesian(LinenMLP(), ndist.Normal(0.0, 1.0), likelihood="normal")
    init = numpyro.infer.init_to_uniform(radius=SMALL_INIT)
    for guide in (
        NAutoNormal(nmodel),
        nag.AutoMeanKL(nmodel, kl_budget_bits=80, init_loc_fn=init),
        nag.AutoDeviceNoise(nmodel, noise=NNoise(noise)),
    ):
        svi = SVI(nmodel, guide, optax.adam(1e-2), TraceMeanField_ELBO())
        run = svi.run(jax.random.key(0), 300, X, Y, progress_bar=False)
        assert np.all(np.isfinite(run.losses)), type(guide).__name__
        assert run.losses[-20:].mean() < run.losses[:20].mean(), type(guide).__name__
    mk = nag.AutoMeanKL(nmodel, kl_budget_bits=80, init_loc_fn=init)
    svi = SVI(nmodel, mk, optax.adam(1e-2), TraceMeanField_ELBO())
    params = svi.run(jax.random.key(0), 100, X, Y, progress_bar=False).params
    assert mk.outside_sites == {"sigma": "HalfNormal prior (not Normal)"}
    comp = coding.encode(mk, params, bits_per_block=8)
    assert set(coding.decode(comp)) == set(nmodel.site_names(X)) | {"sigma"}
    with pytest.raises(ValueError, match=r"no scale sites among .*scale_sites"):
        SVI(
            nmodel,
            nag.AutoScaleDropout(nmodel, p=0.1),
            optax.adam(1e-2),
            TraceMeanField_ELBO(),
        ).init(jax.random.key(0), X, Y)

    net = torch.nn.Sequential(
        torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1)
    )
    pmodel = pbayesian(net, pdist.Normal(0.0, 1.0), likelihood="normal")
    x, y = torch.as_tensor(X), torch.as_tensor(Y)
    pinit = pyro.infer.autoguide.init_to_uniform(radius=SMALL_INIT)
    for guide in (
        PAutoNormal(pmodel),
        pag.AutoMeanKL(pmodel, kl_budget_bits=80, init_loc_fn=pinit),
        pag.AutoDeviceNoise(pmodel, noise=PNoise(noise)),
    ):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        svi = pyro.infer.SVI(
            pmodel,
            guide,
            pyro.optim.Adam({"lr": 1e-2}),
            pyro.infer.TraceMeanField_ELBO(),
        )
        losses = [svi.step(x, y) for _ in range(100)]
        assert np.all(np.isfinite(losses)), type(guide).__name__
        assert np.mean(losses[-20:]) < np.mean(losses[:20]), type(guide).__name__
    comp = coding.encode(_trained_meankl(pmodel, x, y, pinit), bits_per_block=8)
    assert set(coding.decode(comp)) == set(pmodel.site_names()) | {"sigma"}
    pyro.clear_param_store()
    with pytest.raises(ValueError, match=r"no scale sites among .*scale_sites"):
        pag.AutoScaleDropout(pmodel, p=0.1)(x, y)


def _trained_meankl(pmodel, x, y, init):
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = pag.AutoMeanKL(pmodel, kl_budget_bits=80, init_loc_fn=init)
    svi = pyro.infer.SVI(
        pmodel, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.TraceMeanField_ELBO()
    )
    for _ in range(20):
        svi.step(x, y)
    assert guide.outside_sites == {"sigma": "HalfNormal prior (not Normal)"}
    return guide
