"""The crossbar handler on the networks users bring: the default sites are the
weights (never the likelihood), the converters act on flax (linen, nnx), equinox and
torch layers exactly as on ppl_hw's own layers, unroutable products warn, layouts
follow the framework, and drift compensation keeps a regression output's scale.

References: ppl_hw's own ``nn.dense`` (itself checked against the NumPy core in
tests/core), the NumPy core :func:`ppl_hw.core.crossbar.analog_matvec`, and exact
products of the same weights.
"""

import warnings

import equinox as eqx
import flax.linen as fnn
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import pytest
import torch
from flax import nnx
from numpyro.contrib.module import (
    random_eqx_module,
    random_flax_module,
    random_nnx_module,
)
from numpyro.infer import Predictive as NPredictive
from pyro.infer import Predictive as PPredictive
from pyro.nn import PyroModule, PyroSample

import ppl_hw.numpyro.nn as nnn
import ppl_hw.pyro.nn as pnn
from ppl_hw import devices
from ppl_hw.common.handlers import ConverterWarning
from ppl_hw.core import NUMPY
from ppl_hw.core import crossbar as cx
from ppl_hw.numpyro.handlers import crossbar as ncrossbar
from ppl_hw.pyro.handlers import crossbar as pcrossbar

RNG = np.random.default_rng(3)
X = RNG.normal(size=(16, 3)).astype(np.float32)
W1 = (RNG.normal(size=(3, 8)) * 0.7).astype(np.float32)  # (in, out)
B1 = (RNG.normal(size=8) * 0.1).astype(np.float32)
W2 = (RNG.normal(size=(8, 2)) * 0.5).astype(np.float32)
B2 = (RNG.normal(size=2) * 0.1).astype(np.float32)
CONVERTERS_ONLY = devices.PCM(programming=None, drift=None, read_noise=None)
WEIGHTS = {"w1", "b1", "w2", "b2"}


# -- 1. the default sites are the weights -------------------------------------------


def n_regression(x, y=None):
    w1 = numpyro.sample("w1", ndist.Normal(0, 1).expand([3, 8]).to_event(2))
    b1 = numpyro.sample("b1", ndist.Normal(0, 1).expand([8]).to_event(1))
    w2 = numpyro.sample("w2", ndist.Normal(0, 1).expand([8, 1]).to_event(2))
    b2 = numpyro.sample("b2", ndist.Normal(0, 1).expand([1]).to_event(1))
    sigma = numpyro.sample("sigma", ndist.HalfNormal(1.0))
    h = jnp.tanh(nnn.dense(x, w1, b1))
    mu = numpyro.deterministic("mu", nnn.dense(h, w2, b2)[..., 0])
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", ndist.Normal(mu, sigma), obs=y)


def p_regression(x, y=None):
    w1 = pyro.sample("w1", pdist.Normal(0, 1).expand([3, 8]).to_event(2))
    b1 = pyro.sample("b1", pdist.Normal(0, 1).expand([8]).to_event(1))
    w2 = pyro.sample("w2", pdist.Normal(0, 1).expand([8, 1]).to_event(2))
    b2 = pyro.sample("b2", pdist.Normal(0, 1).expand([1]).to_event(1))
    sigma = pyro.sample("sigma", pdist.HalfNormal(1.0))
    h = torch.tanh(pnn.dense(x, w1, b1))
    mu = pyro.deterministic("mu", pnn.dense(h, w2, b2)[..., 0])
    with pyro.plate("data", x.shape[0]):
        return pyro.sample("y", pdist.Normal(mu, sigma), obs=y)


class LinenMLP(fnn.Module):
    @fnn.compact
    def __call__(self, x):
        h = jnp.tanh(fnn.Dense(8)(x))
        return fnn.Dense(1)(h)


class NnxMLP(nnx.Module):
    def __init__(self, rngs):
        self.l1 = nnx.Linear(3, 8, rngs=rngs)
        self.l2 = nnx.Linear(8, 1, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


def n_foreign(kind):
    """A regression BNN around a flax linen / nnx / equinox network."""

    def model(x, y=None):
        if kind == "linen":
            net = random_flax_module(
                "mlp", LinenMLP(), ndist.Normal(0, 1), input_shape=(1, 3)
            )
            out = net(x)
        elif kind == "nnx":
            net = random_nnx_module("mlp", NnxMLP(nnx.Rngs(0)), ndist.Normal(0, 1))
            out = net(x)
        else:
            mlp = eqx.nn.MLP(3, 1, 8, 1, activation=jnp.tanh, key=jax.random.key(1))
            net = random_eqx_module("mlp", mlp, ndist.Normal(0, 1))
            out = jax.vmap(net)(x)
        sigma = numpyro.sample("sigma", ndist.HalfNormal(1.0))
        mu = numpyro.deterministic("mu", out[..., 0])
        with numpyro.plate("data", x.shape[0]):
            numpyro.sample("y", ndist.Normal(mu, sigma), obs=y)

    return model


class TorchMLP(PyroModule):
    def __init__(self):
        super().__init__()
        self.fc = PyroModule[torch.nn.Linear](3, 8)
        self.fc.weight = PyroSample(pdist.Normal(0.0, 1.0).expand([8, 3]).to_event(2))
        self.fc.bias = PyroSample(pdist.Normal(0.0, 1.0).expand([8]).to_event(1))
        self.out = PyroModule[torch.nn.Linear](8, 1)
        self.out.weight = PyroSample(pdist.Normal(0.0, 1.0).expand([1, 8]).to_event(2))
        self.out.bias = PyroSample(pdist.Normal(0.0, 1.0).expand([1]).to_event(1))

    def forward(self, x, y=None):
        sigma = pyro.sample("sigma", pdist.HalfNormal(1.0))
        mu = pyro.deterministic("mu", self.out(torch.tanh(self.fc(x)))[..., 0])
        with pyro.plate("data", x.shape[0]):
            return pyro.sample("y", pdist.Normal(mu, sigma), obs=y)


def _tiny_sigma(samples, n):
    return {**samples, "sigma": np.full((n,), 1e-5, np.float32)}


@pytest.mark.parametrize("kind", ["plain", "linen", "nnx", "eqx"])
def test_numpyro_predictive_programs_the_weights_not_the_likelihood(kind):
    model = n_regression if kind == "plain" else n_foreign(kind)
    prior = NPredictive(model, num_samples=4)(jax.random.key(0), jnp.asarray(X))
    post = _tiny_sigma(
        {k: v for k, v in prior.items() if k not in ("y", "mu", "sigma")}, 4
    )
    chip = ncrossbar(model, device=devices.PCM(), t_inference=86_400.0)
    if kind == "eqx":
        with pytest.warns(ConverterWarning, match="jax.vmap"):
            out = NPredictive(chip, posterior_samples=post)(jax.random.key(1), X)
    else:
        out = NPredictive(chip, posterior_samples=post)(jax.random.key(1), X)
    weights = set(post) - {"sigma"}
    assert set(chip.applications) == weights == chip.weight_sites
    assert chip.applications["y"] == 0 and chip.applications["sigma"] == 0
    assert set(chip.routed) == {k for k in weights if "bias" not in k and "b" != k[0]}
    # y is the likelihood's draw given the chip's output (sigma = 1e-5)
    np.testing.assert_allclose(out["y"], out["mu"], atol=1e-3)
    clean = NPredictive(model, posterior_samples=post)(jax.random.key(1), X)
    assert np.max(np.abs(out["mu"] - clean["mu"])) > 1e-3  # the chip did act


@pytest.mark.parametrize("kind", ["plain", "pyromodule"])
def test_pyro_predictive_programs_the_weights_not_the_likelihood(kind):
    model = p_regression if kind == "plain" else TorchMLP()
    pyro.set_rng_seed(0)
    prior = PPredictive(model, num_samples=4)(torch.as_tensor(X))
    post = {
        k: v.detach()
        for k, v in prior.items()
        if k not in ("y", "mu", "sigma", "_RETURN")
    }
    post["sigma"] = torch.full((4,), 1e-5)
    chip = pcrossbar(model, device=devices.PCM(), t_inference=86_400.0)
    pyro.set_rng_seed(1)
    with torch.no_grad():
        out = PPredictive(chip, posterior_samples=post)(torch.as_tensor(X))
    weights = set(post) - {"sigma"}
    handler = _pyro_handler(chip)
    assert set(handler.applications) == weights == handler.weight_sites
    mu = out["mu"].reshape(out["y"].shape)
    np.testing.assert_allclose(out["y"].numpy(), mu.numpy(), atol=1e-3)


def _pyro_handler(wrapped):
    """The CrossbarMessenger behind a wrapped Pyro model."""
    from ppl_hw.pyro.handlers import CrossbarMessenger

    if hasattr(wrapped, "handler"):
        return wrapped.handler
    for cell in wrapped.__closure__ or ():
        if isinstance(cell.cell_contents, CrossbarMessenger):
            return cell.cell_contents
    raise AssertionError("no crossbar handler in the closure")


def test_per_datum_latents_are_not_weights_and_context_manager_rule():
    def model(x):
        w = numpyro.sample("w", ndist.Normal(0, 1).expand([3, 2]).to_event(2))
        with numpyro.plate("data", x.shape[0]):
            z = numpyro.sample("z", ndist.Normal(0, 1).expand([2]).to_event(1))
            numpyro.sample("x", ndist.Normal(nnn.dense(x, w) + z, 1).to_event(1))

    chip = ncrossbar(model, device=devices.PCM())
    numpyro.handlers.seed(chip, 0)(jnp.asarray(X))
    assert chip.weight_sites == {"w"} and set(chip.applications) == {"w"}
    # as a context manager (no dry trace): latent sites inside a plate are data
    cm = ncrossbar(device=devices.PCM())
    with cm:
        numpyro.handlers.seed(model, 0)(jnp.asarray(X))
    assert set(cm.applications) == {"w"} and cm.weight_sites is None


# -- 2. converters on every layer ---------------------------------------------------


def _n_reference(x):
    w1 = numpyro.sample("w1", ndist.Normal(0, 1).expand([3, 8]).to_event(2))
    b1 = numpyro.sample("b1", ndist.Normal(0, 1).expand([8]).to_event(1))
    w2 = numpyro.sample("w2", ndist.Normal(0, 1).expand([8, 2]).to_event(2))
    b2 = numpyro.sample("b2", ndist.Normal(0, 1).expand([2]).to_event(1))
    numpyro.deterministic("out", nnn.dense(jnp.tanh(nnn.dense(x, w1, b1)), w2, b2))


class _Linen2(fnn.Module):
    @fnn.compact
    def __call__(self, x):
        h = jnp.tanh(fnn.Dense(8)(x))
        return fnn.Dense(2)(h)


class _Nnx2(nnx.Module):
    def __init__(self):
        rngs = nnx.Rngs(0)
        self.l1 = nnx.Linear(3, 8, rngs=rngs)
        self.l2 = nnx.Linear(8, 2, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


def _n_foreign_net(kind):
    def model(x):
        if kind == "linen":
            net = random_flax_module(
                "net", _Linen2(), ndist.Normal(0, 1), input_shape=(1, 3)
            )
            out = net(x)
        elif kind == "nnx":
            out = random_nnx_module("net", _Nnx2(), ndist.Normal(0, 1))(x)
        else:
            mlp = eqx.nn.MLP(3, 2, 8, 1, activation=jnp.tanh, key=jax.random.key(1))
            out = jax.vmap(random_eqx_module("net", mlp, ndist.Normal(0, 1)))(x)
        numpyro.deterministic("out", out)

    return model


def _foreign_values(kind):
    """The reference weights under the framework's site names and layouts."""
    if kind == "linen":
        return {
            "net/Dense_0.kernel": W1,
            "net/Dense_0.bias": B1,
            "net/Dense_1.kernel": W2,
            "net/Dense_1.bias": B2,
        }
    if kind == "nnx":
        return {
            "net/l1.kernel": W1,
            "net/l1.bias": B1,
            "net/l2.kernel": W2,
            "net/l2.bias": B2,
        }
    return {
        "net/layers[0].weight": W1.T,
        "net/layers[0].bias": B1,
        "net/layers[1].weight": W2.T,
        "net/layers[1].bias": B2,
    }


def _n_run(model, data, device):
    """One run without a seed handler: the output noise of every layer comes from
    the handler's fixed key, the same for every model (the same noise)."""
    data = {k: jnp.asarray(v) for k, v in data.items()}
    if "net/Dense_0.kernel" in data:  # flax's param store entry: no init key drawn
        data["net$params"] = {
            "Dense_0": {"kernel": data["net/Dense_0.kernel"], "bias": B1},
            "Dense_1": {"kernel": data["net/Dense_1.kernel"], "bias": B2},
        }
    fn = numpyro.handlers.substitute(ncrossbar(model, device=device), data)
    tr = numpyro.handlers.trace(fn).get_trace(jnp.asarray(X))
    return np.asarray(tr["out"]["value"])


@pytest.mark.parametrize("kind", ["linen", "nnx", "eqx"])
def test_numpyro_foreign_layers_equal_ppl_hw_layers_through_the_converters(kind):
    ref = _n_run(_n_reference, dict(w1=W1, b1=B1, w2=W2, b2=B2), CONVERTERS_ONLY)
    if kind == "eqx":  # called per example under jax.vmap: one noise draw per call
        with pytest.warns(ConverterWarning, match="jax.vmap"):
            got = _n_run(_n_foreign_net(kind), _foreign_values(kind), CONVERTERS_ONLY)
        np.testing.assert_allclose(got[0], ref[0], rtol=1e-5, atol=1e-6)
    else:
        got = _n_run(_n_foreign_net(kind), _foreign_values(kind), CONVERTERS_ONLY)
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    exact = np.tanh(X @ W1 + B1) @ W2 + B2
    assert np.max(np.abs(got - exact)) > 1e-3  # the converters acted
    # quantisation only (no output noise): the NumPy core, layer by layer
    quiet = CONVERTERS_ONLY.replace(out_noise=0.0)
    got = _n_run(_n_foreign_net(kind), _foreign_values(kind), quiet)
    matvec = NUMPY.bind(cx.analog_matvec)
    h = np.tanh(matvec(X.astype(float), W1.astype(float), quiet, None) + B1)
    oracle = matvec(h, W2.astype(float), quiet, None) + B2
    np.testing.assert_allclose(got, oracle, rtol=1e-5, atol=1e-5)
    step = 2 * quiet.out_bound / (2**quiet.adc_bits - 2)  # normalised ADC step
    assert 0 < np.max(np.abs(got - exact)) < 8 * step * np.abs(h).max()


def _p_reference(x):
    w1 = pyro.sample("w1", pdist.Normal(0, 1).expand([3, 8]).to_event(2))
    b1 = pyro.sample("b1", pdist.Normal(0, 1).expand([8]).to_event(1))
    w2 = pyro.sample("w2", pdist.Normal(0, 1).expand([8, 2]).to_event(2))
    b2 = pyro.sample("b2", pdist.Normal(0, 1).expand([2]).to_event(1))
    pyro.deterministic("out", pnn.dense(torch.tanh(pnn.dense(x, w1, b1)), w2, b2))


class _TorchSeq(PyroModule):
    def __init__(self):
        super().__init__()
        self.net = PyroModule[torch.nn.Sequential](
            PyroModule[torch.nn.Linear](3, 8),
            torch.nn.Tanh(),
            PyroModule[torch.nn.Linear](8, 2),
        )
        for i, (a, b) in ((0, (3, 8)), (2, (8, 2))):
            layer = self.net[i]
            layer.weight = PyroSample(pdist.Normal(0.0, 1.0).expand([b, a]).to_event(2))
            layer.bias = PyroSample(pdist.Normal(0.0, 1.0).expand([b]).to_event(1))

    def forward(self, x):
        pyro.deterministic("out", self.net(x))


def _p_run(model, data, device):
    data = {k: torch.as_tensor(v) for k, v in data.items()}
    pyro.set_rng_seed(7)
    fn = pyro.poutine.condition(pcrossbar(model, device=device), data)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConverterWarning)
        tr = pyro.poutine.trace(fn).get_trace(torch.as_tensor(X))
    return tr.nodes["out"]["value"].detach().numpy()


@pytest.mark.parametrize("style", ["sequential", "functional", "matmul"])
def test_pyro_torch_layers_equal_ppl_hw_layers_through_the_converters(style):
    ref = _p_run(_p_reference, dict(w1=W1, b1=B1, w2=W2, b2=B2), CONVERTERS_ONLY)
    if style == "sequential":
        model, data = (
            _TorchSeq(),
            {
                "net.0.weight": W1.T,
                "net.0.bias": B1,
                "net.2.weight": W2.T,
                "net.2.bias": B2,
            },
        )
    else:

        def model(x):
            w1 = pyro.sample("w1", pdist.Normal(0, 1).expand([8, 3]).to_event(2))
            b1 = pyro.sample("b1", pdist.Normal(0, 1).expand([8]).to_event(1))
            w2 = pyro.sample("w2", pdist.Normal(0, 1).expand([2, 8]).to_event(2))
            b2 = pyro.sample("b2", pdist.Normal(0, 1).expand([2]).to_event(1))
            if style == "functional":
                h = torch.tanh(torch.nn.functional.linear(x, w1, b1))
                out = torch.nn.functional.linear(h, w2, b2)
            else:  # plain matmuls on transposes of (out, in) weights
                out = torch.tanh(x @ w1.T + b1) @ w2.t() + b2
            pyro.deterministic("out", out)

        data = dict(w1=W1.T, b1=B1, w2=W2.T, b2=B2)
    got = _p_run(model, data, CONVERTERS_ONLY)
    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-6)
    exact = np.tanh(X @ W1 + B1) @ W2 + B2
    assert np.max(np.abs(got - exact)) > 1e-3


def _im2col(xpad, oh, ow):
    """Patches of a padded NHWC batch of 2 for a 3 x 2 kernel, strides (1, 2):
    ``(N, oh, ow, C * 3 * 2)`` in ``(C, kh, kw)`` order."""
    return np.stack(
        [
            np.stack(
                [
                    xpad[:, i : i + 3, 2 * j : 2 * j + 2, :]
                    .transpose(0, 3, 1, 2)
                    .reshape(2, -1)
                    for j in range(ow)
                ],
                1,
            )
            for i in range(oh)
        ],
        1,
    )


def test_flax_and_torch_convolutions_route_their_im2col_matrices():
    """A conv layer through converters without noise equals the NumPy core applied
    to its im2col matrix (kernel layouts HWIO for flax, OIHW for torch)."""
    quiet = devices.Ideal(dac_bits=6, adc_bits=7)
    x = RNG.normal(size=(2, 6, 5, 3)).astype(np.float32)  # NHWC
    k = RNG.normal(size=(3, 2, 3, 4)).astype(np.float32)  # HWIO

    def nmodel(x):
        net = random_flax_module(
            "c",
            fnn.Conv(4, (3, 2), strides=(1, 2), padding=((1, 1), (0, 1))),
            ndist.Normal(0, 1),
            input_shape=(1, 6, 5, 3),
        )
        numpyro.deterministic("out", net(x))

    data = {
        "c/kernel": jnp.asarray(k),
        "c/bias": jnp.zeros(4),
        "c$params": {"kernel": jnp.asarray(k), "bias": jnp.zeros(4)},
    }
    fn = numpyro.handlers.substitute(ncrossbar(nmodel, device=quiet), data)
    got = np.asarray(
        numpyro.handlers.trace(fn).get_trace(jnp.asarray(x))["out"]["value"]
    )
    exact = jax.lax.conv_general_dilated(
        x, k, (1, 2), ((1, 1), (0, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    # oracle: im2col by hand, the core's matvec on the (C*kh*kw, O) matrix
    xp_ = np.pad(x, ((0, 0), (1, 1), (0, 1), (0, 0)))
    cols = _im2col(xp_, *exact.shape[1:3])
    mat = k.transpose(2, 0, 1, 3).reshape(-1, 4)
    oracle = NUMPY.bind(cx.analog_matvec)(cols.astype(float), mat, quiet, None)
    np.testing.assert_allclose(got, oracle, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(got - np.asarray(exact))) > 1e-4
    # torch Conv2d (OIHW) in a PyroModule
    conv = PyroModule[torch.nn.Conv2d](3, 4, (3, 2), stride=(1, 2), padding=1)
    conv.weight = PyroSample(pdist.Normal(0.0, 1.0).expand([4, 3, 3, 2]).to_event(4))
    ko = np.ascontiguousarray(k.transpose(3, 2, 0, 1))  # OIHW
    xt = torch.as_tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)))

    def pmodel(x):
        pyro.deterministic("out", conv(x))

    fn = pyro.poutine.condition(
        pcrossbar(pmodel, device=quiet), {"weight": torch.as_tensor(ko)}
    )
    out = pyro.poutine.trace(fn).get_trace(xt).nodes["out"]["value"].detach()
    xpt = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    cols = _im2col(xpt, *out.shape[2:])
    oracle = NUMPY.bind(cx.analog_matvec)(cols.astype(float), mat, quiet, None)
    bias = conv.bias.detach().numpy()
    np.testing.assert_allclose(
        out.numpy().transpose(0, 2, 3, 1), oracle + bias, rtol=1e-5, atol=1e-5
    )


def test_unroutable_products_warn_naming_the_layer_or_site():
    class General(fnn.Module):
        @fnn.compact
        def __call__(self, x):
            return fnn.DenseGeneral(2)(x)

    def linen(x):
        net = random_flax_module("g", General(), ndist.Normal(0, 1), input_shape=(1, 3))
        numpyro.deterministic("out", net(x))

    with pytest.warns(ConverterWarning, match="flax DenseGeneral"):
        numpyro.handlers.seed(ncrossbar(linen, device=devices.PCM()), 0)(jnp.asarray(X))

    def plain(x):
        w = numpyro.sample("w", ndist.Normal(0, 1).expand([3, 2]).to_event(2))
        numpyro.deterministic("out", x @ w)

    with pytest.warns(ConverterWarning, match=r"site\(s\) \['w'\]"):
        numpyro.handlers.seed(ncrossbar(plain, device=devices.PCM()), 0)(jnp.asarray(X))
    # no warning without converters (weight effects only)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConverterWarning)
        numpyro.handlers.seed(
            ncrossbar(
                plain, device=devices.PCM(dac_bits=None, adc_bits=None, out_noise=0)
            ),
            0,
        )(jnp.asarray(X))

    def conv1d(x):
        k = pyro.sample("k", pdist.Normal(0, 1).expand([2, 3, 2]).to_event(3))
        pyro.deterministic("out", torch.nn.functional.conv1d(x, k))

    with pytest.warns(ConverterWarning, match="F.conv1d consumed .* site 'k'"):
        pcrossbar(conv1d, device=devices.PCM())(torch.randn(1, 3, 6))


def test_torch_linear_column_mapping_uses_the_output_axis():
    """nn.Linear weights are (out, in): "column" mapping scales each output row."""
    dev = devices.Ideal(levels=5, mapping="column")
    lin = PyroModule[torch.nn.Linear](2, 2)
    lin.weight = PyroSample(pdist.Normal(0.0, 1.0).expand([2, 2]).to_event(2))
    w = torch.tensor([[0.1, -0.05], [10.0, 5.0]])  # row 0: a small output unit

    def model(x):
        pyro.deterministic("out", lin(x))

    handler = pcrossbar(device=dev, record=True)
    fn = pyro.poutine.condition(handler(model), {"weight": w})
    tr = pyro.poutine.trace(fn).get_trace(torch.randn(3, 2))
    chip = tr.nodes["weight_chip"]["value"]
    assert handler.layouts == {"weight": "oi"}
    np.testing.assert_allclose(chip[0], [0.1, -0.05], atol=0.1 / 4 / 2 + 1e-7)
    np.testing.assert_allclose(chip[1], [10.0, 5.0], atol=10 / 4 / 2 + 1e-6)


# -- 4. drift compensation on by default keeps the output's scale -------------------


H = 64


def n_wide(x, y=None):
    w1 = numpyro.sample("w1", ndist.Normal(0, 1).expand([3, H]).to_event(2))
    b1 = numpyro.sample("b1", ndist.Normal(0, 1).expand([H]).to_event(1))
    w2 = numpyro.sample("w2", ndist.Normal(0, H**-0.5).expand([H, 1]).to_event(2))
    sigma = numpyro.sample("sigma", ndist.HalfNormal(1.0))
    h = jnp.tanh(nnn.dense(x, w1, b1))
    mu = numpyro.deterministic("mu", nnn.dense(h, w2)[..., 0])
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", ndist.Normal(mu, sigma), obs=y)


def test_pcm_default_keeps_a_regression_outputs_scale_after_a_day():
    """Slope of the chip's mean prediction against the off-chip mean, 1 day after
    programming, averaged over 5 chips (3-64-1 BNN, 30 posterior samples): within
    5 % of 1 with the PCM defaults (global drift compensation), about half without
    (measured: 1.006, chips 0.97-1.05; without: 0.53)."""
    x = jnp.asarray(RNG.normal(size=(200, 3)).astype(np.float32))
    prior = NPredictive(n_wide, num_samples=30)(jax.random.key(4), x)
    post = _tiny_sigma({k: v for k, v in prior.items() if k in WEIGHTS}, 30)
    clean = np.asarray(post_mean(n_wide, post, x))
    slopes = {}
    for comp in (True, False):
        device = devices.PCM() if comp else devices.PCM(drift_compensation=False)
        slopes[comp] = [
            float(
                np.polyfit(
                    clean,
                    np.asarray(
                        post_mean(
                            ncrossbar(
                                n_wide, device=device, t_inference=86_400.0, seed=c
                            ),
                            post,
                            x,
                        )
                    ),
                    1,
                )[0]
            )
            for c in range(5)
        ]
    assert devices.PCM().drift_compensation
    assert abs(np.mean(slopes[True]) - 1.0) < 0.05, slopes
    assert np.mean(slopes[False]) < 0.8, slopes


def post_mean(model, post, x):
    out = NPredictive(model, posterior_samples=post, return_sites=["mu"])(
        jax.random.key(5), x
    )
    return out["mu"].mean(0)
