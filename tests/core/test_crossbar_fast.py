"""The crossbar's fast paths compute the same values as the plain formulas: bound
management's second product skipped when a bound proves it unneeded (NumPy, and the
NumPyro host's ``cond`` under ``vmap`` and ``grad``), and with ``gmin = 0`` only the
"on" device of each re-derived pair carried through drift and read noise."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ppl_hw import devices
from ppl_hw.core import NUMPY, pcm
from ppl_hw.core import crossbar as cx

rng = np.random.default_rng(5)
matvec = NUMPY.bind(cx.analog_matvec)
tile = NUMPY.bind(cx.tile_matvec)
first = NUMPY.bind(cx.tile_matvec_first_pass)
eager = NUMPY.bind(cx.eager_tile_matvec)


@pytest.mark.parametrize("scale", [0.02, 0.3, 3.0])
@pytest.mark.parametrize("dev", [devices.PCM(), devices.Ideal(adc_bits=6, dac_bits=4)])
def test_first_pass_is_the_tile_whenever_it_says_so(scale, dev):
    x = rng.normal(size=(40, 32))
    x[3] = 0.0  # a zero row gives zero
    w = rng.normal(size=(32, 12)) * scale
    draw = rng.standard_normal((40, 12))
    y, ok = first(x, w, dev, draw)
    exact = tile(x, w, dev, draw)
    if ok:
        np.testing.assert_array_equal(y, exact)
    np.testing.assert_array_equal(eager(x, w, dev, draw), exact)
    got = matvec(x, w, dev, draw, tile=lambda a, b, d: eager(a, b, dev, d))
    np.testing.assert_array_equal(got, matvec(x, w, dev, draw))


def test_first_pass_proves_small_outputs_and_refuses_big_ones():
    dev = devices.PCM()
    x = rng.uniform(-1, 1, size=(50, 64))
    assert first(x, rng.normal(size=(64, 10)) / 8, dev, np.zeros((50, 10)))[1]
    # outputs near out_bound (12): red = 2 for some rows, the first pass refuses
    w = np.full((64, 10), 0.4)
    x = np.ones((50, 64))
    _, ok = first(x, w, dev, np.zeros((50, 10)))
    assert not ok  # (the tile itself scales by red = 4: output 25.6 > 12)
    np.testing.assert_allclose(tile(x, w, dev, np.zeros((50, 10))), x @ w, rtol=0.03)


@pytest.mark.parametrize("scale", [0.05, 0.5])
def test_numpyro_fast_tile_equals_the_plain_tile_under_vmap_and_grad(scale):
    from ppl_hw.numpyro import handlers as h

    dev = devices.PCM(max_input_size=40)
    k = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(k[0], (3, 20, 64))
    w = scale * jax.random.normal(k[1], (3, 64, 12))
    d = jax.random.normal(k[2], (3, 2, 20, 12))

    def fast(x, w, d):
        return h._analog_matvec(x, w, d, device=dev)

    def plain(x, w, d):
        return cx.analog_matvec(x, w, dev, d, xp=h._xp, special=h._sp)

    a = jax.jit(jax.vmap(fast))(x, w, d)
    b = jax.jit(jax.vmap(plain))(x, w, d)
    # the same formulas compiled in two graphs: float32 rounding may differ by an
    # ulp, and (rarely) move a value on an ADC step boundary by one step
    diff = np.abs(np.asarray(a) - np.asarray(b))
    step = 2 * dev.out_bound / (2**dev.adc_bits - 2) * float(jnp.abs(x).max())
    assert diff.max() <= step * 1.01
    assert np.mean(diff > 1e-5) <= 0.01
    assert a.dtype == jnp.float32

    c = jax.random.normal(jax.random.PRNGKey(9), a.shape)

    def loss(f):  # linear: the cotangent does not depend on the forward value
        return lambda x, w: jnp.sum(c * jax.vmap(f)(x, w, d))

    ga = jax.grad(loss(fast), argnums=(0, 1))(x, w)
    gb = jax.grad(loss(plain), argnums=(0, 1))(x, w)
    for u, v in zip(ga, gb, strict=True):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), rtol=1e-5, atol=1e-5)


def _two_device_reference(w, dev, t, chip, read):
    """Steps 1-8 of the module doc with both devices of every pair (no tiles, layer
    scale, no stuck devices), in float64."""
    span = dev.gmax - dev.gmin

    def pair(v, s):
        return [np.clip(v * s, 0, span) + dev.gmin, np.clip(-v * s, 0, span) + dev.gmin]

    s = span / np.abs(w).max()
    gs = pair(w, s)
    progs = [
        np.maximum(g + pcm.pcm_programming_sigma(g, gmax=dev.gmax, xp=np) * xi, 0)
        for g, xi in zip(gs, chip["prog"], strict=True)
    ]
    w_prog = (progs[0] - progs[1]) / s
    s2 = span / np.abs(w_prog).max()
    outs = []
    for i, g2 in enumerate(pair(w_prog, s2)):
        nu = pcm.pcm_drift_nu(gs[i], chip["nu"][i], gmax=dev.gmax, xp=np)
        g_t = g2 * ((t + dev.drift_t0) / dev.drift_t0) ** -nu
        outs.append(pcm.pcm_read(g_t, g2, read["read"][i], t, gmax=dev.gmax, xp=np))
    w_t = (outs[0] - outs[1]) / s2
    return w_t * np.abs(w_prog).mean() / np.abs(w_t).mean()


def test_gmin_zero_path_equals_both_devices_of_each_pair():
    dev = devices.PCM()
    assert dev.gmin == 0.0
    w = rng.normal(size=(48, 20)) * 0.2
    w[0, 0] = 0.0
    chip = {k: rng.standard_normal((2, 48, 20)) for k in dev.chip_draws}
    read = {k: rng.standard_normal((2, 48, 20)) for k in dev.read_draws}
    got = NUMPY.bind(cx.crossbar_weights)(w, dev, 3600.0, chip, read)
    ref = _two_device_reference(w, dev, 3600.0, chip, read)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


def test_read_sigma_is_the_power_law():
    g = np.concatenate([[0.0, 1e-9, 2e-5, 1e-3], np.linspace(0, 25, 501)])
    got = pcm.pcm_read_sigma(g, 86_400.0, xp=np)
    q = np.minimum(0.0088 / np.maximum((g / 25) ** 0.65, 1e-3), 0.2)
    ref = q * math.sqrt(math.log((86_400.0 + 20 + 250e-9) / (2 * 250e-9)))
    np.testing.assert_allclose(got, ref, rtol=1e-12)
    g32 = pcm.pcm_read_sigma(jnp.asarray(g, jnp.float32), 86_400.0, xp=jnp)
    assert g32.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(g32), ref, rtol=2e-6)
