"""The crossbar handler on both backends: identity when every effect is off, exactly
one perturbation per model site, the same chip on both backends, composition with
the hosts' handlers, and clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import pytest
import torch
from numpyro.infer import Predictive as NPredictive

import ppl_hw.numpyro.nn as nnn
import ppl_hw.pyro.nn as pnn
from ppl_hw import devices
from ppl_hw.common.handlers import CrossbarSpec, chip_draws_numpy
from ppl_hw.core import NUMPY
from ppl_hw.core import crossbar as cx
from ppl_hw.numpyro.distributions import DiscreteWeight as NDiscrete
from ppl_hw.numpyro.handlers import crossbar as ncrossbar
from ppl_hw.pyro.distributions import DiscreteWeight as PDiscrete
from ppl_hw.pyro.poutine import crossbar as pcrossbar

RNG = np.random.default_rng(0)
X = RNG.normal(size=(5, 6)).astype(np.float32)
QUIET_PCM = devices.PCM(read_noise=None, out_noise=0.0)  # a deterministic chip


def nmodel(x, y=None):
    w = numpyro.sample("w", ndist.Normal(0.0, 1.0).expand([6, 4]).to_event(2))
    t = numpyro.sample(
        "t", NDiscrete((-1.0, 0.0, 1.0), logits=jnp.zeros((4, 3, 3))).to_event(2)
    )
    s = numpyro.sample("s", ndist.HalfNormal(1.0))  # positive: not a default site
    with numpyro.plate("data", x.shape[0]):
        h = nnn.dense(x, w)
        logits = numpyro.deterministic("logits", nnn.dense(h, t) * s)
        numpyro.sample("y", ndist.Categorical(logits=logits), obs=y)


def pmodel(x, y=None):
    w = pyro.sample("w", pdist.Normal(0.0, 1.0).expand([6, 4]).to_event(2))
    t = pyro.sample(
        "t", PDiscrete((-1.0, 0.0, 1.0), logits=torch.zeros((4, 3, 3))).to_event(2)
    )
    s = pyro.sample("s", pdist.HalfNormal(1.0))
    with pyro.plate("data", x.shape[0]):
        h = pnn.dense(x, w)
        logits = pyro.deterministic("logits", pnn.dense(h, t) * s)
        pyro.sample("y", pdist.Categorical(logits=logits), obs=y)


def ntrace(fn, key=0, **kw):
    tr = numpyro.handlers.trace(numpyro.handlers.seed(fn, key)).get_trace(
        jnp.asarray(X), **kw
    )
    return {
        k: np.asarray(v["value"])
        for k, v in tr.items()
        if v["type"] in ("sample", "deterministic")
    }


def ptrace(fn, seed=0, **kw):
    pyro.set_rng_seed(seed)
    tr = pyro.poutine.trace(fn).get_trace(torch.as_tensor(X), **kw)
    return {
        k: v["value"].detach().numpy()
        for k, v in tr.nodes.items()
        if v["type"] in ("sample", "deterministic")
    }


OFF = [
    devices.Ideal(),
    devices.PCM(
        programming=None,
        drift=None,
        read_noise=None,
        dac_bits=None,
        adc_bits=None,
        out_noise=0.0,
    ),
]


@pytest.mark.parametrize("device", OFF, ids=["Ideal", "PCM-all-off"])
def test_every_effect_off_is_an_exact_identity(device):
    y = np.array([0, 1, 2, 0, 1])
    a, b = (
        ntrace(nmodel, y=jnp.asarray(y)),
        ntrace(ncrossbar(nmodel, device=device, t_inference=1e6), y=jnp.asarray(y)),
    )
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])  # bit-equal
    a, b = ptrace(pmodel), ptrace(pcrossbar(pmodel, device=device, t_inference=1e6))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_effects_on_change_weights_but_not_observed_deterministic_or_positive_sites():
    y = jnp.array([0, 1, 2, 0, 1])
    a = ntrace(nmodel, y=y)
    b = ntrace(
        ncrossbar(nmodel, device=devices.PCM(), t_inference=3600.0, record=True), y=y
    )
    assert not np.array_equal(a["w"], b["w_chip"]) and not np.array_equal(
        a["t"], b["t_chip"]
    )
    np.testing.assert_array_equal(a["w"], b["w"])  # the site keeps the intended value
    assert "s_chip" not in b  # HalfNormal: not real-valued, not a default site
    np.testing.assert_array_equal(a["y"], b["y"])  # observed
    assert not np.array_equal(a["logits"], b["logits"])  # recomputed from the chip


def _expected(value, name, device, seed, t, grid=None):
    spec = CrossbarSpec(device, None, t, seed, "once")
    chip = chip_draws_numpy(spec, name, value.shape, device)
    return NUMPY.bind(cx.crossbar_weights)(
        value.astype(np.float64), device, t, chip, {}, grid=grid
    )


def test_numpyro_predictive_perturbs_each_model_site_exactly_once():
    # a posterior given as samples (the MCMC route): the result must be f(sample)
    post = {"w": jnp.asarray(RNG.normal(size=(3, 6, 4)), jnp.float32)}
    chip = ncrossbar(
        nmodel, device=QUIET_PCM, t_inference=86_400.0, seed=3, sites=["w"], record=True
    )
    out = NPredictive(chip, posterior_samples=post, return_sites=["w", "w_chip"])(
        jax.random.PRNGKey(0), jnp.asarray(X)
    )
    np.testing.assert_array_equal(out["w"], post["w"])
    for i in range(3):
        np.testing.assert_allclose(
            out["w_chip"][i],
            _expected(np.asarray(post["w"][i]), "w", QUIET_PCM, 3, 86_400.0),
            rtol=2e-5,
            atol=1e-6,
        )
    assert chip.applications["w"] == 1  # traced once under vmap
    assert len(chip._chips) == 1  # one programming draw, reused by every sample


def test_numpyro_predictive_with_a_guide_touches_model_sites_only():
    def model(x):
        w = numpyro.sample("w", ndist.Normal(0.0, 1.0).expand([6, 4]).to_event(2))
        numpyro.deterministic("h", nnn.dense(x, w))

    guide = numpyro.infer.autoguide.AutoNormal(model)
    svi = numpyro.infer.SVI(
        model, guide, numpyro.optim.Adam(0.1), numpyro.infer.Trace_ELBO()
    )
    state = svi.init(jax.random.PRNGKey(0), jnp.asarray(X))
    params = svi.get_params(state)
    key = jax.random.PRNGKey(9)
    clean = NPredictive(
        model, guide=guide, params=params, num_samples=4, return_sites=["w"]
    )(key, jnp.asarray(X))
    chip = ncrossbar(model, device=QUIET_PCM, t_inference=60.0, seed=1, record=True)
    hw = NPredictive(
        chip, guide=guide, params=params, num_samples=4, return_sites=["w", "w_chip"]
    )(key, jnp.asarray(X))
    np.testing.assert_array_equal(hw["w"], clean["w"])
    for i in range(4):  # the guide's sample, perturbed once
        np.testing.assert_allclose(
            hw["w_chip"][i],
            _expected(np.asarray(clean["w"][i]), "w", QUIET_PCM, 1, 60.0),
            rtol=2e-5,
            atol=1e-6,
        )
    assert dict(chip.applications) == {"w": 1}


def test_pyro_predictive_perturbs_each_model_site_exactly_once():
    def model(x):
        w = pyro.sample("w", pdist.Normal(0.0, 1.0).expand([6, 4]).to_event(2))
        pyro.deterministic("h", pnn.dense(x, w))

    post = {"w": torch.as_tensor(RNG.normal(size=(3, 6, 4)), dtype=torch.float32)}
    chip = pcrossbar(model, device=QUIET_PCM, t_inference=86_400.0, seed=3, record=True)
    out = pyro.infer.Predictive(chip, posterior_samples=post, return_sites=["w_chip"])(
        torch.as_tensor(X)
    )
    for i in range(3):
        np.testing.assert_allclose(
            out["w_chip"][i].numpy(),
            _expected(post["w"][i].numpy(), "w", QUIET_PCM, 3, 86_400.0),
            rtol=2e-5,
            atol=1e-6,
        )


def test_pyro_predictive_with_a_guide_counts_one_application_per_sample():
    def model(x):
        w = pyro.sample("w", pdist.Normal(0.0, 1.0).expand([6, 4]).to_event(2))
        pyro.deterministic("h", pnn.dense(x, w))

    guide = pyro.infer.autoguide.AutoNormal(model)
    guide(torch.as_tensor(X))
    from ppl_hw.pyro.poutine import CrossbarMessenger

    msngr = CrossbarMessenger(device=QUIET_PCM, t_inference=60.0, seed=1, record=True)
    out = pyro.infer.Predictive(
        msngr(model), guide=guide, num_samples=5, return_sites=["w", "w_chip"]
    )(torch.as_tensor(X))
    for i in range(5):  # the guide's sample (conditioned by Predictive), perturbed once
        np.testing.assert_allclose(
            out["w_chip"][i].numpy(),
            _expected(out["w"][i].numpy(), "w", QUIET_PCM, 1, 60.0),
            rtol=2e-5,
            atol=1e-6,
        )
    assert set(msngr.applications) == {"w"}  # guide sites never
    assert len(msngr._chips) == 1  # one programming draw for the whole run


def test_same_chip_on_both_backends():
    w = RNG.normal(size=(6, 4)).astype(np.float32)
    grid_vals = RNG.choice([-1.0, 0.0, 1.0], size=(4, 3)).astype(np.float32)
    data = {"w": w, "t": grid_vals, "s": np.float32(1.3)}
    dev = devices.PCM(
        read_noise=None,
        stuck_at_0=0.05,
        stuck_at_1=0.02,
        out_noise=0.0,
        adc_bits=None,
        dac_bits=None,
    )
    a = ntrace(
        numpyro.handlers.substitute(
            ncrossbar(nmodel, device=dev, t_inference=1e5, seed=11, record=True),
            data={k: jnp.asarray(v) for k, v in data.items()},
        )
    )
    pyro_data = {k: torch.as_tensor(v) for k, v in data.items()}
    b = ptrace(
        pyro.poutine.condition(
            pcrossbar(pmodel, device=dev, t_inference=1e5, seed=11, record=True),
            data=pyro_data,
        )
    )
    for k in ("w_chip", "t_chip", "logits"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert not np.allclose(a["w_chip"], w)


def test_same_seed_same_run_different_seed_different_chip():
    dev = devices.PCM()
    kw = dict(device=dev, t_inference=10.0, record=True)
    a = ntrace(ncrossbar(nmodel, seed=0, **kw), key=4)
    b = ntrace(ncrossbar(nmodel, seed=0, **kw), key=4)
    c = ntrace(ncrossbar(nmodel, seed=1, **kw), key=4)
    np.testing.assert_array_equal(a["w_chip"], b["w_chip"])
    np.testing.assert_array_equal(a["logits"], b["logits"])
    assert not np.allclose(a["w_chip"], c["w_chip"])
    p = ptrace(pcrossbar(pmodel, seed=0, **kw), seed=4)
    q = ptrace(pcrossbar(pmodel, seed=0, **kw), seed=4)
    r = ptrace(pcrossbar(pmodel, seed=1, **kw), seed=4)
    np.testing.assert_array_equal(p["w_chip"], q["w_chip"])
    np.testing.assert_array_equal(p["logits"], q["logits"])
    assert not np.allclose(p["w_chip"], r["w_chip"])


def test_read_noise_is_fresh_per_read_and_chip_fixed_across_reads():
    dev = devices.PCM(programming=None, drift=None, out_noise=0.0)
    x = {"w": jnp.ones((6, 4))}
    chip = numpyro.handlers.substitute(
        ncrossbar(nmodel, device=dev, t_inference=10.0, record=True), data=x
    )
    a, b = ntrace(chip, key=1)["w_chip"], ntrace(chip, key=2)["w_chip"]
    assert not np.allclose(a, b)  # fresh read noise
    per = ncrossbar(
        nmodel,
        device=devices.PCM(read_noise=None),
        t_inference=10.0,
        reprogram="per_sample",
        record=True,
    )
    a = ntrace(numpyro.handlers.substitute(per, data=x), key=1)["w_chip"]
    b = ntrace(numpyro.handlers.substitute(per, data=x), key=2)["w_chip"]
    assert not np.allclose(a, b)  # a new chip per execution
    once = ncrossbar(
        nmodel, device=devices.PCM(read_noise=None), t_inference=10.0, record=True
    )
    a = ntrace(numpyro.handlers.substitute(once, data=x), key=1)["w_chip"]
    b = ntrace(numpyro.handlers.substitute(once, data=x), key=2)["w_chip"]
    np.testing.assert_array_equal(a, b)  # the same chip, no read noise


def test_composes_with_jit_vmap_condition_and_svi():
    chip = ncrossbar(nmodel, device=devices.PCM(), t_inference=100.0)

    def logits(key):
        tr = numpyro.handlers.trace(numpyro.handlers.seed(chip, key)).get_trace(
            jnp.asarray(X)
        )
        return tr["logits"]["value"]

    eager = logits(jax.random.PRNGKey(0))
    np.testing.assert_allclose(
        jax.jit(logits)(jax.random.PRNGKey(0)), eager, rtol=1e-5, atol=1e-5
    )
    batch = jax.vmap(logits)(jax.random.split(jax.random.PRNGKey(0), 3))
    assert batch.shape == (3, 5, 3) and not np.allclose(batch[0], batch[1])
    cond = numpyro.handlers.condition(chip, data={"s": 2.0})
    assert ntrace(cond)["s"] == 2.0
    # hardware-aware training: the handler inside SVI

    def reg(x, y):
        w = numpyro.sample("w", ndist.Normal(0.0, 1.0).expand([6, 1]).to_event(2))
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", ndist.Normal(nnn.dense(x, w)[:, 0], 0.1), obs=y)

    w_true = RNG.normal(size=(6, 1)).astype(np.float32)
    xs = RNG.uniform(-1, 1, size=(200, 6)).astype(np.float32)
    ys = (xs @ w_true)[:, 0]
    hw = ncrossbar(reg, device=devices.PCM(), t_inference=1.0)
    g = numpyro.infer.autoguide.AutoNormal(hw)
    svi = numpyro.infer.SVI(hw, g, numpyro.optim.Adam(0.05), numpyro.infer.Trace_ELBO())
    res = svi.run(
        jax.random.PRNGKey(0), 600, jnp.asarray(xs), jnp.asarray(ys), progress_bar=False
    )
    assert np.isfinite(res.losses).all()
    est = g.median(res.params)["w"]
    # learns through the chip; programming and read noise move each weight by a few
    # per cent of max|w| ~ 2, so the intended weights differ from w_true by ~0.1
    np.testing.assert_allclose(est, w_true, atol=0.25)


def test_pyro_composes_with_condition_and_svi():
    chip = pcrossbar(pmodel, device=devices.PCM(), t_inference=100.0)
    assert (
        ptrace(pyro.poutine.condition(chip, data={"s": torch.tensor(2.0)}))["s"] == 2.0
    )

    def reg(x, y):
        w = pyro.sample("w", pdist.Normal(0.0, 1.0).expand([6, 1]).to_event(2))
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", pdist.Normal(pnn.dense(x, w)[:, 0], 0.1), obs=y)

    w_true = RNG.normal(size=(6, 1)).astype(np.float32)
    xs = torch.as_tensor(RNG.uniform(-1, 1, size=(200, 6)).astype(np.float32))
    ys = (xs @ torch.as_tensor(w_true))[:, 0]
    hw = pcrossbar(reg, device=devices.PCM(), t_inference=1.0)
    g = pyro.infer.autoguide.AutoNormal(hw)
    svi = pyro.infer.SVI(hw, g, pyro.optim.Adam({"lr": 0.1}), pyro.infer.Trace_ELBO())
    for _ in range(300):
        loss = svi.step(xs, ys)
    assert np.isfinite(loss)
    np.testing.assert_allclose(g.median()["w"].detach().numpy(), w_true, atol=0.25)


def test_sites_selection_forms():
    dev = devices.PCM(read_noise=None)
    only_w = ntrace(ncrossbar(nmodel, device=dev, sites=["w"], record=True))
    assert "w_chip" in only_w and "t_chip" not in only_w
    per_site = ntrace(
        ncrossbar(
            nmodel,
            device=dev,
            sites={"t": devices.PCM(read_noise=None, stuck_at_1=0.5)},
            record=True,
        )
    )
    assert "w_chip" not in per_site and "t_chip" in per_site
    by_fn = ntrace(
        ncrossbar(
            nmodel,
            device=dev,
            sites=lambda msg: dev if msg["name"] == "w" else None,
            record=True,
        )
    )
    np.testing.assert_array_equal(by_fn["w_chip"], only_w["w_chip"])
    assert "t_chip" not in by_fn
    # a positive site may be asked for explicitly: mapped like any real array
    with pytest.raises(ValueError, match="support"):
        ntrace(ncrossbar(nmodel, device=dev, sites=["s"]))


def test_mtj_maps_binary_grids_and_binarized_sites():
    def model(x):
        numpyro.sample(
            "b", NDiscrete((-0.5, 0.5), logits=jnp.zeros((1000, 2))).to_event(1)
        )
        numpyro.sample("r", ndist.Normal(0.0, 1.0).expand([1000]).to_event(1))

    out = ntrace(
        ncrossbar(
            model, device=devices.MTJ(write_error_rate=0.1), sites=["b"], record=True
        )
    )
    assert (
        set(np.unique(out["b_chip"])) <= {-0.5, 0.5}
        and 0 < np.mean(out["b_chip"] != out["b"]) < 0.2
    )
    out = ntrace(ncrossbar(model, device=devices.MTJ(binarize=True), record=True))
    assert np.unique(out["r_chip"]).size == 2


def _bad_cases():
    return [
        (
            "unknown site",
            lambda m, cb: cb(m, device=devices.PCM(), sites=["w", "nope"]),
            ValueError,
            r"unknown site name\(s\) \['nope'\]; the model's latent sites are \['s', 't', 'w', 'y'\]",
        ),
        (
            "unknown dict site",
            lambda m, cb: cb(m, device=devices.PCM(), sites={"W": devices.PCM()}),
            ValueError,
            r"unknown site name\(s\) \['W'\]",
        ),
        (
            "negative time",
            lambda m, cb: cb(m, device=devices.PCM(), t_inference=-1.0),
            ValueError,
            r"t_inference must be >= 0 seconds, got -1.0",
        ),
        (
            "bit width 0",
            lambda m, cb: cb(m, device=devices.PCM(adc_bits=0)),
            ValueError,
            r"adc_bits must be >= 1 \(or None for off\), got 0",
        ),
        (
            "dac bits 0",
            lambda m, cb: cb(m, device=devices.PCM(dac_bits=0)),
            ValueError,
            r"dac_bits must be >= 1",
        ),
        (
            "gmax <= gmin",
            lambda m, cb: cb(m, device=devices.PCM(gmin=30.0)),
            ValueError,
            r"gmax must be > gmin, got gmax=25.0, gmin=30.0",
        ),
        (
            "rate above 1",
            lambda m, cb: cb(m, device=devices.PCM(stuck_at_0=1.5)),
            ValueError,
            r"stuck_at_0 must be <= 1, got 1.5",
        ),
        (
            "negative rate",
            lambda m, cb: cb(m, device=devices.MTJ(write_error_rate=-0.1)),
            ValueError,
            r"write_error_rate must be >= 0, got -0.1",
        ),
        (
            "rates sum above 1",
            lambda m, cb: cb(m, device=devices.PCM(stuck_at_0=0.6, stuck_at_1=0.6)),
            ValueError,
            r"stuck_at_0 \+ stuck_at_1 must be <= 1",
        ),
        (
            "MTJ on a real site",
            lambda m, cb: cb(m, device=devices.MTJ(), sites=["w"]),
            ValueError,
            r"MTJ has binary cells; site 'w' is real-valued: give it a 2-value DiscreteWeight prior or use binarize=True",
        ),
        (
            "MTJ on a 3-value grid",
            lambda m, cb: cb(m, device=devices.MTJ(), sites=["t"]),
            ValueError,
            r"site 't' has a 3-value grid \[-1.0, 0.0, 1.0\], it needs exactly 2",
        ),
        (
            "levels 1",
            lambda m, cb: cb(m, device=devices.PCM(levels=1)),
            ValueError,
            r"levels must be >= 2",
        ),
        (
            "not a device",
            lambda m, cb: cb(m, device="PCM"),
            TypeError,
            r"device must be a ppl_hw.config.Device",
        ),
        (
            "callable returns a non-Device",
            lambda m, cb: cb(m, device=devices.PCM(), sites=lambda msg: "PCM"),
            TypeError,
            r"sites\('w'\) must return a Device or None, got str",
        ),
        (
            "tile size 0",
            lambda m, cb: cb(m, device=devices.PCM(max_input_size=0)),
            ValueError,
            r"max_input_size must be >= 1, got 0",
        ),
        (
            "tile size not an int",
            lambda m, cb: cb(m, device=devices.PCM(max_output_size=256.0)),
            TypeError,
            r"max_output_size must be an int or None, got 256.0",
        ),
        (
            "bad reprogram",
            lambda m, cb: cb(m, device=devices.PCM(), reprogram="always"),
            ValueError,
            r"reprogram must be one of \['once', 'per_sample'\], got 'always'",
        ),
    ]


@pytest.mark.parametrize("case", [c[0] for c in _bad_cases()])
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_bad_input_raises_before_sampling(case, backend):
    _, build, exc, match = next(c for c in _bad_cases() if c[0] == case)
    calls = []
    if backend == "numpyro":

        def model(x, y=None):
            calls.append(1)
            return nmodel(x, y)

        with pytest.raises(exc, match=match):
            ntrace(build(model, ncrossbar))
    else:

        def model(x, y=None):
            calls.append(1)
            return pmodel(x, y)

        with pytest.raises(exc, match=match):
            ptrace(build(model, pcrossbar))
    # at most the dry trace (and NumPyro's abstract dependency pass) ran: nothing was
    # sampled for real
    assert len(calls) <= (2 if backend == "numpyro" else 1)


@pytest.mark.parametrize("stride, padding", [(1, 0), (2, 1), ((1, 2), (2, 0))])
def test_conv2d_exact_and_through_converters_on_both_backends(stride, padding):
    x = RNG.normal(size=(2, 3, 9, 8)).astype(np.float32)
    w = RNG.normal(size=(4, 3, 3, 2)).astype(np.float32)
    b = RNG.normal(size=4).astype(np.float32)
    ref = torch.nn.functional.conv2d(
        torch.as_tensor(x, dtype=torch.float64),
        torch.as_tensor(w, dtype=torch.float64),
        torch.as_tensor(b, dtype=torch.float64),
        stride=stride,
        padding=padding,
    ).numpy()
    a = np.asarray(
        nnn.conv2d(
            jnp.asarray(x),
            jnp.asarray(w),
            jnp.asarray(b),
            stride=stride,
            padding=padding,
        )
    )
    c = pnn.conv2d(
        torch.as_tensor(x),
        torch.as_tensor(w),
        torch.as_tensor(b),
        stride=stride,
        padding=padding,
    ).numpy()
    np.testing.assert_allclose(a, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(c, ref, rtol=1e-4, atol=1e-4)
    dev = devices.Ideal(dac_bits=5, adc_bits=8)  # deterministic converters

    def nconv(x):
        k = numpyro.sample("k", ndist.Normal(0.0, 1.0).expand(w.shape).to_event(4))
        numpyro.deterministic(
            "out", nnn.conv2d(x, k, b, stride=stride, padding=padding)
        )

    def pconv(x):
        k = pyro.sample("k", pdist.Normal(0.0, 1.0).expand(w.shape).to_event(4))
        pyro.deterministic("out", pnn.conv2d(x, k, b, stride=stride, padding=padding))

    b = jnp.asarray(b)
    tr = numpyro.handlers.trace(
        numpyro.handlers.substitute(
            numpyro.handlers.seed(ncrossbar(nconv, device=dev), 0),
            {"k": jnp.asarray(w)},
        )
    ).get_trace(jnp.asarray(x))
    qa = np.asarray(tr["out"]["value"])
    b = torch.as_tensor(np.array(b))
    tr = pyro.poutine.trace(
        pyro.poutine.condition(pcrossbar(pconv, device=dev), {"k": torch.as_tensor(w)})
    ).get_trace(torch.as_tensor(x))
    qc = tr.nodes["out"]["value"].numpy()
    np.testing.assert_allclose(qa, qc, rtol=1e-4, atol=1e-4)
    assert not np.allclose(qa, ref, atol=1e-3)  # the converters did act
    assert np.max(np.abs(qa - ref)) < 0.5 * np.abs(ref).max()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize(
    "device",
    [
        devices.PCM(),
        devices.RRAM(levels=9),
        devices.PCM(mapping="column", drift_compensation=True, stuck_at_0=0.1),
        devices.MTJ(binarize=True),
    ],
    ids=["PCM", "RRAM-levels", "PCM-column-comp-stuck", "MTJ"],
)
def test_core_weights_and_matvec_agree_on_the_same_noise(device, dtype):
    """The same pre-drawn noise (chip and read draws) through all three backends."""
    from .helpers import TOL, get_backend, precision, to_backend, to_numpy

    w = RNG.normal(size=(7, 5))
    x = RNG.normal(size=(3, 7))
    chip = {
        k: v
        for k, v in chip_draws_numpy(
            CrossbarSpec(device, None, 0.0, 0, "once"), "w", w.shape, device
        ).items()
    }
    g = np.random.default_rng(5)
    read = {
        k: (g.standard_normal(s) if cx.DRAW_KINDS[k] == "normal" else g.random(s))
        for k, s in cx.draw_shapes(device.read_draws, w.shape, device.binary).items()
    }
    out_draw = g.standard_normal((3, 5))
    results = {}
    for name in ("numpy", "numpyro", "pyro"):
        with precision(name, dtype):
            b = get_backend(name)
            conv = lambda a, name=name: to_backend(name, a, dtype)  # noqa: E731
            wt = b.bind(cx.crossbar_weights)(
                conv(w),
                device,
                3600.0,
                {k: conv(v) for k, v in chip.items()},
                {k: conv(v) for k, v in read.items()},
            )
            y = b.bind(cx.analog_matvec)(conv(x), wt, device, conv(out_draw))
            results[name] = (to_numpy(wt), to_numpy(y))
    ref_w, ref_y = results["numpy"]
    for name in ("numpyro", "pyro"):
        got_w, got_y = results[name]
        assert got_w.dtype == dtype
        np.testing.assert_allclose(got_w, ref_w.astype(dtype), **TOL[dtype])
        # the ADC rounds: a float32 value on a step boundary may land one step away
        step = 2 * device.out_bound / (2**device.adc_bits - 2) * np.abs(x).max()
        tol = TOL[dtype] if dtype == np.float64 else dict(rtol=1e-5, atol=step * 1.01)
        np.testing.assert_allclose(got_y, ref_y.astype(dtype), **tol)
