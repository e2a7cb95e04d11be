"""The ready-made models: same sites, shapes and numbers on both backends."""

import numpy as np
import pytest

from ppl_hw.datasets import load_digits

DATA = load_digits()
SHAPES = {"w0": (64, 32), "b0": (32,), "w1": (32, 10), "b1": (10,)}


def _numpyro_trace(params=None, batch_size=None, **kw):
    import jax
    from numpyro import handlers

    from ppl_hw.numpyro.models import mlp_classifier

    model = handlers.seed(mlp_classifier, jax.random.PRNGKey(0))
    if params is not None:
        model = handlers.condition(model, data=params)
    return handlers.trace(model).get_trace(
        DATA.x_train[:100],
        DATA.y_train[:100],
        hidden=(32,),
        batch_size=batch_size,
        **kw,
    )


def _pyro_trace(params=None, batch_size=None, **kw):
    import pyro
    import torch

    from ppl_hw.pyro.models import mlp_classifier

    model = mlp_classifier
    if params is not None:
        model = pyro.condition(
            model, data={k: torch.as_tensor(v) for k, v in params.items()}
        )
    return (
        pyro.poutine.trace(model)
        .get_trace(
            torch.as_tensor(DATA.x_train[:100]),
            torch.as_tensor(DATA.y_train[:100]),
            hidden=(32,),
            batch_size=batch_size,
            **kw,
        )
        .nodes
    )


def _sites(trace):
    from pyro.poutine.util import site_is_subsample

    return {
        n: s
        for n, s in trace.items()
        if s["type"] == "sample" and not s["is_observed"] and not site_is_subsample(s)
    }


@pytest.mark.parametrize(
    "get_trace", [_numpyro_trace, _pyro_trace], ids=["numpyro", "pyro"]
)
def test_sites_and_shapes(get_trace):
    tr = get_trace()
    latent = _sites(tr)
    assert {n: tuple(s["value"].shape) for n, s in latent.items()} == SHAPES
    assert tuple(tr["logits"]["value"].shape) == (100, 10)
    assert tr["y"]["is_observed"]


@pytest.mark.parametrize(
    "get_trace", [_numpyro_trace, _pyro_trace], ids=["numpyro", "pyro"]
)
def test_minibatch_scales_likelihood(get_trace):
    tr = get_trace(batch_size=25)
    assert tuple(tr["logits"]["value"].shape) == (25, 10)
    assert float(tr["y"]["scale"]) == pytest.approx(100 / 25)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_backends_compute_the_same_logits(activation):
    rng = np.random.default_rng(0)
    params = {k: rng.normal(size=v).astype(np.float32) for k, v in SHAPES.items()}
    a = np.asarray(_numpyro_trace(params, activation=activation)["logits"]["value"])
    b = _pyro_trace(params, activation=activation)["logits"]["value"].numpy()
    # reference: the MLP written out in float64 NumPy
    h = DATA.x_train[:100].astype(np.float64) @ params["w0"] + params["b0"]
    h = np.tanh(h) if activation == "tanh" else np.maximum(h, 0)
    ref = h @ params["w1"] + params["b1"]
    np.testing.assert_allclose(a, ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(b, ref, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "get_trace", [_numpyro_trace, _pyro_trace], ids=["numpyro", "pyro"]
)
@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"activation": "gelu"}, "activation must be one of"),
        ({"prior_scale": 0.0}, "prior_scale must be > 0, got 0.0"),
        ({"batch_size": 500}, r"batch_size must be in \[1, N=100\], got 500"),
        ({"num_classes": 1}, "num_classes must be >= 2, got 1"),
    ],
)
def test_bad_arguments(get_trace, kwargs, match):
    with pytest.raises(ValueError, match=match):
        get_trace(**kwargs)
