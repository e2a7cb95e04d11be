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
