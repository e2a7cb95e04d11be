"""Crossbar non-idealities (NumPy core, float64) against the published formulas:
aihwkit's PCM model (docs/crossbar.md), fault rates, quantisation levels, converter steps.

Each statistical test compares a sample statistic of n devices with its exact value;
tolerances are 5 standard errors (false alarm < 6e-7 per comparison) unless stated.
"""

import math

import numpy as np
import pytest
import scipy.integrate as si
import scipy.stats

from ppl_hw import devices
from ppl_hw.core import NUMPY, pcm
from ppl_hw.core import crossbar as cx

weights = NUMPY.bind(cx.crossbar_weights)
matvec = NUMPY.bind(cx.analog_matvec)
N = 200_000
rng = np.random.default_rng(0)


def _draws(names, shape, binary=False, seed=1):
    g = np.random.default_rng(seed)
    out = {}
    for name, s in cx.draw_shapes(names, shape, binary).items():
        out[name] = (
            g.standard_normal(s) if cx.DRAW_KINDS[name] == "normal" else g.random(s)
        )
    return out


def _site(level):
    """n weights at `level` of the largest, plus one anchor at 1 so that the scale is
    s = gmax: the + device targets level * gmax, the - device gmin = 0."""
    return np.r_[1.0, np.full(N, level)]


def _read(device, w, t, seed=1):
    return weights(
        w,
        device,
        t,
        _draws(device.chip_draws, w.shape, device.binary, seed),
        _draws(device.read_draws, w.shape, device.binary, seed + 100),
    )


def _sigma_prog(g):
    c0, c1, c2 = 0.26348, 1.9650, -1.1731  # aihwkit PCMLikeNoiseModel, gmax 25 µS
    return c0 + c1 * g + c2 * g * g


@pytest.mark.parametrize("level", [0.1, 0.3, 0.6, 1.0])
def test_pcm_programming_noise_std_per_level(level):
    dev = devices.PCM(drift=None, read_noise=None)
    g = _read(dev, _site(level), 0.0)[1:] * dev.gmax  # G+ - G- in µS
    # G- targets 0: max(0, N(0, s0^2)) has variance s0^2 (1/2 - 1/(2 pi))
    s0 = _sigma_prog(0.0)
    expected = math.sqrt(_sigma_prog(level) ** 2 + s0**2 * (0.5 - 0.5 / math.pi))
    assert g.std() == pytest.approx(expected, rel=5 * math.sqrt(2 / N))
    mean = level * dev.gmax - s0 / math.sqrt(2 * math.pi)
    assert g.mean() == pytest.approx(mean, abs=5 * expected / math.sqrt(N))


def _drift_ratio_moments(level, t):
    """E[r] and E[r^2] of r = ((t + t0)/t0)^-nu, nu = |N(mu_nu, sd_nu)| (quadrature)."""
    mu, sd = (float(v) for v in pcm.pcm_drift_nu_moments(np.array(level * 25.0), xp=np))
    lg = math.log((t + 20.0) / 20.0)

    def moment(k):
        f = lambda z: math.exp(-k * abs(mu + sd * z) * lg) * scipy.stats.norm.pdf(z)  # noqa: E731
        return si.quad(f, -12, 12, points=[-mu / sd])[0]

    return moment(1), moment(2)


@pytest.mark.parametrize("t", [3600.0, 86_400.0, 3.15e7])
@pytest.mark.parametrize("level", [0.05, 0.5])
def test_pcm_mean_drift_ratio(level, t):
    dev = devices.PCM(programming=None, read_noise=None, drift_compensation=False)
    ratio = _read(dev, _site(level), t)[1:] / level  # G(t) / G_prog, G- = 0 stays 0
    m1, m2 = _drift_ratio_moments(level, t)
    se = math.sqrt(m2 - m1 * m1) / math.sqrt(N)
    assert ratio.mean() == pytest.approx(m1, abs=5 * se)
    # the law itself: t0 = 20 s, mean exponent clip(-0.0155 ln g + 0.0244, 0.049, 0.1)
    assert m1 < 1.0


@pytest.mark.parametrize("t", [1.0, 86_400.0, 3.15e7])
@pytest.mark.parametrize("level", [0.05, 0.5, 1.0])
def test_pcm_read_noise_std(level, t):
    dev = devices.PCM(programming=None, drift=None, drift_compensation=False)
    rel = _read(dev, _site(level), t)[1:] / level - 1.0
    q = min(0.0088 / max(level**0.65, 1e-3), 0.2)
    sigma = q * math.sqrt(math.log((t + 20.0 + 250e-9) / (2 * 250e-9)))
    assert rel.std() == pytest.approx(sigma, rel=5 * math.sqrt(2 / N))
    assert abs(rel.mean()) < 5 * sigma / math.sqrt(N)


def test_pcm_read_noise_is_fresh_and_chip_is_fixed():
    dev = devices.PCM()
    w = rng.normal(size=(30, 20))
    chip = _draws(dev.chip_draws, w.shape)
    a = weights(w, dev, 60.0, chip, _draws(dev.read_draws, w.shape, seed=5))
    b = weights(w, dev, 60.0, chip, _draws(dev.read_draws, w.shape, seed=6))
    c = weights(w, dev, 60.0, chip, _draws(dev.read_draws, w.shape, seed=5))
    assert not np.allclose(a, b)
    np.testing.assert_array_equal(a, c)


def test_stuck_at_rates_binomial():
    dev = devices.Ideal(stuck_at_0=0.1, stuck_at_1=0.05)
    w = _site(0.5)
    out = _read(dev, w, 0.0)[1:]
    r0, r1 = 0.1, 0.05
    # unchanged: + device healthy and - device not stuck high (stuck low = its target)
    k_same = int(np.sum(out == 0.5))
    p_same = (1 - r0 - r1) * (1 - r1)
    # 1.0: + stuck high and - not stuck high
    k_high = int(np.sum(out == 1.0))
    p_high = r1 * (1 - r1)
    # two-sided binomial tests, false alarm 1e-3 each
    assert scipy.stats.binomtest(k_same, N, p_same).pvalue > 1e-3
    assert scipy.stats.binomtest(k_high, N, p_high).pvalue > 1e-3
    allowed = {0.5, 1.0, 0.0, -0.5, -1.0}
    assert set(np.unique(out).tolist()) <= allowed


@pytest.mark.parametrize("levels", [2, 3, 16])
def test_quantisation_levels(levels):
    dev = devices.Ideal(levels=levels, gmin=2.0, gmax=12.0)
    w = np.linspace(-1.0, 1.0, 20_001)
    out = _read(dev, w, 0.0)
    distinct = np.unique(np.round(out, 12))
    # a differential pair of L-level devices holds 2L - 1 weights
    assert distinct.size == 2 * levels - 1
    step = 1.0 / (levels - 1)  # in units of max|w| (scale s = span / max|w|)
    np.testing.assert_allclose(distinct / step, np.round(distinct / step), atol=1e-9)
    assert np.max(np.abs(out - w)) <= step / 2 + 1e-12


def test_column_mapping_scales_each_output_unit():
    dev = devices.Ideal(levels=5, mapping="column")
    w = np.array([[0.1, 10.0], [-0.05, 5.0]])
    out = _read(dev, w, 0.0)
    # each column uses its own max: small column keeps its resolution
    np.testing.assert_allclose(out[:, 0], [0.1, -0.05], atol=0.1 / 4 / 2 + 1e-12)
    layer = _read(devices.Ideal(levels=5), w, 0.0)
    np.testing.assert_array_equal(layer[:, 0], [0.0, 0.0])  # 10 / 4 steps swamp it


def test_drift_compensation_restores_the_mean_magnitude():
    dev = devices.PCM(drift_compensation=True, read_noise=None, programming=None)
    w = rng.normal(size=(64, 32))
    out = _read(dev, w, 3.15e7)
    np.testing.assert_allclose(np.mean(np.abs(out)), np.mean(np.abs(w)), rtol=1e-12)
    plain = _read(
        devices.PCM(read_noise=None, programming=None, drift_compensation=False),
        w,
        3.15e7,
    )
    assert np.mean(np.abs(plain)) < 0.8 * np.mean(np.abs(w))  # a year of drift


def test_gaussian_programming_and_read_models():
    dev = devices.Ideal(programming="gaussian", programming_sigma=0.02, gmax=10.0)
    g = _read(dev, _site(0.5), 0.0)[1:] * 10.0
    # + device: N(5, 0.2^2); - device: max(0, N(0, 0.2^2))
    expected = math.sqrt(0.2**2 + 0.2**2 * (0.5 - 0.5 / math.pi))
    assert g.std() == pytest.approx(expected, rel=5 * math.sqrt(2 / N))
    dev = devices.Ideal(read_noise="gaussian", read_noise_sigma=0.03)
    rel = _read(dev, _site(0.5), 5.0)[1:] / 0.5 - 1
    assert rel.std() == pytest.approx(0.03, rel=5 * math.sqrt(2 / N))


def test_rram_programming_polynomial():
    dev = devices.RRAM(drift=None, read_noise=None)
    g = _read(dev, _site(0.31), 0.0)[1:] * dev.gmax
    x = 0.31
    c = cx.RRAM_PROG_COEFF
    s_plus = sum(ci * x**i for i, ci in enumerate(c))
    s0 = c[0]
    expected = math.sqrt(s_plus**2 + s0**2 * (0.5 - 0.5 / math.pi))
    assert g.std() == pytest.approx(expected, rel=5 * math.sqrt(2 / N))
    assert s_plus == pytest.approx(2.30, abs=0.01)  # aihwkit's peak near x = 0.31


def test_binary_cells_write_and_read_errors():
    dev = devices.MTJ(write_error_rate=0.02, read_disturb_rate=0.01)
    w = np.where(rng.random(N) < 0.5, -1.0, 1.0)
    out = _read(dev, w, 0.0)
    flipped = np.mean(out != w)
    p = 0.02 * (1 - 0.01) + 0.01 * (1 - 0.02)  # exactly one of the two flips
    assert scipy.stats.binomtest(int(np.sum(out != w)), N, p).pvalue > 1e-3
    assert set(np.unique(out)) <= {-1.0, 1.0} and flipped > 0
    # a 2-value grid maps its values, not signs
    g = np.where(w > 0, 1.0, 0.0)
    out = weights(
        g,
        dev,
        0.0,
        _draws(dev.chip_draws, w.shape, True, seed=7),
        _draws(dev.read_draws, w.shape, True, seed=8),
        grid=(0.0, 1.0),
    )
    assert set(np.unique(out)) <= {0.0, 1.0}
    assert scipy.stats.binomtest(int(np.sum(out != g)), N, p).pvalue > 1e-3


def test_binarize_maps_to_sign_times_mean_magnitude():
    dev = devices.MTJ(binarize=True, write_error_rate=0.0, read_disturb_rate=0.0)
    w = rng.normal(size=1000)
    out = weights(w, dev, 0.0, {}, {})
    np.testing.assert_allclose(out, np.where(w >= 0, 1, -1) * np.mean(np.abs(w)))


def test_ideal_converters_are_exact_and_dac_adc_steps():
    x = rng.uniform(-2, 2, size=(50, 8))
    w = rng.normal(size=(8, 5)) * 0.3
    np.testing.assert_allclose(matvec(x, w, devices.Ideal(), None), x @ w, rtol=1e-12)
    dev = devices.Ideal(dac_bits=4)
    eye = np.eye(8)
    xq = matvec(x, eye, dev, None)
    nm = np.abs(x).max(-1, keepdims=True)
    step = 2.0 / (2**4 - 2)  # 7 steps per unit: 15 levels
    np.testing.assert_allclose(xq / nm / step, np.round(xq / nm / step), atol=1e-9)
    assert np.unique(np.round(xq / nm, 9)).size <= 2**4 - 1
    dev = devices.Ideal(adc_bits=6, out_bound=4.0)
    xs = x / np.abs(x).max(-1, keepdims=True)  # max|x| = 1: no rescaling
    y = matvec(xs, w, dev, None)
    step = 2 * 4.0 / (2**6 - 2)
    np.testing.assert_allclose(y / step, np.round(y / step), atol=1e-9)
    assert np.max(np.abs(y - xs @ w)) <= step / 2 + 1e-12


def test_adc_bound_management_scales_big_outputs():
    dev = devices.Ideal(adc_bits=9, out_bound=1.0)
    x = np.ones((1, 16))
    w = np.ones((16, 1)) * 0.5  # noise-free output 8 = 8 x out_bound
    y = matvec(x, w, dev, None)
    assert y[0, 0] == pytest.approx(8.0, rel=1e-2)  # red = 8 keeps it in range
    zero = matvec(np.zeros((2, 16)), w, devices.PCM(), np.ones((2, 1)))
    np.testing.assert_array_equal(zero, 0.0)  # aihwkit: an all-zero input gives zero


def test_out_noise_units_and_ir_drop_sign():
    dev = devices.Ideal(out_noise=0.1)
    x = rng.uniform(-1, 1, size=(400, 8))
    x[:, 0] = 1.0  # max|x| = 1
    w = rng.normal(size=(8, 3))
    xi = rng.standard_normal((400, 3))
    np.testing.assert_allclose(matvec(x, w, dev, xi), x @ w + 0.1 * xi, rtol=1e-12)
    dev = devices.Ideal(ir_drop=1.0)
    xp_ = np.ones((1, 512))
    wp = np.ones((512, 1))
    y = matvec(xp_, wp, dev, None)
    # aihwkit's worked example: n = 512, all ones: a = 0.448, drop ~ c (2/3) n
    a = 512 * 512 / (1 / 0.35 / 5e-6)
    c = a * (a * (0.05 * a - 0.2) + 0.5)
    p = 1 - np.arange(512) / 512
    expected = 512 - c * np.sum(1 - p * p)
    assert y[0, 0] == pytest.approx(expected, rel=1e-12)
    assert 0.1 < 1 - y[0, 0] / 512 < 0.15


# -- tiles ---------------------------------------------------------------------


def _tiled_reference(x, w, dev, draws, tile=512):
    """aihwkit's TileModuleArray by hand: per tile (i, j) of at most tile x tile,
    abs-max noise management of the tile's input slice, iterative bound management,
    DAC, product, output noise, ADC, rescale; the tiles' outputs summed over i."""
    n, m = w.shape
    rin = 2 * dev.inp_bound / (2**dev.dac_bits - 2)
    rout = 2 * dev.out_bound / (2**dev.adc_bits - 2)
    y = np.zeros((x.shape[0], m))
    for i, r0 in enumerate(range(0, n, tile)):
        xs = x[:, r0 : r0 + tile]
        for c0 in range(0, m, tile):
            ws = w[r0 : r0 + tile, c0 : c0 + tile]
            for k in range(x.shape[0]):
                amax = np.abs(xs[k]).max()
                v = xs[k] / amax
                peak = np.abs(v @ ws).max() / dev.out_bound
                red = 1.0
                while peak / red > 1.0 and red < 16:
                    red *= 2
                v = np.clip(
                    np.round(v / red / rin) * rin, -dev.inp_bound, dev.inp_bound
                )
                out = v @ ws + dev.out_noise * draws[i, k, c0 : c0 + tile]
                out = np.clip(
                    np.round(out / rout) * rout, -dev.out_bound, dev.out_bound
                )
                y[k, c0 : c0 + tile] += out * amax * red
    return y


def test_a_784_x_1000_layer_on_512_tiles_equals_the_tiled_reference():
    dev = devices.PCM()
    assert (dev.max_input_size, dev.max_output_size) == (512, 512)
    g = np.random.default_rng(11)
    x = g.uniform(-1, 1, size=(6, 784)) * np.r_[np.ones(512), 5 * np.ones(272)]
    w = g.normal(size=(784, 1000)) * 0.05
    shape = cx.out_draw_shape(x.shape, w.shape, dev)
    assert shape == (2, 6, 1000)
    draws = g.standard_normal(shape)
    got = matvec(x, w, dev, draws)
    np.testing.assert_allclose(
        got, _tiled_reference(x, w, dev, draws), rtol=1e-5, atol=1e-5
    )
    # one tile for the whole layer is a different device (one input normalisation)
    whole = dev.replace(max_input_size=None, max_output_size=None)
    one = matvec(x, w, whole, draws[:1])
    assert np.max(np.abs(one - got)) > 1e-2


def test_layers_smaller_than_a_tile_are_unchanged_by_tiling():
    dev = devices.PCM(mapping="column")
    w = rng.normal(size=(64, 10))
    x = rng.normal(size=(5, 64))
    draws = _draws(dev.chip_draws, w.shape), _draws(dev.read_draws, w.shape, seed=9)
    untiled = dev.replace(max_input_size=None, max_output_size=None)
    np.testing.assert_array_equal(
        weights(w, dev, 3600.0, *draws), weights(w, untiled, 3600.0, *draws)
    )
    xi = rng.standard_normal((5, 10))
    np.testing.assert_array_equal(matvec(x, w, dev, xi), matvec(x, w, untiled, xi))


@pytest.mark.parametrize(
    "layout, shape",
    [
        ("io", (700, 600)),
        ("oi", (600, 700)),
        ("oi", (40, 30, 5, 5)),
        ("kio", (5, 5, 30, 40)),
    ],
)
def test_tiled_weights_are_per_tile_programming_of_the_crossbar_matrix(layout, shape):
    """Each tile has its own scale and drift compensation: the tiled site equals
    the core applied tile by tile to the (inputs, outputs) matrix."""
    dev = devices.PCM(max_input_size=256, max_output_size=300)
    w = rng.normal(size=shape) * np.linspace(0.1, 2.0, shape[-1])
    chip, read = (
        _draws(dev.chip_draws, w.shape),
        _draws(dev.read_draws, w.shape, seed=4),
    )
    got = weights(w, dev, 86_400.0, chip, read, layout=layout)
    m = cx.to_matrix(w, layout, xp=np)
    np.testing.assert_array_equal(cx.from_matrix(m, layout, shape, xp=np), w)
    cm = {
        k: np.stack([cx.to_matrix(v[j], layout, xp=np) for j in (0, 1)])
        for k, v in chip.items()
    }
    rm = {
        k: np.stack([cx.to_matrix(v[j], layout, xp=np) for j in (0, 1)])
        for k, v in read.items()
    }
    expected = np.zeros_like(m)
    for r0, r1 in cx.tile_bounds(m.shape[0], 256):
        for c0, c1 in cx.tile_bounds(m.shape[1], 300):
            cut = lambda d: {k: v[:, r0:r1, c0:c1] for k, v in d.items()}  # noqa: B023, E731
            expected[r0:r1, c0:c1] = weights(
                m[r0:r1, c0:c1], dev, 86_400.0, cut(cm), cut(rm), layout=None
            )
    np.testing.assert_allclose(cx.to_matrix(got, layout, xp=np), expected, rtol=1e-12)
    assert cx.num_tiles(shape, layout, dev) == len(
        cx.tile_bounds(m.shape[0], 256)
    ) * len(cx.tile_bounds(m.shape[1], 300))


def test_aihwkit_order_rederives_conductances_before_drift():
    """aihwkit's apply_drift_noise converts the programmed weights to conductances
    again (rescaled by their own maximum): with a noisy anchor at the maximum, the
    drift acts on w_prog * gmax / max|w_prog|."""
    dev = devices.PCM(read_noise=None, drift_compensation=False)
    w = np.r_[1.0, np.full(999, 0.5)]
    chip = _draws(dev.chip_draws, w.shape, seed=3)
    prog_only = weights(w, dev, 0.0, chip, {})  # t = 0: no drift, no re-derivation
    got = weights(w, dev, 86_400.0, chip, {})
    s2 = dev.gmax / np.max(np.abs(prog_only))
    gp = np.clip(prog_only * s2, 0, dev.gmax)
    gm = np.clip(-prog_only * s2, 0, dev.gmax)
    s1 = dev.gmax
    g_target = [np.clip(w * s1, 0, dev.gmax), np.clip(-w * s1, 0, dev.gmax)]
    nu = [
        pcm.pcm_drift_nu(g_target[i], chip["nu"][i], gmax=dev.gmax, scale=1.0, xp=np)
        for i in (0, 1)
    ]
    lg = math.log((86_400.0 + 20.0) / 20.0)
    expected = (gp * np.exp(-nu[0] * lg) - gm * np.exp(-nu[1] * lg)) / s2
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("value", [0, -2, 2.5, True, "512"])
def test_tile_sizes_must_be_positive_ints(value):
    for field in ("max_input_size", "max_output_size"):
        with pytest.raises((TypeError, ValueError), match=field):
            devices.PCM(**{field: value})
