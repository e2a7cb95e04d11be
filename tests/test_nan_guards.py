"""Nothing trains or codes on NaN silently (issue "Nothing silent"):

- ppl_hw's guides raise ``FloatingPointError`` naming the site and the parameter when
  what they hand a sample site is not finite — so SVI stops at the step after a NaN
  loss (NumPyro: under ``jit``, re-raised by JAX carrying the message; Pyro: eager);
- ``encode`` refuses a posterior with a non-finite mean or a scale that is not
  finite and positive, naming the site, before any block is drawn.

The NaNs are put into the parameters by hand (the state a NaN gradient step leaves),
so each test knows which site and which values are bad: that is the reference."""

from __future__ import annotations

import math

import numpy as np
import pytest

import ppl_hw.coding as coding


def _numpyro_model():
    import numpyro
    import numpyro.distributions as dist

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3, 2]).to_event(2))
        s = numpyro.sample("s", dist.HalfNormal(1.0))
        numpyro.sample("y", dist.Normal(x @ w, s).to_event(2), obs=y)

    return model


def _pyro_model():
    import pyro
    import pyro.distributions as dist

    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3, 2]).to_event(2))
        s = pyro.sample("s", dist.HalfNormal(1.0))
        pyro.sample("y", dist.Normal(x @ w, s).to_event(2), obs=y)

    return model


X = np.linspace(-1.0, 1.0, 15, dtype=np.float32).reshape(5, 3)
Y = np.ones((5, 2), np.float32)


def _numpyro_guides():
    import ppl_hw.numpyro.autoguide as pg
    from ppl_hw.devices import gaussian_noise
    from ppl_hw.numpyro.distributions import EmpiricalNoise

    model = _numpyro_model()
    noise = EmpiricalNoise(gaussian_noise(400))
    return model, {
        "AutoMeanKL": (pg.AutoMeanKL(model, kl_budget_bits=30.0), "w_auto_m"),
        "AutoDeviceNoise": (pg.AutoDeviceNoise(model, noise=noise), "w_auto_loc"),
        "AutoScaleDropout": (
            pg.AutoScaleDropout(model, p=0.2, scale_sites=["s"]),
            "w_auto_loc",
        ),
    }


@pytest.fixture(scope="module")
def numpyro_trained():
    """``{guide name: (guide, svi, state after one step, the w parameter's name)}``
    (shared: a guide's set-up compiles many small programs)."""
    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO

    model, guides = _numpyro_guides()
    x, y = jnp.asarray(X), jnp.asarray(Y)
    out = {}
    for name in ("AutoMeanKL", "AutoDeviceNoise", "AutoScaleDropout"):
        guide, param = guides[name]
        svi = SVI(model, guide, numpyro.optim.Adam(1e-2), Trace_ELBO())
        state = svi.init(jax.random.PRNGKey(0), x, y)
        state, loss = svi.update(state, x, y)  # a finite step passes the guard
        assert np.isfinite(float(loss))
        out[name] = (guide, svi, state, param)
    return out


@pytest.mark.parametrize("name", ["AutoMeanKL", "AutoDeviceNoise", "AutoScaleDropout"])
def test_numpyro_svi_stops_on_nan_parameters_naming_the_site(numpyro_trained, name):
    import jax
    import jax.numpy as jnp
    import numpyro

    guide, svi, state, param = numpyro_trained[name]
    x, y = jnp.asarray(X), jnp.asarray(Y)
    params = svi.optim.get_params(state.optim_state)
    params[param] = params[param].at[1, 0].set(jnp.nan)
    state = state._replace(optim_state=svi.optim.init(params))
    with pytest.raises(Exception, match=rf"{name}: non-finite guide parameters") as e:
        jax.block_until_ready(svi.update(state, x, y))
    assert "site 'w'" in str(e.value)
    assert "1 of 6 values" in str(e.value)
    if name == "AutoScaleDropout":  # eagerly (no jit): the FloatingPointError itself
        with pytest.raises(FloatingPointError, match=r"site 'w'"):
            numpyro.handlers.seed(
                numpyro.handlers.substitute(guide, data=svi.get_params(state)), 0
            )(x, y)


def test_numpyro_guard_costs_nothing_under_vmap_of_finite_values():
    """Under ``vmap`` the guard's ``cond`` becomes a select that runs the callback
    for every batch: finite values must still pass (the callback checks again)."""
    import jax
    import jax.numpy as jnp

    from ppl_hw.numpyro._backend import guard_finite

    def f(v):
        guard_finite("G", {("w", "loc"): v})
        return jnp.sum(v)

    out = jax.jit(jax.vmap(f))(jnp.ones((4, 3)))
    np.testing.assert_array_equal(np.asarray(out), np.full(4, 3.0))
    with pytest.raises(Exception, match=r"G: non-finite guide parameters"):
        jax.block_until_ready(
            jax.jit(jax.vmap(f))(jnp.ones((4, 3)).at[2, 1].set(jnp.inf))
        )


@pytest.mark.parametrize("name", ["AutoMeanKL", "AutoDeviceNoise", "AutoScaleDropout"])
def test_pyro_svi_stops_on_nan_parameters_naming_the_site(name):
    import pyro
    import torch
    from pyro.infer import SVI, Trace_ELBO

    import ppl_hw.pyro.autoguide as pg
    from ppl_hw.devices import gaussian_noise
    from ppl_hw.pyro.distributions import EmpiricalNoise

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    model = _pyro_model()
    guide = {
        "AutoMeanKL": lambda: pg.AutoMeanKL(model, kl_budget_bits=30.0),
        "AutoDeviceNoise": lambda: pg.AutoDeviceNoise(
            model, noise=EmpiricalNoise(gaussian_noise(400))
        ),
        "AutoScaleDropout": lambda: pg.AutoScaleDropout(
            model, p=0.2, scale_sites=["s"]
        ),
    }[name]()
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    x, y = torch.as_tensor(X), torch.as_tensor(Y)
    assert math.isfinite(svi.step(x, y))
    store = pyro.get_param_store()
    (key,) = [
        k
        for k in store.keys()
        if k.endswith(".w") and ("ms" in k or "locs" in k or "values" in k)
    ]
    with torch.no_grad():
        store.get_param(key).unconstrained()[1, 0] = float("nan")
    with pytest.raises(FloatingPointError, match=rf"{name}: non-finite") as e:
        svi.step(x, y)
    assert "site 'w'" in str(e.value)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize(
    "param, value, words",
    [
        ("loc", math.nan, ["site 'w'", "posterior mean must be finite", "nan"]),
        ("scale", 0.0, ["site 'w'", "posterior scale must be finite and > 0", "0.0"]),
        ("scale", math.inf, ["site 'w'", "posterior scale", "inf"]),
    ],
)
def test_encode_refuses_a_posterior_it_cannot_code(backend, param, value, words):
    """AutoNormal parameters edited to NaN / 0 / inf at one weight: refused naming
    the site, the count and the first bad index (formerly "cannot convert float NaN
    to integer" or an ``OverflowError``)."""
    if backend == "numpyro":
        import jax
        import jax.numpy as jnp
        import numpyro
        from numpyro.infer import SVI, Trace_ELBO
        from numpyro.infer.autoguide import AutoNormal

        model = _numpyro_model()
        guide = AutoNormal(model)
        svi = SVI(model, guide, numpyro.optim.Adam(1e-2), Trace_ELBO())
        params = svi.run(
            jax.random.PRNGKey(0), 3, jnp.asarray(X), jnp.asarray(Y), progress_bar=False
        ).params
        params = dict(params)
        params[f"w_auto_{param}"] = params[f"w_auto_{param}"].at[2, 1].set(value)
        with pytest.raises(ValueError) as e:
            coding.encode(guide, params)
    else:
        import pyro
        import torch
        from pyro.infer import SVI, Trace_ELBO
        from pyro.infer.autoguide import AutoNormal

        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        model = _pyro_model()
        guide = AutoNormal(model)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
        for _ in range(3):
            svi.step(torch.as_tensor(X), torch.as_tensor(Y))
        params = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
        params[f"AutoNormal.{param}s.w"][2, 1] = value
        with pytest.raises(ValueError) as e:
            coding.encode(guide, params)
    message = str(e.value)
    for word in words:
        assert word in message, (word, message)
    assert "1 of 6 values, the first at index (2, 1)" in message


def test_numpyro_meankl_with_a_nan_mean_is_not_coded(numpyro_trained):
    """The issue's case: an AutoMeanKL whose mean went NaN used to encode and decode
    to NaN weights."""
    import jax.numpy as jnp

    guide, svi, state, _ = numpyro_trained["AutoMeanKL"]
    params = svi.get_params(state)
    params = {**params, "w_auto_m": params["w_auto_m"].at[0, 0].set(jnp.nan)}
    with pytest.raises(ValueError, match=r"cannot code site 'w': its posterior mean"):
        coding.encode(guide, params)


def test_a_candidate_at_infinity_is_never_chosen():
    """A uniform word of exactly 1 gives ``z = +inf`` and a NaN score (odds 2**-53
    per word); the encoder's argmax skips it (reference: ``np.nanargmax``)."""
    import ppl_hw.core.coding as cc

    w = np.array([[0.1], [np.inf], [0.4], [0.2]])
    mu, sigma, nu, rho = np.array([0.5]), np.array([0.3]), np.zeros(1), np.ones(1)
    with np.errstate(all="raise"):  # no RuntimeWarning either
        scores = cc._gaussian_logpdf_ratio(w, mu, sigma, nu, rho)
    assert np.isnan(scores[1]) and np.isfinite(scores[[0, 2, 3]]).all()
    chosen = int(np.argmax(cc._finite_scores(scores)))
    assert chosen == int(np.nanargmax(scores)) == 2
