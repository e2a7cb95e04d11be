"""ppl_hw.numpyro.distributions: the conventions NumPyro's own distribution tests
check (shapes, infer_shapes, has_rsample, jit / vmap / pytree round trips, gradients,
cdf / icdf, constraints, expand / mask / to_event), goodness of fit, and the
registered KLs.

Statistical tests use fixed seeds; each states its false-alarm rate (the chance that a
correct implementation fails it for a random seed).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import scipy.integrate as si
import scipy.stats
from jax import lax, random
from numpyro.distributions.batch_util import vmap_over
from numpyro.distributions.gof import auto_goodness_of_fit, multinomial_goodness_of_fit
from numpyro.distributions.kl import kl_divergence

from ppl_hw.numpyro.distributions import (
    DeviceNoise,
    DiscreteWeight,
    EmpiricalNoise,
    SpikeAndSlab,
)

from ..dist_cases import (
    DEVICE_LOC,
    DEVICE_SCALE,
    DISCRETE_LOGITS,
    GRID,
    GRID5,
    NOISE_NAMES,
    SS_PROB,
    SS_SLAB,
    SS_SPIKE,
    noise_samples,
)

# gof p-values below this fail: a 0.1 % false-alarm rate per test.
TEST_FAILURE_RATE = 1e-3


@functools.cache
def noise(name="mtj"):
    # cached across tests, so built outside any trace even when first asked for
    # inside jit / lax.map (a cached tracer would leak into later tests)
    with jax.ensure_compile_time_eval():
        return EmpiricalNoise(noise_samples(name))


SS_INNER = (
    np.array([0.2, 0.5, 0.7]),
    np.array([0.05, 0.1, 0.02]),
    np.array([0.5, 2.0, 0.3]),
)

# (id, class, params): params are the __init__ arguments, in order.
CASES = {
    **{f"empirical-{n}": (EmpiricalNoise, (noise_samples(n),)) for n in NOISE_NAMES},
    "device": (DeviceNoise, (DEVICE_LOC, DEVICE_SCALE, None)),
    "discrete": (DiscreteWeight, (GRID, DISCRETE_LOGITS)),
    "discrete5-probs": (
        DiscreteWeight,
        (
            GRID5,
            None,
            np.array([[0.1, 0.2, 0.4, 0.2, 0.1], [0.0, 0.5, 0.25, 0.25, 0.0]]),
        ),
    ),
    "spike-and-slab": (SpikeAndSlab, (SS_PROB, SS_SPIKE, SS_SLAB)),
    "spike-and-slab-inner": (SpikeAndSlab, SS_INNER),
}
CONTINUOUS = [k for k in CASES if not k.startswith("discrete")]
DISCRETE = [k for k in CASES if k.startswith("discrete")]


def make(case, **kwargs):
    cls, params = CASES[case]
    if cls is EmpiricalNoise:
        return noise(case.split("-", 1)[1])
    if cls is DeviceNoise:
        return DeviceNoise(*params[:2], noise(), **kwargs)
    if cls is DiscreteWeight:
        values, logits, *probs = params
        return DiscreteWeight(
            values, logits=logits, probs=probs[0] if probs else None, **kwargs
        )
    return cls(*params, **kwargs)


def jnp_args(case):
    """The array __init__ arguments of a case (jnp), with their names."""
    import inspect

    cls, params = CASES[case]
    names = list(inspect.signature(cls.__init__).parameters)[1:]
    out = {}
    for name, p in zip(names, params, strict=False):
        if isinstance(p, np.ndarray) and name != "samples":
            out[name] = jnp.asarray(p)
    return out


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("prepend", [(), (2,), (2, 3)])
def test_shapes(case, prepend):
    d = make(case)
    x = d.sample(random.PRNGKey(0), prepend)
    assert isinstance(x, jnp.ndarray)
    assert x.shape == prepend + d.batch_shape + d.event_shape
    assert d.log_prob(x).shape == prepend + d.batch_shape
    assert d.mean.shape == d.variance.shape == d.batch_shape


@pytest.mark.parametrize("case", CASES)
def test_infer_shapes(case):
    cls, params = CASES[case]
    d = make(case)
    shapes = [getattr(p, "shape", ()) if p is not None else None for p in params]
    if cls is DeviceNoise:
        shapes[2] = ()
    if cls is DiscreteWeight:
        shapes[0] = (len(params[0]),)
    assert cls.infer_shapes(*shapes) == (d.batch_shape, d.event_shape)


@pytest.mark.parametrize("case", CASES)
def test_has_rsample(case):
    d = make(case)
    masked = d.mask(False)
    indep = d.expand_by([2]).to_event(1)
    transf = (
        dist.TransformedDistribution(d, dist.biject_to(dist.constraints.real))
        if not d.is_discrete
        else None
    )
    assert masked.has_rsample == indep.has_rsample == d.has_rsample
    if transf is not None:
        assert transf.has_rsample == d.has_rsample
    if d.has_rsample:
        assert not d.is_discrete
        assert set(d.arg_constraints) == set(d.reparametrized_params)
        d.rsample(random.PRNGKey(0))
    else:
        assert d.is_discrete
        with pytest.raises(NotImplementedError):
            d.rsample(random.PRNGKey(0))


@pytest.mark.parametrize("case", CASES)
def test_jit_log_prob_equals_eager(case):
    d = make(case)
    x = d.sample(random.PRNGKey(1), (2, 3))
    eager = d.log_prob(x)
    jitted = jax.jit(lambda dd, v: dd.log_prob(v))(d, x)
    np.testing.assert_allclose(jitted, eager, rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("case", CASES)
def test_pytree_round_trip(case):
    def f(_):
        return make(case)

    jax.jit(f)(0)
    lax.map(f, np.ones(3))
    expected, actual = f(0), jax.jit(f)(0)
    for name in expected.arg_constraints:
        a, e = getattr(actual, name), getattr(expected, name)
        assert a is not None
        np.testing.assert_allclose(a, e, atol=1e-7)
    leaves = jax.tree.leaves(actual)
    assert len(leaves) == len(jax.tree.leaves(expected)) > 0 or not leaves
    np.testing.assert_allclose(
        actual.sample(random.PRNGKey(0)), expected.sample(random.PRNGKey(0)), rtol=1e-6
    )
    s = expected.sample(random.PRNGKey(1))
    np.testing.assert_allclose(actual.log_prob(s), expected.log_prob(s), rtol=1e-5)
    if not expected.is_discrete:
        np.testing.assert_allclose(actual.cdf(s), expected.cdf(s), rtol=1e-5)


def test_tables_survive_jit_and_vmap():
    n = noise("pcm")
    leaves = jax.tree.leaves(n)
    assert len(leaves) == 2, "density and cumulative tables are pytree data"
    x = jnp.linspace(-2, 2, 5)
    out = jax.jit(lambda d: d.log_prob(x))(n)
    np.testing.assert_allclose(out, n.log_prob(x), rtol=1e-6)
    d = DeviceNoise(jnp.zeros(4), jnp.ones(4), n)
    lp = jax.vmap(lambda loc: DeviceNoise(loc, 1.0, n).log_prob(0.5))(jnp.arange(4.0))
    np.testing.assert_allclose(lp, d.log_prob(0.5 - jnp.arange(4.0)), rtol=1e-6)


def _tree_equal(a, b):
    eq = jax.tree.map(lambda x, y: jnp.allclose(x, y), a, b)
    return jnp.all(jnp.array(jax.tree.leaves(eq)))


@pytest.mark.parametrize("case", [c for c in CASES if not c.startswith("empirical")])
def test_vmap_dist(case):
    cls = CASES[case][0]
    args = jnp_args(case)
    d = make(case)

    def build(**kw):
        full = dict(args)
        full.update(kw)
        if cls is DeviceNoise:
            return DeviceNoise(full["loc"], full["scale"], noise())
        if cls is DiscreteWeight:
            return DiscreteWeight(
                CASES[case][1][0], logits=full.get("logits"), probs=full.get("probs")
            )
        return cls(**full)

    for name in args:
        batched = jnp.expand_dims(args[name], 0)
        out_axes = vmap_over(d, **{name: 0})
        bd = jax.vmap(lambda v, name=name: build(**{name: v}), out_axes=out_axes)(
            batched
        )
        eq = jax.vmap(_tree_equal, in_axes=(out_axes, None))(bd, d)
        assert bool(jnp.all(eq))
        samples = jax.vmap(
            lambda dd: dd.sample(random.PRNGKey(0)), in_axes=(out_axes,)
        )(bd)
        assert samples.shape == (1, *d.sample(random.PRNGKey(0)).shape)


def _finite_diff(fn, x, eps=1e-3):
    x = np.asarray(x, dtype=np.float64)
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        e = np.zeros_like(x)
        e[idx] = eps
        grad[idx] = (fn(x + e) - fn(x - e)) / (2 * eps)
    return grad


REPARAM = {
    "device": ("loc", "scale"),
    "spike-and-slab-inner": ("prob", "spike_scale", "slab_scale"),
}


@pytest.mark.parametrize("case", list(REPARAM))
def test_sample_gradient_against_finite_differences(case):
    args = {k: np.asarray(v, np.float64) for k, v in jnp_args(case).items()}
    names = REPARAM[case]

    def total(**kw):
        full = {**args, **kw}
        cls = CASES[case][0]
        d = (
            DeviceNoise(full["loc"], full["scale"], noise())
            if cls is DeviceNoise
            else cls(**full)
        )
        return jnp.sum(d.sample(random.PRNGKey(3)))

    with jax.enable_x64(True), numpyro.validation_enabled(False):
        for name in names:
            g = jax.grad(lambda v, name=name: total(**{name: v}))(
                jnp.asarray(args[name])
            )
            fd = _finite_diff(
                lambda v, name=name: float(total(**{name: v})), args[name], 1e-5
            )
            np.testing.assert_allclose(g, fd, rtol=1e-4, atol=1e-6)


def test_device_noise_reparameterised_gradients_are_analytic():
    n = noise("mtj")
    loc, scale = jnp.asarray(DEVICE_LOC), jnp.asarray(DEVICE_SCALE)
    w = DeviceNoise(loc, scale, n).sample(random.PRNGKey(5))
    e = (w - loc) / scale
    g_loc = jax.grad(
        lambda l: DeviceNoise(l, scale, n).sample(random.PRNGKey(5)).sum()
    )(loc)
    g_scale = jax.grad(
        lambda s: DeviceNoise(loc, s, n).sample(random.PRNGKey(5)).sum()
    )(scale)
    np.testing.assert_allclose(g_loc, jnp.ones_like(loc))  # dw/dloc = 1
    np.testing.assert_allclose(g_scale, e, rtol=1e-5)  # dw/dscale = e


@pytest.mark.parametrize("case", ["device", "spike-and-slab-inner", "discrete"])
def test_log_prob_gradient_against_finite_differences(case):
    args = {k: np.asarray(v, np.float64) for k, v in jnp_args(case).items()}
    cls = CASES[case][0]
    with jax.enable_x64(True), numpyro.validation_enabled(False):
        value = make(case).sample(random.PRNGKey(0))
        value = jnp.asarray(value, jnp.float64)

        def total(**kw):
            full = {**args, **kw}
            if cls is DeviceNoise:
                d = DeviceNoise(full["loc"], full["scale"], noise())
            elif cls is DiscreteWeight:
                d = DiscreteWeight(GRID, logits=full["logits"])
            else:
                d = cls(**full)
            return jnp.sum(d.log_prob(value))

        for name in args:
            g = jax.grad(lambda v, name=name: total(**{name: v}))(
                jnp.asarray(args[name])
            )
            fd = _finite_diff(
                lambda v, name=name: float(total(**{name: v})), args[name], 1e-5
            )
            np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", CONTINUOUS)
def test_cdf_and_icdf(case):
    with jax.enable_x64(True):
        d = make(case)
        if isinstance(d, EmpiricalNoise):
            d = EmpiricalNoise(noise_samples(case.split("-", 1)[1]))  # float64 tables
        if isinstance(d, DeviceNoise):
            d = DeviceNoise(d.loc, d.scale, EmpiricalNoise(noise_samples("mtj")))
        x = d.sample(random.PRNGKey(0), (100,))
        q = random.uniform(
            random.PRNGKey(1), (100, *d.batch_shape), minval=0.001, maxval=0.999
        )
        pdf = jnp.exp(d.log_prob(x))
        grad_cdf = jax.vmap(jax.grad(lambda v: jnp.sum(d.cdf(v))))(x)
        np.testing.assert_allclose(grad_cdf, pdf, rtol=1e-5, atol=1e-5)
        xq = d.icdf(q)
        grad_icdf = jax.vmap(jax.grad(lambda v: jnp.sum(d.icdf(v))))(q)
        np.testing.assert_allclose(grad_icdf, jnp.exp(-d.log_prob(xq)), rtol=1e-5)
        np.testing.assert_allclose(d.cdf(xq), q, atol=1e-10)
        bulk = pdf > 1e-3  # in the bulk, rounding of u moves x by < 1e-12
        np.testing.assert_allclose(
            jnp.where(bulk, d.icdf(d.cdf(x)), 0.0), jnp.where(bulk, x, 0.0), atol=1e-8
        )


@pytest.mark.parametrize("name", NOISE_NAMES)
def test_empirical_noise_float32_round_trip_in_the_bulk(name):
    d = noise(name)
    x = jnp.linspace(-2.5, 2.5, 501)
    keep = jnp.exp(d.log_prob(x)) > 0.05  # float32 cdf resolves x to ~6e-8 / pdf
    err = jnp.where(keep, jnp.abs(d.icdf(d.cdf(x)) - x), 0.0)
    assert float(err.max()) < 1e-5
    assert d.log_prob(x).dtype == jnp.float32


@pytest.mark.parametrize("case", CASES)
def test_mean_variance_against_samples(case):
    d = make(case)
    n = 200_000
    x = d.sample(random.PRNGKey(7), (n,))
    sd = jnp.sqrt(d.variance)
    # |sample mean - mean| < 5 SE: false alarm < 6e-7 per entry
    assert bool(jnp.all(jnp.abs(x.mean(0) - d.mean) < 5 * sd / np.sqrt(n) + 1e-7))
    # sample variance: SE = var sqrt((kurtosis - 1)/n); kurtosis <= 50 for these cases
    rel = jnp.abs(x.var(0) / d.variance - 1)
    assert bool(jnp.all(rel < 5 * np.sqrt(49 / n)))


@pytest.mark.parametrize("case", CASES)
def test_entropy_against_samples(case):
    d = make(case)
    try:
        h = d.entropy()
    except NotImplementedError:
        pytest.skip("no closed-form entropy")
    x = d.sample(random.PRNGKey(8), (20_000,))
    nlp = -d.log_prob(x)
    se = nlp.std(0) / np.sqrt(x.shape[0])
    # |z| < 5: false alarm < 6e-7 per entry
    ok = jnp.abs(h - nlp.mean(0)) < 5 * se + 1e-6
    assert bool(jnp.all(ok))


@pytest.mark.parametrize("case", CONTINUOUS)
def test_goodness_of_fit(case):
    d = make(case)
    num_samples = 10_000
    x = d.sample(random.PRNGKey(0), (num_samples,))
    probs = jnp.exp(d.log_prob(x)).reshape(num_samples, -1)
    x = x.reshape(probs.shape)
    for b in range(probs.shape[1]):
        gof = auto_goodness_of_fit(np.asarray(x[:, b]), np.asarray(probs[:, b]))
        assert gof > TEST_FAILURE_RATE


@pytest.mark.parametrize("case", DISCRETE)
def test_discrete_multinomial_goodness_of_fit(case):
    d = make(case)
    n = 20_000
    x = np.asarray(d.sample(random.PRNGKey(0), (n,))).reshape(n, -1)
    probs = np.asarray(d.probs).reshape(-1, len(d._values))
    for b in range(probs.shape[0]):
        counts = np.array([(x[:, b] == v).sum() for v in d._values])
        assert counts.sum() == n  # every sample lies on the grid
        keep = probs[b] > 0
        assert np.all(counts[~keep] == 0)
        gof = multinomial_goodness_of_fit(probs[b][keep], counts[keep])
        assert gof > TEST_FAILURE_RATE


@pytest.mark.parametrize("case", DISCRETE)
def test_discrete_weight_against_an_explicit_categorical(case):
    d = make(case)
    support = d.enumerate_support(expand=True)
    assert support.shape == (len(d._values), *d.batch_shape)
    lp = d.log_prob(support)
    np.testing.assert_allclose(jnp.exp(lp).sum(0), 1.0, rtol=1e-6)
    probs = np.exp(np.asarray(d.log_probs, np.float64))
    for b in np.ndindex(d.batch_shape):
        ref = scipy.stats.rv_discrete(
            values=(np.array(d._values), probs[b] / probs[b].sum())
        )
        np.testing.assert_allclose(
            np.exp(lp[(slice(None), *b)]),
            ref.pmf(np.array(d._values)),
            rtol=1e-5,
            atol=1e-7,
        )
        np.testing.assert_allclose(d.mean[b], ref.mean(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(d.variance[b], ref.var(), rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(d.entropy()[b], ref.entropy(), rtol=1e-5)
        assert d.mode[b] == d._values[int(np.argmax(probs[b]))]
    assert d.enumerate_support(expand=False).shape == (len(d._values),) + (1,) * len(
        d.batch_shape
    )


def test_spike_and_slab_against_scipy_mixture_and_bayes_rule():
    with jax.enable_x64(True):
        d = SpikeAndSlab(
            jnp.asarray(SS_PROB), jnp.asarray(SS_SPIKE), jnp.asarray(SS_SLAB)
        )
        x = jnp.linspace(-3, 3, 41)[:, None]
        xn = np.asarray(x)
        with np.errstate(divide="ignore"):  # log(0) weights at prob = 0 and 1
            slab = np.log(SS_PROB) + scipy.stats.norm.logpdf(xn, 0, SS_SLAB)
            spike = np.log1p(-SS_PROB) + scipy.stats.norm.logpdf(xn, 0, SS_SPIKE)
        np.testing.assert_allclose(d.log_prob(x), np.logaddexp(slab, spike), rtol=1e-12)
        bayes = np.exp(slab - np.logaddexp(slab, spike))  # Bayes' rule
        np.testing.assert_allclose(d.inclusion_prob(x), bayes, rtol=1e-10, atol=1e-300)
        cdf = SS_PROB * scipy.stats.norm.cdf(np.asarray(x), 0, SS_SLAB) + (
            1 - SS_PROB
        ) * scipy.stats.norm.cdf(np.asarray(x), 0, SS_SPIKE)
        np.testing.assert_allclose(d.cdf(x), cdf, rtol=1e-12)
        np.testing.assert_allclose(
            d.variance, SS_PROB * SS_SLAB**2 + (1 - SS_PROB) * SS_SPIKE**2
        )
        for b in range(4):

            def pdf(v, b=b):
                return float(jnp.exp(d.log_prob(v)[b]))

            # breakpoints where the spike's mass sits, then the slab's tails
            cut = 10 * SS_SPIKE[b]
            mass = si.quad(pdf, -cut, cut, points=[0.0])[0]
            mass += si.quad(pdf, cut, np.inf)[0] + si.quad(pdf, -np.inf, -cut)[0]
            assert mass == pytest.approx(1.0, abs=1e-5)


def test_device_noise_is_the_change_of_variables():
    with jax.enable_x64(True):
        n = EmpiricalNoise(noise_samples("pcm"))
        d = DeviceNoise(0.7, 0.3, n)
        w = jnp.linspace(-1.0, 2.5, 71)
        # atol: where log_prob(z) and log(0.3) ~ -1.2 cancel (w[28]), a one-ulp
        # difference in those terms (2.2e-16, seen on jax 0.12's compiled log_prob)
        # remains
        np.testing.assert_allclose(
            d.log_prob(w),
            n.log_prob((w - 0.7) / 0.3) - np.log(0.3),
            rtol=1e-14,
            atol=1e-15,
        )
        knots = 0.7 + 0.3 * (n.table.z0 + n.table.dz * np.arange(n.table.num_knots))

        def pdf(v):
            return float(jnp.exp(d.log_prob(v)))

        mass = si.quad(
            pdf, knots[0], knots[-1], points=knots[1:-1], limit=2 * knots.size
        )[0]
        mass += si.quad(pdf, -np.inf, knots[0])[0] + si.quad(pdf, knots[-1], np.inf)[0]
        assert mass == pytest.approx(1.0, abs=1e-5)
        assert float(d.entropy()) == pytest.approx(
            n.table.entropy + np.log(0.3), rel=1e-12
        )


@pytest.mark.parametrize("case", [c for c in CASES if c != "spike-and-slab"])
@pytest.mark.parametrize("prepend", [(), (2, 3)])
def test_expand(case, prepend):
    d = make(case)
    e = d.expand(prepend + d.batch_shape)
    assert e.batch_shape == prepend + d.batch_shape
    x = e.sample(random.PRNGKey(0), (4,))
    assert x.shape == (4, *prepend, *d.batch_shape)
    assert e.log_prob(x).shape == (4, *prepend, *d.batch_shape)


@pytest.mark.parametrize("case", CASES)
def test_mask_and_to_event_and_plate(case):
    d = make(case)
    x = d.sample(random.PRNGKey(0))
    assert float(jnp.sum(d.mask(False).log_prob(x))) == 0.0
    if d.batch_shape:
        ev = d.to_event(len(d.batch_shape))
        assert ev.event_shape == d.batch_shape and ev.batch_shape == ()
        np.testing.assert_allclose(ev.log_prob(x), jnp.sum(d.log_prob(x)), rtol=1e-5)

    def model():
        with numpyro.plate("p", 5, dim=-1 - len(d.batch_shape)):
            numpyro.sample("w", d)

    with numpyro.handlers.seed(rng_seed=0):
        tr = numpyro.handlers.trace(model).get_trace()
    assert tr["w"]["value"].shape[0] == 5


@pytest.mark.parametrize(
    "case, bad",
    [
        ("device", {"scale": -1.0}),
        ("spike-and-slab", {"prob": 1.5}),
        ("spike-and-slab", {"spike_scale": -0.1}),
        ("spike-and-slab", {"slab_scale": jnp.inf}),  # a scale that means nothing
        ("device", {"scale": jnp.inf}),
        ("discrete", {"logits": jnp.array([0.0, jnp.nan, 1.0])}),
    ],
)
def test_invalid_parameters_raise_with_validation_also_under_jit(case, bad):
    cls = CASES[case][0]

    def build():
        if cls is DeviceNoise:
            return DeviceNoise(0.0, bad["scale"], noise(), validate_args=True)
        if cls is DiscreteWeight:
            return DiscreteWeight(GRID, logits=bad["logits"], validate_args=True)
        kw = {"prob": 0.5, "spike_scale": 0.01, "slab_scale": 1.0, **bad}
        return SpikeAndSlab(**kw, validate_args=True)

    with pytest.raises(ValueError):
        build()
    with pytest.raises(ValueError):
        jax.jit(build)()
    with numpyro.validation_enabled(False):
        if cls is DeviceNoise:
            DeviceNoise(0.0, bad["scale"], noise(), validate_args=False)


def test_out_of_support_values_warn_and_get_minus_inf():
    d = DiscreteWeight(GRID, logits=jnp.zeros(3), validate_args=True)
    with pytest.warns(UserWarning, match="Out-of-support"):
        lp = d.log_prob(jnp.array([0.5, 1.0]))
    assert lp[0] == -jnp.inf and np.isfinite(lp[1])


# ---- KL divergences -------------------------------------------------------------


def test_kl_device_noise_normal_against_monte_carlo():
    d = DeviceNoise(jnp.asarray(DEVICE_LOC), jnp.asarray(DEVICE_SCALE), noise("mtj"))
    p = dist.Normal(0.3, 1.5)
    x = d.sample(random.PRNGKey(0), (200_000,))
    terms = d.log_prob(x) - p.log_prob(x)
    se = terms.std(0) / np.sqrt(x.shape[0])
    # within 4 standard errors: false alarm 6e-5 per entry
    assert bool(jnp.all(jnp.abs(kl_divergence(d, p) - terms.mean(0)) < 4 * se))


def test_kl_device_noise_with_gaussian_shape_is_the_normal_kl():
    with jax.enable_x64(True):
        g = EmpiricalNoise(noise_samples("gaussian"))
        d = DeviceNoise(0.4, 0.7, g)
        # the same formula as N(0.4, 0.7^2) -> N(0, 1), except the entropy H0 of the
        # fitted shape instead of 1/2 log(2 pi e)
        expected = kl_divergence(dist.Normal(0.4, 0.7), dist.Normal(0.0, 1.0))
        h_gauss = 0.5 * np.log(2 * np.pi * np.e)
        np.testing.assert_allclose(
            kl_divergence(d, dist.Normal(0.0, 1.0)),
            expected + h_gauss - g.table.entropy,
            rtol=1e-12,
        )


def test_kl_discrete_weight_against_monte_carlo_and_formula():
    q = make("discrete")
    p = DiscreteWeight(GRID, probs=jnp.array([0.25, 0.5, 0.25]))
    kl = kl_divergence(q, p)
    qp = np.exp(np.asarray(q.log_probs, np.float64))
    ref = (qp * (np.log(qp) - np.log([0.25, 0.5, 0.25]))).sum(-1)
    np.testing.assert_allclose(kl, ref, rtol=1e-5)
    x = q.sample(random.PRNGKey(0), (200_000,))
    terms = q.log_prob(x) - p.log_prob(x)
    se = terms.std(0) / np.sqrt(x.shape[0])
    assert bool(jnp.all(jnp.abs(kl - terms.mean(0)) < 4 * se + 1e-6))
    with pytest.raises(ValueError, match="same grid"):
        kl_divergence(q, DiscreteWeight(GRID5, logits=jnp.zeros(5)))


def _elbo_values(model, guide, seeds=range(8)):
    from numpyro.infer import TraceMeanField_ELBO
    from numpyro.infer.util import initialize_model  # noqa: F401

    elbo = TraceMeanField_ELBO()
    return np.array(
        [float(elbo.loss(random.PRNGKey(s), {}, model, guide)) for s in seeds]
    )


@pytest.mark.parametrize("expanded", [False, True])
def test_registered_device_noise_kl_is_used_by_trace_mean_field(expanded):
    n = noise("mtj")
    loc, scale = jnp.asarray(DEVICE_LOC), jnp.asarray(DEVICE_SCALE)

    def model():
        numpyro.sample("w", dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))

    def guide():
        if expanded:
            d = DeviceNoise(0.1, 0.5, n).expand([2, 3]).to_event(2)
        else:
            d = DeviceNoise(loc, scale, n).to_event(2)
        numpyro.sample("w", d)

    values = _elbo_values(model, guide)
    # a KL-only model: with the closed form, the ELBO is the same for every seed
    assert np.ptp(values) == 0.0
    ref = DeviceNoise(0.1, 0.5, n) if expanded else DeviceNoise(loc, scale, n)
    expected = jnp.sum(
        jnp.broadcast_to(kl_divergence(ref, dist.Normal(0.0, 1.0)), (2, 3))
    )
    np.testing.assert_allclose(values[0], expected, rtol=1e-5)


@pytest.mark.parametrize("expanded", [False, True])
def test_registered_discrete_kl_is_used_by_trace_mean_field(expanded):
    prior = DiscreteWeight(GRID, probs=jnp.array([0.25, 0.5, 0.25]))

    def model():
        numpyro.sample("w", prior.expand([4]).to_event(1))

    def guide():
        q = DiscreteWeight(GRID, logits=jnp.array([1.0, 0.0, -1.0]))
        q = (
            q.expand([4])
            if expanded
            else DiscreteWeight(GRID, logits=jnp.asarray(DISCRETE_LOGITS))
        )
        numpyro.sample("w", q.to_event(1))

    values = _elbo_values(model, guide)
    assert np.ptp(values) == 0.0
