"""The SGHMC-within-EM step over all sites, :func:`ppl_hw.core.sghmc.step`, on NumPy
in float64 is the oracle for both kernels: from the same state and on the same noise,
one step of the NumPyro and of the Pyro kernel gives the oracle's state (float32
tolerances, as tests/test_parity.py), with every preconditioner and spike-and-slab EM
(E-step, surrogate, pruning mask, M-step for pi) switching on during the run.

The oracle's potential and gradient are written here by hand (a Gaussian linear model
with a spike-and-slab prior on the weights and a Normal bias), not taken from a host.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import pytest
import torch
from numpyro.infer.initialization import init_to_value

from ppl_hw.core import sghmc as core
from ppl_hw.numpyro.distributions import SpikeAndSlab as NSpikeAndSlab
from ppl_hw.numpyro.infer import SGHMC as NSGHMC
from ppl_hw.numpyro.infer import SpikeSlabEM as NEM
from ppl_hw.pyro.distributions import SpikeAndSlab as PSpikeAndSlab
from ppl_hw.pyro.infer import SGHMC as PSGHMC
from ppl_hw.pyro.infer import SpikeSlabEM as PEM

N, D = 40, 4
PROB, SPIKE, SLAB = 0.4, 0.05, 1.0
_rng = np.random.default_rng(1)
X = _rng.normal(size=(N, D))
Y = X @ np.array([1.0, -0.5, 0.0, 0.0]) + 0.3 + _rng.normal(size=N)
# w[3] starts tiny: the first EM step (step 1) prunes it (hard threshold 1e-3 on w^2)
INIT = {"w": np.array([0.8, -0.3, 0.2, 1e-3]), "b": np.array(0.1)}
STEPS = 5
KWARGS = dict(step_size=2e-3, temperature=0.5, momentum_decay=0.3)


def nmodel(x, y):
    w = numpyro.sample("w", NSpikeAndSlab(PROB, SPIKE, SLAB).expand([D]).to_event(1))
    b = numpyro.sample("b", ndist.Normal(0.0, 1.0))
    numpyro.sample("y", ndist.Normal(x @ w + b, 1.0).to_event(1), obs=y)


def pmodel(x, y):
    w = pyro.sample("w", PSpikeAndSlab(PROB, SPIKE, SLAB).expand([D]).to_event(1))
    b = pyro.sample("b", pdist.Normal(0.0, 1.0))
    pyro.sample("y", pdist.Normal(x @ w + b, 1.0).to_event(1), obs=y)


def _log_norm(w, s):
    return -0.5 * (w / s) ** 2 - math.log(s) - 0.5 * math.log(2 * math.pi)


def oracle_potential_and_grad(z, lam, em_on):
    """-log joint of the model and its gradient, by hand, in float64."""
    w, b = z["w"], z["b"]
    r = Y - X @ w - b
    u = 0.5 * np.sum(r**2) + 0.5 * N * math.log(2 * math.pi)
    gw, gb = -X.T @ r, -np.sum(r)
    u += 0.5 * b**2 + 0.5 * math.log(2 * math.pi)
    gb += b
    if em_on:
        u += core.surrogate_energy({"w": w}, lam, xp=np)
        gw = gw + lam["w"] * w
    else:
        slab = math.log(PROB) + _log_norm(w, SLAB)
        spike = math.log(1 - PROB) + _log_norm(w, SPIKE)
        top = np.maximum(slab, spike)
        lse = top + np.log(np.exp(slab - top) + np.exp(spike - top))
        u -= np.sum(lse)
        r_slab = np.exp(slab - lse)
        gw = gw + r_slab * w / SLAB**2 + (1 - r_slab) * w / SPIKE**2
    return u, {"w": gw, "b": np.asarray(gb)}


def _settings(preconditioner, em):
    return core.SGHMCSettings(
        step_size=KWARGS["step_size"],
        schedule="constant",
        num_steps=None,
        num_cycles=1,
        momentum_decay=KWARGS["momentum_decay"],
        temperature=KWARGS["temperature"],
        preconditioner=preconditioner,
        rmsprop_beta=0.99,
        rmsprop_delta=1e-5,
        ke_fan_eta=0.1,
        ke_fan=(1.0, 1),  # no data plate: the data size the kernels see is 1
        num_data=1,
        num_weights=D + 1,
        em=em,
        spike_slab={
            "w": tuple(np.full(D, v) for v in (PROB, SPIKE, SLAB)),
        },
    )


def _f64(tree):
    if tree is None or isinstance(tree, bool | int | float):
        return tree
    if isinstance(tree, dict):
        return {k: _f64(v) for k, v in tree.items()}
    if isinstance(tree, tuple):
        return tuple(_f64(v) for v in tree)
    if isinstance(tree, torch.Tensor):
        return tree.detach().double().numpy()
    return np.asarray(tree, np.float64)


def _as_oracle_state(state, i, em_on):
    """The kernel's state in float64 NumPy (the oracle's own bookkeeping fields)."""
    return core.SGHMCState(
        i=i,
        z=_f64(state.z),
        u=_f64(state.u),
        potential_energy=0.0,
        step_size=KWARGS["step_size"],
        sparsity=0.0,
        epoch_key=None,
        pos=0,
        precond=_f64(state.precond),
        lam=_f64(state.lam),
        mask=_f64(state.mask),
        pi=_f64(state.pi),
        em_on=bool(em_on),
        rng_key=None,
    )


def _compare(got, want, what):
    for field in ("z", "u", "lam", "mask", "pi"):
        g, w = _f64(getattr(got, field)), getattr(want, field)
        for k in w:
            np.testing.assert_allclose(
                g[k], w[k], rtol=2e-4, atol=1e-6, err_msg=f"{what}: {field}[{k}]"
            )
    if want.precond is not None:
        leaves_g = jax.tree.leaves(_f64(got.precond))
        leaves_w = jax.tree.leaves(want.precond)
        for g, w in zip(leaves_g, leaves_w, strict=True):
            np.testing.assert_allclose(g, w, rtol=2e-4, atol=1e-6, err_msg=what)
    assert float(got.potential_energy) == pytest.approx(want.potential_energy, rel=1e-4)
    assert float(got.sparsity) == pytest.approx(float(want.sparsity), abs=1e-7)
    assert bool(got.em_on) == bool(want.em_on)


EM_ARGS = dict(every=2, warmup=1, hard_threshold=1e-3, groups=None)


@pytest.mark.parametrize("preconditioner", [None, "rmsprop", "ke_fan"])
def test_numpyro_kernel_steps_are_the_numpy_oracle(preconditioner):
    em = NEM(**EM_ARGS)
    kernel = NSGHMC(
        nmodel,
        preconditioner=preconditioner,
        em=em,
        init_strategy=init_to_value(
            values={k: jnp.asarray(v) for k, v in INIT.items()}
        ),
        **KWARGS,
    )
    args = (jnp.asarray(X, jnp.float32), jnp.asarray(Y, jnp.float32))
    state = kernel.init(jax.random.PRNGKey(0), 0, None, args, {})
    settings = _settings(preconditioner, em)
    pruned_seen = False
    for i in range(STEPS):
        # the kernel's documented noise: one normal per site from the state's key
        _, k_noise, _ = jax.random.split(state.rng_key, 3)
        leaves, tree = jax.tree.flatten(state.z)
        keys = jax.random.split(k_noise, len(leaves))
        noise = jax.tree.unflatten(
            tree,
            [
                jax.random.normal(k, x.shape, x.dtype)
                for k, x in zip(keys, leaves, strict=True)
            ],
        )
        want = core.step(
            _as_oracle_state(state, i, state.em_on),
            _f64(noise),
            oracle_potential_and_grad,
            settings,
            xp=np,
        )
        state = kernel.sample(state, args, {})
        _compare(state, want, f"NumPyro step {i}")
        pruned_seen |= float(state.sparsity) > 0
    assert pruned_seen and bool(state.em_on)  # the run exercised EM and pruning


@pytest.mark.parametrize("preconditioner", [None, "rmsprop", "ke_fan"])
def test_pyro_kernel_steps_are_the_numpy_oracle(preconditioner):
    em = PEM(**EM_ARGS)
    kernel = PSGHMC(pmodel, preconditioner=preconditioner, em=em, **KWARGS)
    kernel.initial_params = {
        k: torch.as_tensor(v, dtype=torch.float32) for k, v in INIT.items()
    }
    args = (
        torch.as_tensor(X, dtype=torch.float32),
        torch.as_tensor(Y, dtype=torch.float32),
    )
    kernel.setup(0, *args)
    settings = _settings(preconditioner, em)
    params = dict(kernel.initial_params)
    pruned_seen = False
    for i in range(STEPS):
        # the kernel's documented noise: torch.randn_like per site, in site order
        torch.manual_seed(100 + i)
        noise = {k: torch.randn_like(v) for k, v in params.items()}
        old = kernel._state._replace(z=params)
        want = core.step(
            _as_oracle_state(old, i, old.em_on),
            _f64(noise),
            oracle_potential_and_grad,
            settings,
            xp=np,
        )
        torch.manual_seed(100 + i)
        params = kernel.sample(params)
        _compare(kernel._state, want, f"Pyro step {i}")
        pruned_seen |= kernel.sparsity > 0
    assert pruned_seen and bool(kernel._state.em_on)
