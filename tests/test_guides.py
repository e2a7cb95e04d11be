"""The autoguides on both backends: the one-line swap on the digits BNN, Mean-KL's
budget by construction, device-noise shapes, scale dropout, MeanVarAnnealing,
``from_guide`` and bad input."""

import functools
import math
import warnings

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import pytest
import scipy.special as sps
import torch

import ppl_hw.numpyro.autoguide as nag
import ppl_hw.pyro.autoguide as pag
from ppl_hw import devices, metrics
from ppl_hw.arviz import from_guide
from ppl_hw.core.backend import NUMPY
from ppl_hw.core.meankl import block_log_kappa
from ppl_hw.datasets import load_digits
from ppl_hw.numpyro.distributions import EmpiricalNoise as NNoise
from ppl_hw.numpyro.infer import MeanVarAnnealing as NMeanVar
from ppl_hw.numpyro.models import binary_mlp_classifier as nbinary
from ppl_hw.numpyro.models import mlp_classifier as nmlp
from ppl_hw.pyro.distributions import EmpiricalNoise as PNoise
from ppl_hw.pyro.infer import MeanVarAnnealing as PMeanVar
from ppl_hw.pyro.models import binary_mlp_classifier as pbinary
from ppl_hw.pyro.models import mlp_classifier as pmlp

DATA = load_digits()
MTJ = devices.mtj_noise(10_000, seed=0)


def _numpyro_train(model, guide, steps, lr=1e-2, elbo=None, n=None):
    x, y = jnp.asarray(DATA.x_train[:n]), jnp.asarray(DATA.y_train[:n])
    svi = numpyro.infer.SVI(
        model,
        guide,
        numpyro.optim.Adam(lr),
        elbo or numpyro.infer.TraceMeanField_ELBO(),
    )
    return svi.run(jax.random.PRNGKey(0), steps, x, y, progress_bar=False).params


def _numpyro_accuracy(model, guide, params, num_samples=50):
    pred = numpyro.infer.Predictive(
        model,
        guide=guide,
        params=params,
        num_samples=num_samples,
        return_sites=["logits"],
    )
    probs = jax.nn.softmax(
        pred(jax.random.PRNGKey(1), jnp.asarray(DATA.x_test))["logits"], -1
    ).mean(0)
    return metrics.accuracy(probs, DATA.y_test)


def _pyro_train(model, guide, steps, lr=1e-2, elbo=None, n=None):
    pyro.set_rng_seed(0)
    x, y = torch.as_tensor(DATA.x_train[:n]), torch.as_tensor(DATA.y_train[:n])
    svi = pyro.infer.SVI(
        model,
        guide,
        pyro.optim.Adam({"lr": lr}),
        elbo or pyro.infer.TraceMeanField_ELBO(),
    )
    for _ in range(steps):
        svi.step(x, y)


def _pyro_accuracy(model, guide, num_samples=50):
    with torch.no_grad():
        pred = pyro.infer.Predictive(
            model, guide=guide, num_samples=num_samples, return_sites=["logits"]
        )
        probs = torch.softmax(pred(torch.as_tensor(DATA.x_test))["logits"], -1).mean(0)
    return metrics.accuracy(probs.numpy(), DATA.y_test)


GUIDES = {
    "AutoNormal": (
        lambda m: numpyro.infer.autoguide.AutoNormal(m),
        lambda m: pyro.infer.autoguide.AutoNormal(
            m, init_loc_fn=pyro.infer.autoguide.init_to_uniform
        ),
    ),
    "AutoMeanKL": (
        lambda m: nag.AutoMeanKL(m, kl_budget_bits=20_000),
        lambda m: pag.AutoMeanKL(m, kl_budget_bits=20_000),
    ),
    "AutoDeviceNoise": (
        lambda m: nag.AutoDeviceNoise(m, noise=NNoise(MTJ)),
        lambda m: pag.AutoDeviceNoise(m, noise=PNoise(MTJ)),
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(GUIDES))
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_one_line_swap_reaches_90_percent_on_the_digits(backend, name):
    if backend == "numpyro":
        guide = GUIDES[name][0](nmlp)
        # the identical SVI call for every guide; 600 steps reach 96-97 % on both
        # backends (measured), well clear of the 90 % the test asks
        params = _numpyro_train(nmlp, guide, 600)
        acc = _numpyro_accuracy(nmlp, guide, params)
    else:
        guide = GUIDES[name][1](pmlp)
        _pyro_train(pmlp, guide, 600)
        acc = _pyro_accuracy(pmlp, guide)
    assert acc >= 0.90, (backend, name, acc)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_binary_network_with_scale_dropout_reaches_85_percent(backend):
    if backend == "numpyro":
        model = functools.partial(nbinary, prior_scale=10.0)
        guide = nag.AutoScaleDropout(model, p=0.5, share_across_layers=True)
        # 800 steps: 94.7 % (NumPyro) and 96.4 % (Pyro) measured, against 85 %
        params = _numpyro_train(model, guide, 800, elbo=numpyro.infer.Trace_ELBO())
        acc = _numpyro_accuracy(model, guide, params, num_samples=20)
    else:
        model = functools.partial(pbinary, prior_scale=10.0)
        guide = pag.AutoScaleDropout(model, p=0.5, share_across_layers=True)
        _pyro_train(model, guide, 800, elbo=pyro.infer.Trace_ELBO())
        acc = _pyro_accuracy(model, guide, num_samples=20)
    assert acc >= 0.85, acc


def _kl_float64(locs_scales, priors):
    """The KL recomputed in float64 by the host's own kl_divergence."""
    from numpyro.distributions.kl import kl_divergence

    total = 0.0
    with jax.enable_x64(True):
        for name, (loc, scale) in locs_scales.items():
            nu, rho = priors[name]
            q = ndist.Normal(
                jnp.asarray(np.asarray(loc), jnp.float64),
                jnp.asarray(np.asarray(scale), jnp.float64),
            )
            p = ndist.Normal(jnp.asarray(nu), jnp.asarray(rho))
            total += float(jnp.sum(kl_divergence(q, p)))
    return total


@pytest.mark.parametrize("split", ["learned", "equal"])
def test_numpyro_meankl_budget_holds_at_init_and_after_training(split):
    # an equal split needs ~26 000 bits to hold init_to_uniform's means (radius 2)
    bits = 20_000 if split == "learned" else 30_000
    guide = nag.AutoMeanKL(nmlp, kl_budget_bits=bits, budget_split=split)
    x, y = jnp.asarray(DATA.x_train[:200]), jnp.asarray(DATA.y_train[:200])
    svi = numpyro.infer.SVI(
        nmlp, guide, numpyro.optim.Adam(3e-2), numpyro.infer.TraceMeanField_ELBO()
    )
    state = svi.init(jax.random.PRNGKey(0), x, y)
    budget = bits * math.log(2)
    for params in (
        svi.get_params(state),
        svi.get_params(
            svi.run(
                jax.random.PRNGKey(1), 200, x, y, progress_bar=False, init_state=state
            ).state
        ),
    ):
        assert _kl_float64(guide.loc_scale(params), guide.priors) == pytest.approx(
            budget, rel=1e-5
        )
        total, per_site = guide.kl(params)
        assert float(total) == pytest.approx(budget, rel=1e-5)
        assert set(per_site) == {f"{k}{i}" for i in range(3) for k in ("w", "b")}


def test_pyro_meankl_budget_holds_at_init_and_after_training():
    guide = pag.AutoMeanKL(pmlp, kl_budget_nats=15_000.0)
    x, y = torch.as_tensor(DATA.x_train[:200]), torch.as_tensor(DATA.y_train[:200])
    guide(x, y)
    budget = 15_000.0
    for step in (0, 200):
        if step:
            _pyro_train(pmlp, guide, step, lr=3e-2, n=200)
        assert _kl_float64(guide.loc_scale(), guide.priors) == pytest.approx(
            budget, rel=1e-5
        )
        assert float(guide.kl()[0]) == pytest.approx(budget, rel=1e-5)


def _block_kl_bits(guide, loc_scale):
    """Each coding block's KL (bits) in float64 from (mu, sigma), in the coding
    order (sorted site names) that ``guide.blocks`` refers to."""
    names = sorted(loc_scale)
    mu, sigma, nu, rho = (
        np.concatenate(
            [
                np.broadcast_to(
                    np.asarray(a[n], np.float64), np.shape(loc_scale[n][0])
                ).reshape(-1)
                for n in names
            ]
        )
        for a in (
            {n: loc_scale[n][0] for n in names},
            {n: loc_scale[n][1] for n in names},
            {n: guide.priors[n][0] for n in names},
            {n: guide.priors[n][1] for n in names},
        )
    )
    kl = np.log(rho / sigma) + (sigma**2 + (mu - nu) ** 2) / (2 * rho**2) - 0.5
    return np.bincount(guide.blocks.block_of, kl) / math.log(2)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_meankl_blocks_fix_every_blocks_kl_at_init_and_after_training(backend):
    # 12 000 bits in 8-bit blocks: 1 500 blocks of ~6 weights, each exactly 8 bits
    kw = dict(kl_budget_bits=12_000, budget_split="blocks", bits_per_block=8)
    n = 200
    if backend == "numpyro":
        guide = nag.AutoMeanKL(nmlp, block_seed=3, **kw)
        x, y = jnp.asarray(DATA.x_train[:n]), jnp.asarray(DATA.y_train[:n])
        svi = numpyro.infer.SVI(
            nmlp, guide, numpyro.optim.Adam(3e-2), numpyro.infer.TraceMeanField_ELBO()
        )
        state = svi.init(jax.random.PRNGKey(0), x, y)
        run = svi.run(
            jax.random.PRNGKey(1), 200, x, y, progress_bar=False, init_state=state
        )
        snapshots = [guide.loc_scale(svi.get_params(s)) for s in (state, run.state)]
    else:
        guide = pag.AutoMeanKL(pmlp, block_seed=3, **kw)
        guide(torch.as_tensor(DATA.x_train[:n]), torch.as_tensor(DATA.y_train[:n]))
        snapshots = [guide.loc_scale()]
        _pyro_train(pmlp, guide, 200, lr=3e-2, n=n)
        snapshots.append(guide.loc_scale())
    assert guide.blocks.num_blocks == 1_500 and guide.blocks.seed == 3
    first = np.asarray(snapshots[0]["w0"][0])
    assert not np.allclose(first, np.asarray(snapshots[1]["w0"][0]))  # it trained
    for ls in snapshots:
        np.testing.assert_allclose(_block_kl_bits(guide, ls), 8.0, rtol=2e-5)


def test_meankl_blocks_are_the_same_on_both_backends():
    kw = dict(kl_budget_bits=12_000, budget_split="blocks", bits_per_block=8)
    ng, pg = nag.AutoMeanKL(nmlp, **kw), pag.AutoMeanKL(pmlp, **kw)
    x, y = DATA.x_train[:20], DATA.y_train[:20]
    numpyro.handlers.seed(ng, 0)(jnp.asarray(x), jnp.asarray(y))
    pg(torch.as_tensor(x), torch.as_tensor(y))
    assert ng.blocks.sizes == pg.blocks.sizes
    np.testing.assert_array_equal(ng.blocks.block_of, pg.blocks.block_of)
    # the same logits per site give the same log kappa per site, although NumPyro
    # flattens the sites in sorted order and Pyro in model order
    rng = np.random.default_rng(0)
    phi = {
        n: rng.normal(size=s)
        for n, s in zip(sorted(ng.priors), ng.blocks.sizes, strict=True)
    }
    out = []
    for bs in (ng._block_split, pg._block_split):
        flat = np.concatenate([phi[n] for n in bs.names])
        lk = block_log_kappa(
            flat, bs.index, bs.pad, bs.block_of, bs.log_cb, special=NUMPY.special
        )
        out.append(
            dict(
                zip(
                    bs.names,
                    np.split(lk, np.cumsum([phi[n].size for n in bs.names])[:-1]),
                    strict=True,
                )
            )
        )
    assert ng._block_split.names != pg._block_split.names
    for n in phi:
        np.testing.assert_array_equal(out[0][n], out[1][n])
    # a reference softmax per block, in the coding order
    flat = np.concatenate([phi[n] for n in sorted(phi)])
    ref = np.empty_like(flat)
    for b in range(ng.blocks.num_blocks):
        idx = ng.blocks.members(b)
        ref[idx] = flat[idx] - sps.logsumexp(flat[idx])
    got = np.concatenate([out[0][n] for n in sorted(phi)])
    np.testing.assert_allclose(got, ng._block_split.log_cb + ref, rtol=1e-12)


def test_meankl_sigma_agrees_with_scipy_lambertw_on_both_backends():
    ng = nag.AutoMeanKL(nmlp, kl_budget_bits=20_000)
    x, y = jnp.asarray(DATA.x_train[:50]), jnp.asarray(DATA.y_train[:50])
    params = (
        numpyro.infer.SVI(
            nmlp, ng, numpyro.optim.Adam(1e-2), numpyro.infer.Trace_ELBO()
        )
        .init(jax.random.PRNGKey(0), x, y)
        .optim_state
    )
    params = {k: v for k, v in ng._init_m.items()}
    phis = ng._init_phi
    lse = np.logaddexp.reduce(
        np.concatenate([np.asarray(v, np.float64).ravel() for v in phis.values()])
    )
    for name, m in params.items():
        m = np.asarray(m, np.float64)
        kappa = ng.budget * np.exp(np.asarray(phis[name], np.float64) - lse)
        _, rho = ng.priors[name]
        c = 1 + 2 * kappa / np.cosh(m) ** 2
        sigma_ref = rho * np.sqrt(-sps.lambertw(-np.exp(-c), 0).real)
        full = {f"{k}_auto_m": v for k, v in ng._init_m.items()} | {
            f"{k}_auto_phi": v for k, v in ng._init_phi.items()
        }
        _, sigma = ng.loc_scale(full)[name]
        np.testing.assert_allclose(np.asarray(sigma), sigma_ref, rtol=2e-5)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_meankl_gradients_finite_at_tiny_kappa_and_saturated_tanh(backend):
    m = np.array([0.0, 0.3, 40.0, -40.0, 1e3])  # tanh(m) = ±1 exactly in float32
    log_kappa = np.log(np.array([1e-8, 1e-8, 2.0, 2.0, 1e-8]))
    if backend == "numpyro":

        def f(m, lk):
            loc, scale = nag._mk.meankl_loc_scale(
                m, lk, 0.0, 1.0, xp=jnp, log_ratio_fn=nag._log_ratio
            )
            return jnp.sum(loc + scale)

        gm, gk = jax.grad(f, argnums=(0, 1))(
            jnp.asarray(m, jnp.float32), jnp.asarray(log_kappa, jnp.float32)
        )
        grads = np.concatenate([np.asarray(gm), np.asarray(gk)])
    else:
        mt = torch.tensor(m, dtype=torch.float32, requires_grad=True)
        lk = torch.tensor(log_kappa, dtype=torch.float32, requires_grad=True)
        loc, scale = pag._mk.meankl_loc_scale(
            mt, lk, 0.0, 1.0, xp=pag._xp, log_ratio_fn=pag._LogRatio.apply
        )
        (loc + scale).sum().backward()
        grads = np.concatenate([mt.grad.numpy(), lk.grad.numpy()])
    assert np.all(np.isfinite(grads)), grads


def test_backends_agree_on_meankl_loc_scale():
    from .helpers import TOL

    rng = np.random.default_rng(0)
    m, lk = rng.normal(size=50), rng.uniform(-6, 2, size=50)
    nu, rho = rng.normal(size=50), np.exp(rng.normal(size=50) * 0.3)
    with jax.enable_x64(True):
        a = nag._mk.meankl_loc_scale(
            *(jnp.asarray(v) for v in (m, lk, nu, rho)),
            xp=jnp,
            log_ratio_fn=nag._log_ratio,
        )
        a = [np.asarray(v) for v in a]
    b = pag._mk.meankl_loc_scale(
        *(torch.as_tensor(v) for v in (m, lk, nu, rho)),
        xp=pag._xp,
        log_ratio_fn=pag._LogRatio.apply,
    )
    for u, v in zip(a, b, strict=True):
        np.testing.assert_allclose(u, v.numpy(), **TOL[np.float64])


def test_device_noise_guides_use_the_shape_and_the_closed_form_kl():
    guide = nag.AutoDeviceNoise(nmlp, noise=NNoise(MTJ))
    params = _numpyro_train(nmlp, guide, 5, n=50)
    tr = numpyro.handlers.trace(
        numpyro.handlers.seed(numpyro.handlers.substitute(guide, data=params), 0)
    ).get_trace(jnp.asarray(DATA.x_train[:50]))
    assert type(tr["w0"]["fn"].base_dist).__name__ == "DeviceNoise"
    u = guide.with_noise(NNoise(devices.uniform_noise(10_000, seed=0)))
    assert (
        u.noise is not guide.noise
        and guide.median(params).keys() == u.median(params).keys()
    )
    # skewed shape: the median is not the location
    med = guide.median(params)["w0"]
    assert not np.allclose(med, params["w0_auto_loc"])
    np.testing.assert_allclose(guide.quantiles(params, [0.5])["w0"][0], med, rtol=1e-6)
    pg = pag.AutoDeviceNoise(pmlp, noise=PNoise(MTJ))
    xy = torch.as_tensor(DATA.x_train[:50]), torch.as_tensor(DATA.y_train[:50])
    pg(*xy)
    ptr = pyro.poutine.trace(pg).get_trace(*xy)
    assert type(ptr.nodes["w0"]["fn"].base_dist).__name__ == "DeviceNoise"
    assert pg.with_noise(PNoise(MTJ)).median()["w0"].shape == (64, 64)


@pytest.mark.parametrize("share, expected", [(False, 3), (True, 1)])
def test_num_stochastic_units_counted_from_a_trace(share, expected):
    x, y = DATA.x_train[:20], DATA.y_train[:20]
    ng = nag.AutoScaleDropout(nbinary, p=0.3, share_across_layers=share)
    assert ng.num_stochastic_units(jnp.asarray(x), jnp.asarray(y)) == expected
    assert (
        ng.without_dropout().num_stochastic_units(jnp.asarray(x), jnp.asarray(y)) == 0
    )
    pg = pag.AutoScaleDropout(pbinary, p=0.3, share_across_layers=share)
    assert pg.num_stochastic_units(torch.as_tensor(x), torch.as_tensor(y)) == expected


def test_scale_dropout_masks_scales_as_documented():
    x, y = jnp.asarray(DATA.x_train[:20]), jnp.asarray(DATA.y_train[:20])
    for dropped in ("zero", "one"):
        g = nag.AutoScaleDropout(nbinary, p=0.5, dropped=dropped)
        params = _numpyro_train(nbinary, g, 1, elbo=numpyro.infer.Trace_ELBO(), n=20)
        seen = set()
        for seed in range(40):
            tr = numpyro.handlers.trace(
                numpyro.handlers.seed(numpyro.handlers.substitute(g, data=params), seed)
            ).get_trace(x, y)
            site = tr["scale1"]
            b = float(site["infer"]["scale_dropout"]["mask"])
            alpha = params["scale1_auto_loc"]
            expected = alpha * b / 0.5 if dropped == "zero" else b * alpha + (1 - b)
            np.testing.assert_allclose(site["value"], expected, rtol=1e-6)
            np.testing.assert_array_equal(
                tr["w1"]["value"], params["w1_auto_loc"]
            )  # weights untouched
            seen.add(b)
        assert seen == {0.0, 1.0}


def _logits_with_scales(backend, model, values, x, scales_to_one):
    """The model's logits at fixed site values, the scale sites set to 1 when
    ``scales_to_one`` (a dropped scale under ``dropped="one"``)."""
    values = {
        k: (v * 0 + 1 if scales_to_one and k.startswith("scale") else v)
        for k, v in values.items()
    }
    if backend == "numpyro":
        tr = numpyro.handlers.trace(
            numpyro.handlers.seed(numpyro.handlers.substitute(model, data=values), 0)
        ).get_trace(x)
        return np.asarray(tr["logits"]["value"])
    tr = pyro.poutine.trace(pyro.poutine.condition(model, data=values)).get_trace(x)
    return tr.nodes["logits"]["value"].detach().numpy()


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_mc_scale_dropout_averages_t_passes_of_one_stochastic_unit(backend):
    """What MC-Scale-Dropout guarantees, by construction: with one shared stochastic
    unit, each of the T passes is the trained network with every scale kept (b = 1)
    or every scale bypassed (b = 0), so the MC prediction is
    (k/T) softmax(keep) + (1 - k/T) softmax(drop) with k ~ Binomial(T, 1 - p)
    (binomial test, false-alarm rate 1e-3). Whether this lowers ECE is a seed-spread
    claim measured by examples/scale_dropout.py (docs/reproductions.md)."""
    from scipy.stats import binomtest

    T, p = 200, 0.5
    model = functools.partial(
        nbinary if backend == "numpyro" else pbinary, hidden=(16, 16)
    )
    sites = ["scale0", "scale1", "scale2"]
    if backend == "numpyro":
        guide = nag.AutoScaleDropout(model, p=p, share_across_layers=True)
        x = jnp.asarray(DATA.x_test[:30])
        svi = numpyro.infer.SVI(
            model, guide, numpyro.optim.Adam(1e-2), numpyro.infer.Trace_ELBO()
        )
        xy = jnp.asarray(DATA.x_train[:50]), jnp.asarray(DATA.y_train[:50])
        params = svi.get_params(svi.init(jax.random.PRNGKey(0), *xy))
        # scales away from their initial value 1, so kept and bypassed differ
        params = {
            k: v + 0.5 * jax.random.uniform(jax.random.PRNGKey(i), v.shape)
            if k.startswith("scale")
            else v
            for i, (k, v) in enumerate(sorted(params.items()))
        }
        out = numpyro.infer.Predictive(
            model,
            guide=guide,
            params=params,
            num_samples=T,
            return_sites=["logits", *sites],
        )(jax.random.PRNGKey(3), x)
        out = {k: np.asarray(v) for k, v in out.items()}
        values = guide.without_dropout().median(params)
    else:
        guide = pag.AutoScaleDropout(model, p=p, share_across_layers=True)
        _pyro_train(model, guide, 5, elbo=pyro.infer.Trace_ELBO(), n=50)
        x = torch.as_tensor(DATA.x_test[:30])
        with torch.no_grad():
            out = pyro.infer.Predictive(
                model, guide=guide, num_samples=T, return_sites=["logits", *sites]
            )(x)
            values = {k: v.detach() for k, v in guide.without_dropout()(x).items()}
        out = {k: v.detach().numpy() for k, v in out.items()}
    keep = _logits_with_scales(backend, model, values, x, scales_to_one=False)
    drop = _logits_with_scales(backend, model, values, x, scales_to_one=True)
    alpha = {k: np.asarray(values[k]) for k in sites}
    b = np.empty(T)
    for t in range(T):
        kept = [np.allclose(out[k][t], alpha[k], rtol=1e-6) for k in sites]
        dropped = [np.allclose(out[k][t], 1.0, rtol=1e-6) for k in sites]
        # one stochastic unit: every layer kept together or bypassed together
        assert all(kept) or all(dropped), (t, kept, dropped)
        b[t] = float(all(kept))
        np.testing.assert_allclose(
            out["logits"][t], keep if b[t] else drop, rtol=1e-5, atol=1e-5
        )
    k = int(b.sum())
    assert binomtest(k, T, 1 - p).pvalue > 1e-3, k
    mc = sps.softmax(out["logits"], -1).mean(0)
    expected = (k / T) * sps.softmax(keep, -1) + (1 - k / T) * sps.softmax(drop, -1)
    np.testing.assert_allclose(mc, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_mean_var_annealing_drives_the_kl_to_the_budget(backend):
    n = 100
    budget_bits = 2000.0
    if backend == "numpyro":
        g = numpyro.infer.autoguide.AutoNormal(nmlp)
        mv = NMeanVar(
            nmlp, g, numpyro.optim.Adam(1e-2), kl_budget_bits=budget_bits, epsilon=0.05
        )
        res = mv.run(
            jax.random.PRNGKey(0),
            800,
            jnp.asarray(DATA.x_train[:n]),
            jnp.asarray(DATA.y_train[:n]),
            progress_bar=False,
        )
        kl, beta, blocks = (
            np.asarray(res.block_kl),
            np.asarray(res.state.beta),
            mv.blocks,
        )
    else:
        g = pyro.infer.autoguide.AutoNormal(
            pmlp, init_loc_fn=pyro.infer.autoguide.init_to_uniform
        )
        mv = PMeanVar(
            pmlp,
            g,
            pyro.optim.Adam({"lr": 1e-2}),
            kl_budget_bits=budget_bits,
            epsilon=0.05,
        )
        for _ in range(800):
            mv.step(
                torch.as_tensor(DATA.x_train[:n]), torch.as_tensor(DATA.y_train[:n])
            )
        kl, beta, blocks = mv.block_kl().numpy(), mv.beta.numpy(), mv.blocks
    assert blocks.num_blocks == 200  # one block per 10 bits
    # the annealed penalties hold the KL at (or below) the budget ...
    assert kl.sum() <= 1.1 * budget_bits * math.log(2)
    assert beta.shape == (200,) and np.all(beta > 0)


def test_mean_var_without_annealing_overshoots_the_budget():
    # ... which the data alone would not: with the penalties frozen near 1e-8, the
    # KL of the same training ends far above it
    g = numpyro.infer.autoguide.AutoNormal(nmlp)
    mv = NMeanVar(
        nmlp, g, numpyro.optim.Adam(1e-2), kl_budget_bits=2000.0, epsilon=1e-9
    )
    res = mv.run(
        jax.random.PRNGKey(0),
        800,
        jnp.asarray(DATA.x_train[:100]),
        jnp.asarray(DATA.y_train[:100]),
        progress_bar=False,
    )
    assert float(res.block_kl.sum()) > 2 * 2000.0 * math.log(2)


def test_mean_var_anneal_rule():
    from ppl_hw.common.infer import anneal

    beta = np.array([1.0, 1.0, 2.0])
    out = anneal(beta, np.array([5.0, 1.0, 3.0]), 2.0, 0.5, xp=np)
    np.testing.assert_allclose(out, [1.5, 1 / 1.5, 3.0])


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_from_guide_uses_the_models_trained_params(backend):
    # y ~ Normal(w + b, 1) with a model-side param b: the log likelihood must use
    # the trained b, checked against scipy at the posterior draws
    import scipy.stats

    y = np.array([4.0, 5.0, 6.0], np.float32)
    if backend == "numpyro":

        def model(y=None):
            b = numpyro.param("b", jnp.zeros(()))
            w = numpyro.sample("w", ndist.Normal(0.0, 1.0))
            with numpyro.plate("n", 3):
                numpyro.sample("y", ndist.Normal(w + b, 1.0), obs=y)

        guide = numpyro.infer.autoguide.AutoNormal(model)
        svi = numpyro.infer.SVI(
            model, guide, numpyro.optim.Adam(0.1), numpyro.infer.Trace_ELBO()
        )
        params = svi.run(
            jax.random.PRNGKey(0), 300, jnp.asarray(y), progress_bar=False
        ).params
        b = float(params["b"])
        idata = from_guide(model, guide, params, jnp.asarray(y), num_samples=20)
    else:
        pyro.clear_param_store()
        pyro.set_rng_seed(0)

        def model(y=None):
            b = pyro.param("b", torch.zeros(()))
            w = pyro.sample("w", pdist.Normal(0.0, 1.0))
            with pyro.plate("n", 3):
                pyro.sample("y", pdist.Normal(w + b, 1.0), obs=y)

        guide = pyro.infer.autoguide.AutoNormal(model)
        svi = pyro.infer.SVI(
            model, guide, pyro.optim.Adam({"lr": 0.1}), pyro.infer.Trace_ELBO()
        )
        for _ in range(300):
            svi.step(torch.as_tensor(y))
        b = float(pyro.param("b").detach())
        idata = from_guide(model, guide, torch.as_tensor(y), num_samples=20)
    assert b > 1.0  # trained away from its initial 0
    w = idata.posterior["w"].values[0]
    ref = scipy.stats.norm(w[:, None] + b, 1.0).logpdf(y)
    np.testing.assert_allclose(idata.log_likelihood["y"].values[0], ref, rtol=1e-4)


def test_from_guide_runs_summary_and_loo_on_both_backends():
    n = 150
    guide = nag.AutoMeanKL(nmlp, kl_budget_bits=20_000)
    params = _numpyro_train(nmlp, guide, 100, n=n)
    idata = from_guide(
        nmlp,
        guide,
        params,
        jnp.asarray(DATA.x_train[:n]),
        jnp.asarray(DATA.y_train[:n]),
        num_samples=50,
    )
    assert set(idata.groups()) >= {
        "posterior",
        "posterior_predictive",
        "log_likelihood",
        "observed_data",
    }
    assert idata.posterior["w0"].shape == (1, 50, 64, 64)
    assert idata.log_likelihood["y"].shape == (1, 50, n)
    assert not az.summary(idata, var_names=["b2"]).empty
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore", UserWarning
        )  # Pareto-k warnings: a BNN on 150 points
        loo = az.loo(idata)
    assert np.isfinite(loo.elpd_loo)
    pg = pag.AutoMeanKL(pmlp, kl_budget_bits=20_000)
    _pyro_train(pmlp, pg, 100, n=n)
    pid = from_guide(
        pmlp,
        pg,
        torch.as_tensor(DATA.x_train[:n]),
        torch.as_tensor(DATA.y_train[:n]),
        num_samples=30,
    )
    assert pid.log_likelihood["y"].shape == (1, 30, n)
    assert not az.summary(pid, var_names=["b2"]).empty
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        assert np.isfinite(az.loo(pid).elpd_loo)
    np.testing.assert_array_equal(pid.observed_data["y"], DATA.y_train[:n])


def _discrete_model(x, y=None):
    numpyro.sample("k", ndist.Categorical(probs=jnp.ones(3) / 3))
    numpyro.sample("w", ndist.Normal(0.0, 1.0))


def _discrete_pmodel(x, y=None):
    pyro.sample("k", pdist.Categorical(probs=torch.ones(3) / 3))
    pyro.sample("w", pdist.Normal(0.0, 1.0))


def _gamma_model(x, y=None):
    numpyro.sample("w", ndist.Gamma(2.0, 1.0))


def _gamma_pmodel(x, y=None):
    pyro.sample("w", pdist.Gamma(2.0, 1.0))


def _bad_cases():
    x = (DATA.x_train[:20], DATA.y_train[:20])
    return [
        (
            "zero budget",
            lambda b: (nag if b == "numpyro" else pag).AutoMeanKL(
                nmlp, kl_budget_bits=0
            ),
            ValueError,
            "kl_budget_bits must be > 0, got 0",
        ),
        (
            "negative budget",
            lambda b: (nag if b == "numpyro" else pag).AutoMeanKL(
                nmlp, kl_budget_nats=-3.0
            ),
            ValueError,
            r"kl_budget_nats must be > 0, got -3.0",
        ),
        (
            "both budgets",
            lambda b: (nag if b == "numpyro" else pag).AutoMeanKL(
                nmlp, kl_budget_bits=1, kl_budget_nats=1
            ),
            ValueError,
            "exactly one of kl_budget_bits or kl_budget_nats",
        ),
        (
            "bad split",
            lambda b: (nag if b == "numpyro" else pag).AutoMeanKL(
                nmlp, kl_budget_bits=10, budget_split="block"
            ),
            ValueError,
            "budget_split must be one of",
        ),
        (
            "bits_per_block without blocks",
            lambda b: (nag if b == "numpyro" else pag).AutoMeanKL(
                nmlp, kl_budget_bits=10, bits_per_block=16
            ),
            ValueError,
            "bits_per_block is only used with budget_split='blocks', got "
            "bits_per_block=16 with budget_split='learned'",
        ),
        (
            "block_seed without blocks",
            lambda b: (nag if b == "numpyro" else pag).AutoMeanKL(
                nmlp, kl_budget_bits=10, budget_split="equal", block_seed=1
            ),
            ValueError,
            "block_seed is only used with budget_split='blocks'",
        ),
        (
            "bits_per_block 25",
            lambda b: (nag if b == "numpyro" else pag).AutoMeanKL(
                nmlp, kl_budget_bits=10, budget_split="blocks", bits_per_block=25
            ),
            ValueError,
            "bits_per_block must be in 1..24, got 25",
        ),
        (
            "bits_per_block float",
            lambda b: (nag if b == "numpyro" else pag).AutoMeanKL(
                nmlp, kl_budget_bits=10, budget_split="blocks", bits_per_block=8.0
            ),
            TypeError,
            "bits_per_block must be an int, got 8.0",
        ),
        (
            "negative block_seed",
            lambda b: (nag if b == "numpyro" else pag).AutoMeanKL(
                nmlp, kl_budget_bits=10, budget_split="blocks", block_seed=-1
            ),
            ValueError,
            "block_seed must be an int >= 0, got -1",
        ),
        (
            "budget too small",
            lambda b: _setup(b, "mk_small", x),
            ValueError,
            r"too small for the mean constraint .* needs at least",
        ),
        (
            "non-Normal prior",
            lambda b: _setup(b, "gamma", x),
            ValueError,
            r"has none \('w': Gamma prior \(not Normal\)\); use AutoNormal",
        ),
        (
            "discrete site",
            lambda b: _setup(b, "discrete", x),
            ValueError,
            r"(continuous guide; site 'k' is discrete|cannot handle discrete sample site 'k')",
        ),
        (
            "noise not EmpiricalNoise",
            lambda b: (nag if b == "numpyro" else pag).AutoDeviceNoise(nmlp, noise=MTJ),
            TypeError,
            r"noise must be a ppl_hw\..*EmpiricalNoise, got ndarray",
        ),
        (
            "p above 1",
            lambda b: (nag if b == "numpyro" else pag).AutoScaleDropout(nbinary, p=1.0),
            ValueError,
            r"p must be in \[0, 1\), got 1.0",
        ),
        (
            "p negative",
            lambda b: (nag if b == "numpyro" else pag).AutoScaleDropout(
                nbinary, p=-0.1
            ),
            ValueError,
            r"p must be in \[0, 1\), got -0.1",
        ),
        (
            "bad dropped",
            lambda b: (nag if b == "numpyro" else pag).AutoScaleDropout(
                nbinary, p=0.1, dropped="half"
            ),
            ValueError,
            "dropped must be one of",
        ),
        (
            "no scale sites",
            lambda b: _setup(b, "no_scales", x),
            ValueError,
            "found no scale sites",
        ),
    ]


def _setup(backend, which, x):
    if backend == "numpyro":
        builders = {
            "mk_small": lambda: nag.AutoMeanKL(nmlp, kl_budget_bits=50),
            "gamma": lambda: nag.AutoMeanKL(_gamma_model, kl_budget_bits=100),
            "discrete": lambda: nag.AutoDeviceNoise(_discrete_model, noise=NNoise(MTJ)),
            "no_scales": lambda: nag.AutoScaleDropout(nmlp, p=0.1),
        }
        g = builders[which]()
        numpyro.handlers.seed(g, 0)(*(jnp.asarray(a) for a in x))
    else:
        models = {
            "mk_small": pmlp,
            "gamma": _gamma_pmodel,
            "discrete": _discrete_pmodel,
            "no_scales": pmlp,
        }
        builders = {
            "mk_small": lambda: pag.AutoMeanKL(pmlp, kl_budget_bits=50),
            "gamma": lambda: pag.AutoMeanKL(_gamma_pmodel, kl_budget_bits=100),
            "discrete": lambda: pag.AutoDeviceNoise(
                _discrete_pmodel, noise=PNoise(MTJ)
            ),
            "no_scales": lambda: pag.AutoScaleDropout(pmlp, p=0.1),
        }
        del models
        builders[which]()(*(torch.as_tensor(a) for a in x))


@pytest.mark.parametrize("case", [c[0] for c in _bad_cases()])
@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_bad_input(case, backend):
    _, build, exc, match = next(c for c in _bad_cases() if c[0] == case)
    with pytest.raises(exc, match=match):
        build(backend)
