"""``bnn.bayesian``: a network the user wrote (flax linen, nnx, equinox; torch
``Sequential`` and a class with a conv layer) made Bayesian in one call.

References: the frameworks' own parameter names (flax's params tree, the nnx
``Param`` state, equinox's key paths, torch's ``named_parameters()``) and the
modules themselves run on the same weights (``module.apply``, ``nnx.update``,
``torch.func.functional_call``). Training tests cannot flake: fixed seeds, a
formula-made data set and deterministic full-batch steps on CPU.
"""

import warnings

import equinox as eqx
import flax.linen as fnn
import jax
import jax.numpy as jnp
import jax.tree_util as jtu
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import pytest
import torch
from flax import nnx
from numpyro.infer import SVI as NSVI
from numpyro.infer import Predictive as NPredictive
from numpyro.infer import TraceMeanField_ELBO as NELBO
from numpyro.infer.autoguide import AutoNormal as NAutoNormal
from pyro.infer import SVI as PSVI
from pyro.infer import Predictive as PPredictive
from pyro.infer import TraceMeanField_ELBO as PELBO
from pyro.infer.autoguide import AutoNormal as PAutoNormal
from pyro.nn import PyroModule

from ppl_hw import coding, devices
from ppl_hw.common.handlers import ConverterWarning
from ppl_hw.numpyro import bnn as nbnn
from ppl_hw.numpyro.handlers import crossbar as ncrossbar
from ppl_hw.pyro import bnn as pbnn
from ppl_hw.pyro.handlers import CrossbarMessenger
from ppl_hw.pyro.handlers import crossbar as pcrossbar

RNG = np.random.default_rng(0)
N = 64
X = RNG.normal(size=(N, 3)).astype(np.float32)
Y_REG = (np.sin(X[:, 0]) + 0.5 * X[:, 1]).astype(np.float32)
Y_CLS = (X[:, 0] + X[:, 1] > 0).astype(np.int32)
IMG = RNG.normal(size=(N, 1, 4, 4)).astype(np.float32)  # NCHW, for the conv net
Y_IMG = (IMG[:, 0, :2].sum((1, 2)) > 0).astype(np.int64)

# -- the networks users bring --------------------------------------------------------


class Linen(fnn.Module):
    out: int = 2

    @fnn.compact
    def __call__(self, x):
        h = jnp.tanh(fnn.Dense(8)(x))
        return fnn.Dense(self.out)(h)


class Nnx(nnx.Module):
    def __init__(self, out=2):
        rngs = nnx.Rngs(0)
        self.l1 = nnx.Linear(3, 8, rngs=rngs)
        self.l2 = nnx.Linear(8, out, rngs=rngs)

    def __call__(self, x):
        return self.l2(jnp.tanh(self.l1(x)))


def eqx_mlp(out=2):
    return eqx.nn.MLP(3, out, 8, 1, activation=jnp.tanh, key=jax.random.key(1))


def numpyro_net(kind, out=2):
    return {"linen": Linen(out), "nnx": Nnx(out), "equinox": eqx_mlp(out)}[kind]


class ConvNet(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 3)
        self.fc = torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(torch.tanh(self.conv(x)).flatten(1))


def pyro_net(kind, out=2):
    torch.manual_seed(0)
    if kind == "conv":
        return ConvNet()
    return torch.nn.Sequential(
        torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, out)
    )


def pyro_data(kind, likelihood="categorical"):
    if kind == "conv":
        return torch.as_tensor(IMG), torch.as_tensor(Y_IMG)
    y = {"categorical": Y_CLS.astype(np.int64), "normal": Y_REG}.get(likelihood)
    if likelihood == "bernoulli":
        y = Y_CLS.astype(np.float32)
    return torch.as_tensor(X), torch.as_tensor(y)


# -- the frameworks' own parameter names (independent of NumPyro's module.py) --------


def _flatten(tree, prefix=""):
    out = {}
    for k, v in tree.items():
        name = f"{prefix}.{k}" if prefix else str(k)
        out.update(_flatten(v, name) if isinstance(v, dict) else {name: v})
    return out


def framework_params(kind, module):
    """``{path: array}`` as the framework stores the parameters."""
    if kind == "linen":
        return _flatten(module.init(jax.random.key(0), jnp.asarray(X[:1]))["params"])
    if kind == "nnx":
        return _flatten(nnx.to_pure_dict(nnx.state(module, nnx.Param)))
    leaves = jtu.tree_leaves_with_path(eqx.filter(module, eqx.is_inexact_array))
    return {jtu.keystr(p)[1:]: v for p, v in leaves}


def _numpyro_trace(model, *args, seed=0, data=None, **kw):
    fn = numpyro.handlers.seed(model, seed)
    if data is not None:
        fn = numpyro.handlers.substitute(fn, data=data)
    return numpyro.handlers.trace(fn).get_trace(*args, **kw)


def _latent(trace, pyro_trace=False):
    """The parameter sites of a trace (sample sites but the likelihood's)."""
    from pyro.poutine.util import site_is_subsample

    items = trace.nodes.items() if pyro_trace else trace.items()
    return {
        k: s
        for k, s in items
        if s["type"] == "sample"
        and k not in ("obs", "sigma", "logits", "mu", "out")
        and not (pyro_trace and site_is_subsample(s))
    }


# -- 1. site names are the module's parameter names ----------------------------------


@pytest.mark.parametrize("kind", ["linen", "nnx", "equinox"])
def test_numpyro_sites_are_the_frameworks_parameter_names(kind):
    module = numpyro_net(kind)
    model = nbnn.bayesian(module, likelihood="categorical")
    tr = _numpyro_trace(model, jnp.asarray(X), jnp.asarray(Y_CLS))
    ref = framework_params(kind, module)
    sites = _latent(tr)
    # NumPyro's order (flax: sorted keys, as jax.tree orders a dict)
    assert sorted(sites) == sorted(f"net/{p}" for p in ref)
    assert model.site_names(X) == tuple(sites)
    for p, v in ref.items():
        assert sites[f"net/{p}"]["value"].shape == v.shape
        assert sites[f"net/{p}"]["value"].dtype == jnp.float32
    assert tr["obs"]["is_observed"] and tr["logits"]["type"] == "deterministic"


@pytest.mark.parametrize("kind", ["sequential", "conv"])
def test_pyro_sites_are_named_parameters(kind):
    module = pyro_net(kind)
    model = pbnn.bayesian(module, likelihood="categorical")
    x, y = pyro_data(kind)
    tr = pyro.poutine.trace(model).get_trace(x, y)
    sites = _latent(tr, pyro_trace=True)
    ref = dict(module.named_parameters())
    assert list(sites) == list(ref) == list(model.site_names())
    for name, p in ref.items():
        assert sites[name]["value"].shape == p.shape
        assert sites[name]["value"].dtype == torch.float32
    assert isinstance(model, PyroModule) and tr.nodes["obs"]["is_observed"]


# -- 2. the user's module is left as it is -------------------------------------------


@pytest.mark.parametrize("kind", ["sequential", "conv"])
def test_pyro_module_is_not_mutated(kind):
    module = pyro_net(kind)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    classes = [type(m) for m in module.modules()]
    model = pbnn.bayesian(module, likelihood="categorical", layers=None)
    x, y = pyro_data(kind)
    svi = PSVI(model, PAutoNormal(model), pyro.optim.Adam({"lr": 0.1}), PELBO())
    for _ in range(3):
        svi.step(x, y)
    assert [type(m) for m in module.modules()] == classes
    assert not any(isinstance(m, PyroModule) for m in module.modules())
    assert list(dict(module.named_parameters())) == list(before)
    for k, v in module.state_dict().items():
        assert torch.equal(v, before[k])


# -- 3. the output is the module's own on the same weights ---------------------------


@pytest.mark.parametrize(
    "kind, likelihood",
    [("linen", "categorical"), ("nnx", "normal"), ("equinox", "bernoulli")],
)
def test_numpyro_output_is_the_module_on_the_sampled_weights(kind, likelihood):
    out = 2 if likelihood == "categorical" else 1
    module = numpyro_net(kind, out)
    model = nbnn.bayesian(module, likelihood=likelihood)
    x = jnp.asarray(X)
    tr = _numpyro_trace(model, x, seed=3)
    weights = {k[len("net/") :]: s["value"] for k, s in _latent(tr).items()}
    got = np.asarray(tr["mu" if likelihood == "normal" else "logits"]["value"])
    if kind == "linen":
        nested = {}
        for path, v in weights.items():
            layer, leaf = path.split(".")
            nested.setdefault(layer, {})[leaf] = v
        ref = module.apply({"params": nested}, x)
    elif kind == "nnx":
        copy = nnx.clone(module)
        state = nnx.state(copy, nnx.Param)
        nnx.replace_by_pure_dict(
            state,
            {
                p: {q: weights[f"{p}.{q}"] for q in ("kernel", "bias")}
                for p in ("l1", "l2")
            },
        )
        nnx.update(copy, state)
        ref = copy(x)
    else:
        params, static = eqx.partition(module, eqx.is_inexact_array)
        params = jtu.tree_map_with_path(lambda p, _: weights[jtu.keystr(p)[1:]], params)
        ref = jax.vmap(eqx.combine(params, static))(x)
    if out == 1:  # "normal" and "bernoulli" drop the output axis of size 1
        ref = ref[:, 0]
    assert got.dtype == np.float32 and got.shape == ((N, 2) if out == 2 else (N,))
    np.testing.assert_allclose(got, np.asarray(ref), rtol=1e-6, atol=1e-6)
    assert tr["obs"]["value"].shape == (N,)
    # the weights really were drawn (not the module's initial values)
    init = framework_params(kind, module)
    assert all(not np.allclose(weights[k], init[k]) for k in init if "bias" not in k)


@pytest.mark.parametrize("kind", ["sequential", "conv"])
def test_pyro_output_is_the_module_on_the_sampled_weights(kind):
    module = pyro_net(kind)
    model = pbnn.bayesian(module, likelihood="categorical")
    x, _ = pyro_data(kind)
    weights = {
        k: torch.randn(p.shape, generator=torch.Generator().manual_seed(i))
        for i, (k, p) in enumerate(module.named_parameters())
    }
    tr = pyro.poutine.trace(pyro.poutine.condition(model, weights)).get_trace(x)
    got = tr.nodes["logits"]["value"]
    with torch.no_grad():
        ref = torch.func.functional_call(module, weights, (x,))
    assert got.dtype == torch.float32 and got.shape == (N, 2)
    np.testing.assert_allclose(got.detach().numpy(), ref.numpy(), rtol=1e-6, atol=1e-6)


# -- 4. inference, prediction, the crossbar, coding ----------------------------------


def test_numpyro_autonormal_svi_trains_predicts_and_codes():
    """A classifier: AutoNormal + SVI, Predictive, MIRACLE coding of the guide."""
    model = nbnn.bayesian(Linen(2), likelihood="categorical")
    guide = NAutoNormal(model)
    svi = NSVI(model, guide, numpyro.optim.Adam(0.03), NELBO())
    x, y = jnp.asarray(X), jnp.asarray(Y_CLS)
    res = svi.run(jax.random.key(0), 100, x, y, progress_bar=False)
    assert np.mean(res.losses[-10:]) < np.mean(res.losses[:10])
    names = model.site_names(x)
    pred = NPredictive(
        model,
        guide=guide,
        params=res.params,
        num_samples=5,
        return_sites=["logits", "obs", names[0]],
    )(jax.random.key(1), x)
    shape = framework_params("linen", Linen(2))[names[0][len("net/") :]].shape
    assert {k: v.shape for k, v in pred.items()} == {
        "logits": (5, N, 2),
        "obs": (5, N),
        names[0]: (5, *shape),
    }
    assert pred["logits"].dtype == jnp.float32
    comp = coding.encode(guide, res.params, bits_per_block=8)
    weights = coding.decode(comp, backend="numpyro")
    assert set(weights) == set(names)
    tr = _numpyro_trace(model, x, data=weights)
    assert tr["logits"]["value"].shape == (N, 2)


def test_numpyro_predictive_returns_the_documented_sites():
    kind, likelihood = "nnx", "normal"
    module = numpyro_net(kind, 1)
    before = {
        k: np.asarray(v).copy() for k, v in framework_params(kind, module).items()
    }
    model = nbnn.bayesian(module, likelihood=likelihood)
    pred = NPredictive(model, num_samples=5)(jax.random.key(1), jnp.asarray(X))
    site = "mu" if likelihood == "normal" else "logits"
    shapes = {f"net/{k}": (5, *v.shape) for k, v in before.items()}
    shapes.update({site: (5, N), "obs": (5, N)})
    if likelihood == "normal":
        shapes["sigma"] = (5,)
    assert {k: v.shape for k, v in pred.items()} == shapes
    assert all(v.dtype == jnp.float32 for k, v in pred.items() if k != "obs")
    # the user's module is left as it is (nnx: NumPyro splits and merges it)
    after = framework_params(kind, module)
    assert list(after) == list(before)
    for k, v in after.items():
        np.testing.assert_array_equal(np.asarray(v), before[k])


P_LIKELIHOODS = [
    ("sequential", "normal"),
    ("conv", "categorical"),
    ("sequential", "bernoulli"),
]


@pytest.mark.parametrize("kind, likelihood", P_LIKELIHOODS)
def test_pyro_autonormal_svi_trains_and_predicts(kind, likelihood):
    out = 2 if likelihood == "categorical" else 1
    model = pbnn.bayesian(pyro_net(kind, out), likelihood=likelihood)
    guide = PAutoNormal(model)
    svi = PSVI(model, guide, pyro.optim.Adam({"lr": 0.03}), PELBO())
    x, y = pyro_data(kind, likelihood)
    losses = [svi.step(x, y) for _ in range(40)]
    assert np.mean(losses[-10:]) < np.mean(losses[:10])
    site = "mu" if likelihood == "normal" else "logits"
    first = model.site_names()[0]
    ret = [site, "obs", first] + (["sigma"] if likelihood == "normal" else [])
    with torch.no_grad():
        pred = PPredictive(model, guide=guide, num_samples=5, return_sites=ret)(x)
    shapes = {
        site: (5, N, 2) if likelihood == "categorical" else (5, N),
        "obs": (5, N),
        first: (5, 1, *dict(pyro_net(kind, out).named_parameters())[first].shape),
    }
    if likelihood == "normal":
        shapes["sigma"] = (5, 1)
    assert {k: tuple(v.shape) for k, v in pred.items()} == shapes


def test_numpyro_minibatches_and_num_data_scale_the_likelihood():
    model = nbnn.bayesian(Linen(1), likelihood="normal", scale=0.5)
    x, y = jnp.asarray(X), jnp.asarray(Y_REG)
    tr = _numpyro_trace(model, x, y, batch_size=16)
    idx = np.asarray(tr["data"]["value"])
    assert tr["obs"]["scale"] == N / 16 and tr["obs"]["value"].shape == (16,)
    np.testing.assert_array_equal(tr["obs"]["value"], Y_REG[idx])
    tr = _numpyro_trace(model, x[:16], y[:16], num_data=N)
    assert tr["obs"]["scale"] == N / 16
    np.testing.assert_array_equal(tr["data"]["value"], np.arange(16))
    assert "sigma" not in tr


def test_pyro_minibatches_and_num_data_scale_the_likelihood():
    model = pbnn.bayesian(pyro_net("sequential", 1), likelihood="normal", scale=0.5)
    x, y = pyro_data("sequential", "normal")
    tr = pyro.poutine.trace(model).get_trace(x, y, batch_size=16)
    idx = tr.nodes["data"]["value"]
    assert tr.nodes["obs"]["scale"] == N / 16
    assert torch.equal(tr.nodes["obs"]["value"], y[idx])
    tr = pyro.poutine.trace(model).get_trace(x[:16], y[:16], num_data=N)
    assert tr.nodes["obs"]["scale"] == N / 16 and "sigma" not in tr.nodes


def test_numpyro_sghmc_runs():
    from numpyro.infer import MCMC

    from ppl_hw.numpyro.infer import SGHMC

    # the classifier of the SVI test, full batch: its eager set-up (NumPyro's
    # initialize_model) reuses the SVI test's compiled ops, 4 s less; the kernel's
    # minibatches are run on Pyro below
    model = nbnn.bayesian(Linen(2), likelihood="categorical")
    mcmc = MCMC(
        SGHMC(model, step_size=1e-4), num_warmup=0, num_samples=5, progress_bar=False
    )
    mcmc.run(jax.random.key(0), jnp.asarray(X), jnp.asarray(Y_CLS))
    samples = mcmc.get_samples()
    assert set(samples) == {*model.site_names(X), "logits"}
    assert all(np.all(np.isfinite(v)) and v.shape[0] == 5 for v in samples.values())


def test_pyro_sghmc_runs():
    from pyro.infer import MCMC

    from ppl_hw.pyro.infer import SGHMC

    model = pbnn.bayesian(pyro_net("sequential", 1), likelihood="normal")
    mcmc = MCMC(
        SGHMC(model, step_size=1e-4),
        num_samples=5,
        warmup_steps=0,
        disable_progbar=True,
    )
    mcmc.run(*pyro_data("sequential", "normal"), batch_size=16)
    samples = mcmc.get_samples()
    assert set(samples) == {*model.site_names(), "sigma"}
    assert all(torch.isfinite(v).all() and v.shape[0] == 5 for v in samples.values())


# Converters only: which sites are programmed and which layers are routed does not
# depend on the device; PCM's weight effects (tests/test_crossbar_*.py) would add
# ~3 s of eager compilation here.
CONVERTERS = devices.Ideal(dac_bits=6, adc_bits=7)


@pytest.mark.parametrize("kind", ["linen", "nnx", "equinox"])
def test_numpyro_crossbar_programs_the_weights_and_routes_the_layers(kind):
    model = nbnn.bayesian(numpyro_net(kind, 1), likelihood="normal")
    x = jnp.asarray(X)
    names = model.site_names(x)
    chip = ncrossbar(model, device=CONVERTERS)
    with warnings.catch_warnings():  # every layer is routable
        # (equinox under jax.vmap warns only for a device with output noise)
        warnings.simplefilter("error", ConverterWarning)
        tr = _numpyro_trace(chip, x)
    assert chip.weight_sites == set(names)  # not "sigma", not "obs"
    assert set(chip.routed) == {n for n in names if n.endswith(("kernel", "weight"))}
    clean = _numpyro_trace(model, x, data={n: tr[n]["value"] for n in names})
    assert np.max(np.abs(tr["mu"]["value"] - clean["mu"]["value"])) > 1e-3  # it acted


def _pyro_handler(wrapped):
    if hasattr(wrapped, "handler"):
        return wrapped.handler
    for cell in wrapped.__closure__ or ():
        if isinstance(cell.cell_contents, CrossbarMessenger):
            return cell.cell_contents
    raise AssertionError("no crossbar handler in the closure")


@pytest.mark.parametrize("kind", ["sequential", "conv"])
def test_pyro_crossbar_programs_the_weights_and_routes_the_layers(kind):
    likelihood = "normal" if kind == "sequential" else "categorical"
    model = pbnn.bayesian(pyro_net(kind, 1), likelihood=likelihood)
    x, _ = pyro_data(kind, likelihood)
    ret = [*model.site_names()] + (["sigma"] if likelihood == "normal" else [])
    with torch.no_grad():
        prior = PPredictive(model, num_samples=3, return_sites=ret)(x)
        # Pyro's Predictive gives sites outside the plate a singleton plate axis:
        # dropped to feed the samples back
        prior = {k: v.squeeze(1) for k, v in prior.items()}
        chip = pcrossbar(model, device=CONVERTERS)
        with warnings.catch_warnings():
            warnings.simplefilter("error", ConverterWarning)
            PPredictive(chip, posterior_samples=prior)(x)
    handler = _pyro_handler(chip)
    assert handler.weight_sites == set(model.site_names())
    assert set(handler.routed) == {
        n for n in model.site_names() if n.endswith("weight")
    }


def test_pyro_encode_decode_round_trip_keeps_the_site_names():
    model = pbnn.bayesian(pyro_net("conv"), likelihood="categorical", layers=["fc"])
    guide = PAutoNormal(model)
    x, y = pyro_data("conv")
    guide(x, y)
    comp = coding.encode(guide, bits_per_block=8)
    weights = coding.decode(comp, backend="pyro")
    assert set(weights) == set(model.site_names()) == {"fc.weight", "fc.bias"}
    tr = pyro.poutine.trace(pyro.poutine.condition(model, weights)).get_trace(x)
    assert tr.nodes["logits"]["value"].shape == (N, 2)


# -- 5. layers= ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kind, layers, expected",
    [
        ("linen", ["Dense_1"], ["Dense_1.bias", "Dense_1.kernel"]),
        ("nnx", ["l1.kernel"], ["l1.kernel"]),
        ("equinox", ["layers[0]"], ["layers[0].weight", "layers[0].bias"]),
        (
            "equinox",
            ["layers"],
            [
                "layers[0].weight",
                "layers[0].bias",
                "layers[1].weight",
                "layers[1].bias",
            ],
        ),
    ],
)
def test_numpyro_layers_pick_exactly_those(kind, layers, expected):
    module = numpyro_net(kind)
    shape = (1, 3) if kind == "linen" else None
    model = nbnn.bayesian(
        module, likelihood="categorical", layers=layers, input_shape=shape
    )
    tr = _numpyro_trace(model, jnp.asarray(X))
    assert list(_latent(tr)) == [f"net/{p}" for p in expected]
    # the rest are point parameters: arrays in NumPyro's "net$params" site
    held = framework_params(kind, module)
    rest = set(held) - set(expected)
    params = tr["net$params"]["value"]
    if kind == "equinox":
        params = {jtu.keystr(p)[1:]: v for p, v in jtu.tree_leaves_with_path(params)}
    else:
        params = _flatten(params)
    arrays = {k for k, v in params.items() if hasattr(v, "dtype")}
    if kind == "equinox":  # NumPyro keeps every leaf there; the sampled ones unused
        assert rest <= arrays == set(held)
    else:  # flax: the sampled leaves are placeholders (ParamShape)
        assert arrays == rest


@pytest.mark.parametrize(
    "kind, layers, expected",
    [
        ("sequential", ["2"], ["2.weight", "2.bias"]),
        ("sequential", ["0.weight", "2"], ["0.weight", "2.weight", "2.bias"]),
        ("conv", ["conv"], ["conv.weight", "conv.bias"]),
    ],
)
def test_pyro_layers_pick_exactly_those(kind, layers, expected):
    module = pyro_net(kind)
    model = pbnn.bayesian(module, likelihood="categorical", layers=layers)
    x, y = pyro_data(kind)
    tr = pyro.poutine.trace(model).get_trace(x, y)
    assert list(_latent(tr, pyro_trace=True)) == expected == list(model.site_names())
    params = {k for k, s in tr.nodes.items() if s["type"] == "param"}
    assert params == set(dict(module.named_parameters())) - set(expected)


def test_unknown_layer_raises_naming_it_and_the_layers():
    with pytest.raises(ValueError, match=r"unknown layer 'fc9'.*\['0', '2'\]"):
        pbnn.bayesian(
            pyro_net("sequential"), likelihood="categorical", layers=["0", "fc9"]
        )
    with pytest.raises(ValueError, match=r"unknown layer 'l3'.*\['l1', 'l2'\]"):
        nbnn.bayesian(Nnx(), likelihood="categorical", layers=["l3"])
    # linen: at once with input_shape, else at the first call (the names need it)
    with pytest.raises(
        ValueError, match=r"unknown layer 'Dense_9'.*\['Dense_0', 'Dense_1'\]"
    ):
        nbnn.bayesian(
            Linen(), likelihood="categorical", layers=["Dense_9"], input_shape=(1, 3)
        )
    model = nbnn.bayesian(Linen(), likelihood="categorical", layers=["Dense_9"])
    with pytest.raises(ValueError, match=r"unknown layer 'Dense_9'"):
        _numpyro_trace(model, jnp.asarray(X))
    with pytest.raises(ValueError, match=r"unknown layer 'layers\[2\]'.*'layers\[1\]'"):
        nbnn.bayesian(eqx_mlp(), likelihood="categorical", layers=["layers[2]"])


# -- 6. bad input ----------------------------------------------------------------------


class Empty(nnx.Module):
    def __call__(self, x):
        return jnp.tanh(x)


def _builders():
    return {
        "numpyro": (nbnn.bayesian, Linen(), ndist),
        "pyro": (pbnn.bayesian, pyro_net("sequential"), pdist),
    }


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(prior=1.0), TypeError, r"prior must be a .*Distribution.*got 1\.0"),
        (dict(prior="normal"), TypeError, r"prior must be .* got 'normal'"),
        (
            dict(likelihood="poisson"),
            ValueError,
            r"likelihood must be one of .* got 'poisson'",
        ),
        (
            dict(likelihood="normal", scale=0.0),
            ValueError,
            r"scale must be > 0, got 0\.0",
        ),
        (dict(likelihood="normal", scale=-1), ValueError, r"scale must be > 0, got -1"),
        (
            dict(likelihood="normal", scale="big"),
            TypeError,
            r"scale must be a number or None, got 'big'",
        ),
        (dict(scale=1.0), ValueError, r"scale applies to likelihood='normal' only"),
        (dict(layers="0"), TypeError, r"layers must be a list .* got '0'"),
        (dict(layers=[]), ValueError, r"layers must name at least one layer"),
        (dict(layers=[0]), TypeError, r"layers must hold strings .* got 0"),
    ],
    ids=[
        "prior-float",
        "prior-str",
        "likelihood-unknown",
        "scale-zero",
        "scale-negative",
        "scale-str",
        "scale-not-normal",
        "layers-str",
        "layers-empty",
        "layers-int",
    ],
)
def test_bad_arguments_raise_naming_them(backend, kwargs, error, match):
    build, module, _ = _builders()[backend]
    kwargs = {"likelihood": "categorical", **kwargs}
    with pytest.raises(error, match=match):
        build(module, **kwargs)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_bad_priors_and_modules_raise_naming_them(backend):
    build, module, d = _builders()[backend]
    zeros = jnp.zeros(3) if backend == "numpyro" else torch.zeros(3)
    with pytest.raises(
        ValueError, match=r"prior must be a scalar .*event shape \(3,\)"
    ):
        build(
            module, d.Normal(0.0, 1.0).expand([3]).to_event(1), likelihood="categorical"
        )
    with pytest.raises(
        ValueError, match=r"prior must be a scalar .*batch shape \(3,\)"
    ):
        build(module, d.Normal(zeros, 1.0), likelihood="categorical")
    with pytest.raises(ValueError, match=r"sigma_prior must have positive support"):
        build(module, likelihood="normal", sigma_prior=d.Normal(0.0, 1.0))
    with pytest.raises(ValueError, match=r"either scale .* or sigma_prior"):
        build(module, likelihood="normal", scale=1.0, sigma_prior=d.HalfNormal(1.0))
    with pytest.raises(TypeError, match=r"module must be a .* got 'net'"):
        build("net", likelihood="categorical")
    empty = Empty() if backend == "numpyro" else torch.nn.Sequential(torch.nn.Tanh())
    with pytest.raises(ValueError, match=r"module has no parameters"):
        build(empty, likelihood="categorical")
    if backend == "numpyro":
        with pytest.raises(ValueError, match=r"module has no parameters"):
            build(eqx.nn.Lambda(jnp.tanh), likelihood="categorical")
        with pytest.raises(ValueError, match=r"input_shape is for flax.linen .* nnx"):
            build(Nnx(), likelihood="categorical", input_shape=(1, 3))
        with pytest.raises(TypeError, match=r"input_shape must be a tuple .* got 3"):
            build(Linen(), likelihood="categorical", input_shape=3)
        with pytest.raises(ValueError, match=r"input_shape must .* >= 1, got \(0, 3\)"):
            build(Linen(), likelihood="categorical", input_shape=(0, 3))
        with pytest.raises(
            ValueError, match=r"name must be a non-empty string, got ''"
        ):
            build(Linen(), likelihood="categorical", name="")
        with pytest.raises(TypeError, match=r"name must be a string, got 3"):
            build(Linen(), likelihood="categorical", name=3)


def test_pyro_parameter_names_that_clash_with_the_models_sites_raise():
    class Odd(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.sigma = torch.nn.Parameter(torch.ones(()))

        def forward(self, x):
            return x * self.sigma

    with pytest.raises(ValueError, match=r"\['sigma'\] whose site names clash"):
        pbnn.bayesian(Odd(), likelihood="normal")
    pbnn.bayesian(Odd(), likelihood="normal", scale=1.0)  # no "sigma" site: fine


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_bad_call_arguments_raise_naming_them(backend):
    if backend == "numpyro":
        model = nbnn.bayesian(Linen(1), likelihood="normal")
        x, y = jnp.asarray(X), jnp.asarray(Y_REG)

        def call(*a, **kw):
            return _numpyro_trace(model, *a, **kw)

    else:
        model = pbnn.bayesian(pyro_net("sequential", 1), likelihood="normal")
        x, y = pyro_data("sequential", "normal")
        call = model
    with pytest.raises(
        ValueError, match=r"y must have shape \(N, \*\(\)\) .* got shape \(64, 1\)"
    ):
        call(x, y[:, None])
    with pytest.raises(
        ValueError, match=r"y must have one entry per example .* \(63,\)"
    ):
        call(x, y[1:])
    with pytest.raises(ValueError, match=r"batch_size must be <= 64, got 65"):
        call(x, y, batch_size=65)
    with pytest.raises(ValueError, match=r"num_data must be >= 64, got 10"):
        call(x, y, num_data=10)
    with pytest.raises(
        ValueError, match=r"not both, got batch_size=8 and num_data=100"
    ):
        call(x, y, batch_size=8, num_data=100)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_no_likelihood_returns_the_output_for_a_likelihood_of_ones_own(backend):
    if backend == "numpyro":
        model = nbnn.bayesian(Linen(2), likelihood=None)
        tr = _numpyro_trace(model, jnp.asarray(X))
        out = tr["out"]["value"]
        with pytest.raises(ValueError, match=r"batch_size needs a likelihood"):
            _numpyro_trace(model, jnp.asarray(X), batch_size=8)
    else:
        model = pbnn.bayesian(pyro_net("sequential"), likelihood=None)
        tr = pyro.poutine.trace(model).get_trace(torch.as_tensor(X))
        out = tr.nodes["out"]["value"]
        assert tr.nodes["_RETURN"]["value"] is out
        with pytest.raises(ValueError, match=r"y needs a likelihood"):
            model(torch.as_tensor(X), torch.as_tensor(Y_CLS))
        tr = tr.nodes
    assert out.shape == (N, 2) and "obs" not in tr and "data" not in tr
