"""The NumPyro and Pyro distributions agree on the same inputs (docs/architecture.md tolerances:
rtol 1e-5 in float32, 1e-10 in float64), and build identical noise tables."""

import contextlib

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as ndist
import pyro.distributions as pdist
import pytest
import torch
from numpyro.distributions.kl import kl_divergence as nkl
from torch.distributions import kl_divergence as pkl

import ppl_hw.numpyro.distributions as nd
import ppl_hw.pyro.distributions as pd

from .dist_cases import (
    DEVICE_LOC,
    DEVICE_SCALE,
    DISCRETE_LOGITS,
    GRID,
    SS_PROB,
    SS_SLAB,
    SS_SPIKE,
    noise_samples,
)
from .helpers import TOL

DTYPES = [np.float32, np.float64]
TORCH = {np.float32: torch.float32, np.float64: torch.float64}


@contextlib.contextmanager
def x64(dtype):
    if dtype == np.float64:
        with jax.enable_x64(True):
            yield
    else:
        yield


def pair(dtype, name="mtj"):
    s = noise_samples(name)
    with x64(dtype):
        a = nd.EmpiricalNoise(s)
    return a, pd.EmpiricalNoise(s)


def close(a, b, dtype):
    a = np.asarray(a)
    b = b.detach().numpy() if isinstance(b, torch.Tensor) else np.asarray(b)
    assert a.dtype == b.dtype == dtype
    np.testing.assert_allclose(a, b, **TOL[dtype])


def test_noise_tables_are_identical():
    a, b = pair(np.float64, "pcm")
    for field in ("density", "cumulative"):
        np.testing.assert_array_equal(getattr(a.table, field), getattr(b.table, field))
    assert a.table.entropy == b.table.entropy and a.table.z0 == b.table.z0
    # and a table moves between backends unchanged
    c = pd.EmpiricalNoise.from_table(a.table)
    assert c.table is a.table


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
@pytest.mark.parametrize("name", ["gaussian", "mtj", "pcm", "uniform"])
def test_empirical_noise(dtype, name):
    a, b = pair(dtype, name)
    x = np.linspace(-6, 6, 301).astype(dtype)
    u = np.linspace(1e-4, 1 - 1e-4, 301).astype(dtype)
    with x64(dtype):
        close(a.log_prob(jnp.asarray(x)), b.log_prob(torch.as_tensor(x)), dtype)
        close(a.cdf(jnp.asarray(x)), b.cdf(torch.as_tensor(x)), dtype)
        close(a.icdf(jnp.asarray(u)), b.icdf(torch.as_tensor(u)), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_device_noise(dtype):
    a, b = pair(dtype)
    loc, scale = DEVICE_LOC.astype(dtype), DEVICE_SCALE.astype(dtype)
    w = (loc + scale * np.linspace(-3, 3, 7)[:, None, None]).astype(dtype)
    u = np.linspace(0.01, 0.99, 7)[:, None, None].astype(dtype) * np.ones_like(loc)
    with x64(dtype):
        da = nd.DeviceNoise(jnp.asarray(loc), jnp.asarray(scale), a)
        db = pd.DeviceNoise(torch.as_tensor(loc), torch.as_tensor(scale), b)
        close(da.log_prob(jnp.asarray(w)), db.log_prob(torch.as_tensor(w)), dtype)
        close(da.cdf(jnp.asarray(w)), db.cdf(torch.as_tensor(w)), dtype)
        close(da.icdf(jnp.asarray(u)), db.icdf(torch.as_tensor(u)), dtype)
        close(da.mean, db.mean, dtype)
        close(da.variance, db.variance, dtype)
        close(da.entropy(), db.entropy(), dtype)
        pa = ndist.Normal(jnp.asarray(dtype(0.2)), jnp.asarray(dtype(1.3)))
        pb = pdist.Normal(
            torch.tensor(0.2, dtype=TORCH[dtype]), torch.tensor(1.3, dtype=TORCH[dtype])
        )
        close(nkl(da, pa), pkl(db, pb), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_discrete_weight(dtype):
    logits = DISCRETE_LOGITS.astype(dtype)
    other = (DISCRETE_LOGITS[::-1] * 0.5).astype(dtype)
    x = np.array([-1.0, 0.0, 1.0, 1.0], dtype)[:, None]
    with x64(dtype):
        da = nd.DiscreteWeight(GRID, logits=jnp.asarray(logits))
        db = pd.DiscreteWeight(GRID, logits=torch.as_tensor(logits))
        close(da.log_prob(jnp.asarray(x)), db.log_prob(torch.as_tensor(x)), dtype)
        for attr in ("mean", "variance", "mode", "probs"):
            close(getattr(da, attr), getattr(db, attr), dtype)
        close(da.entropy(), db.entropy(), dtype)
        qa = nd.DiscreteWeight(GRID, logits=jnp.asarray(other))
        qb = pd.DiscreteWeight(GRID, logits=torch.as_tensor(other))
        close(nkl(da, qa), pkl(db, qb), dtype)
        close(da.enumerate_support(), db.enumerate_support(), dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_spike_and_slab(dtype):
    params = [p.astype(dtype) for p in (SS_PROB, SS_SPIKE, SS_SLAB)]
    x = np.linspace(-2, 2, 21)[:, None].astype(dtype)
    u = np.linspace(0.01, 0.99, 21)[:, None].astype(dtype) * np.ones(4, dtype)
    with x64(dtype):
        da = nd.SpikeAndSlab(*(jnp.asarray(p) for p in params))
        db = pd.SpikeAndSlab(*(torch.as_tensor(p) for p in params))
        close(da.log_prob(jnp.asarray(x)), db.log_prob(torch.as_tensor(x)), dtype)
        close(
            da.inclusion_prob(jnp.asarray(x)),
            db.inclusion_prob(torch.as_tensor(x)),
            dtype,
        )
        close(da.cdf(jnp.asarray(x)), db.cdf(torch.as_tensor(x)), dtype)
        close(da.icdf(jnp.asarray(u)), db.icdf(torch.as_tensor(u)), dtype)
        close(da.variance, db.variance, dtype)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_empirical_noise_log_prob_finite_for_every_finite_float32(backend):
    big = np.finfo(np.float32).max
    x = np.array([-big, -1e30, -1e5, -7.0, 0.0, 7.0, 1e5, 1e30, big], np.float32)
    a, b = pair(np.float32, "mtj")
    out = (
        a.log_prob(jnp.asarray(x))
        if backend == "numpyro"
        else b.log_prob(torch.as_tensor(x))
    )
    assert np.all(np.isfinite(np.asarray(out)))


@pytest.mark.parametrize("kind", ["numpy", "jax", "torch"])
def test_empirical_noise_accepts_numpy_jax_and_torch_samples(kind):
    s = noise_samples("pcm")
    arr = {"numpy": s, "jax": jnp.asarray(s), "torch": torch.as_tensor(s)}[kind]
    for module in (nd, pd):
        t = module.EmpiricalNoise(arr).table
        ref = module.EmpiricalNoise(s).table
        # JAX arrays arrive in float32 (x64 off): the fit differs by that rounding only
        tol = 1e-5 if kind == "jax" else 0.0
        np.testing.assert_allclose(
            t.density, ref.density, rtol=tol, atol=tol * ref.density.max()
        )


def test_with_noise_keeps_means_and_scales():
    a, b = pair(np.float32, "mtj")
    u = nd.EmpiricalNoise(noise_samples("uniform"))
    d = nd.DeviceNoise(
        jnp.asarray(DEVICE_LOC), jnp.asarray(DEVICE_SCALE), a
    ).with_noise(u)
    assert d.noise is u
    np.testing.assert_allclose(d.mean, DEVICE_LOC.astype(np.float32))
    np.testing.assert_allclose(
        d.variance, (DEVICE_SCALE**2).astype(np.float32), rtol=1e-6
    )
    pu = pd.EmpiricalNoise.from_table(u.table)
    e = pd.DeviceNoise(
        torch.as_tensor(DEVICE_LOC), torch.as_tensor(DEVICE_SCALE), b
    ).with_noise(pu)
    assert e.noise is pu and torch.equal(e.loc, torch.as_tensor(DEVICE_LOC))
