"""ppl_hw.pyro.distributions: Pyro's conventions (shapes, expand keeping the class,
to_event, mask, plates, rsample gradients, cdf / icdf by autograd, validation),
goodness of fit with Pyro's own tests, and the registered KLs.

Statistical tests use fixed seeds; each states its false-alarm rate.
"""

import functools

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import scipy.stats
import torch
from pyro.distributions.testing.gof import (
    auto_goodness_of_fit,
    multinomial_goodness_of_fit,
)
from torch.distributions import kl_divergence

from ppl_hw.pyro.distributions import (
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

TEST_FAILURE_RATE = 1e-3  # gof p-values below this fail: 0.1 % false alarms per test
T = torch.as_tensor


@functools.cache
def noise(name="mtj"):
    return EmpiricalNoise(noise_samples(name))


SS_INNER = (
    np.array([0.2, 0.5, 0.7]),
    np.array([0.05, 0.1, 0.02]),
    np.array([0.5, 2.0, 0.3]),
)


def make(case, dtype=torch.float32):
    if case.startswith("empirical-"):
        return noise(case.split("-", 1)[1])
    if case == "device":
        return DeviceNoise(
            T(DEVICE_LOC, dtype=dtype), T(DEVICE_SCALE, dtype=dtype), noise()
        )
    if case == "discrete":
        return DiscreteWeight(GRID, logits=T(DISCRETE_LOGITS, dtype=dtype))
    if case == "discrete5-probs":
        probs = T([[0.1, 0.2, 0.4, 0.2, 0.1], [0.0, 0.5, 0.25, 0.25, 0.0]], dtype=dtype)
        return DiscreteWeight(GRID5, probs=probs)
    params = (SS_PROB, SS_SPIKE, SS_SLAB) if case == "spike-and-slab" else SS_INNER
    return SpikeAndSlab(*(T(p, dtype=dtype) for p in params))


CASES = [f"empirical-{n}" for n in NOISE_NAMES] + [
    "device",
    "discrete",
    "discrete5-probs",
    "spike-and-slab",
    "spike-and-slab-inner",
]
CONTINUOUS = [c for c in CASES if not c.startswith("discrete")]
DISCRETE = [c for c in CASES if c.startswith("discrete")]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("prepend", [(), (2,), (2, 3)])
def test_shapes(case, prepend):
    d = make(case)
    x = d.sample(prepend)
    assert x.shape == torch.Size(prepend) + d.batch_shape + d.event_shape
    assert d.log_prob(x).shape == torch.Size(prepend) + d.batch_shape
    assert d.mean.shape == d.variance.shape == d.batch_shape
    assert d.has_rsample == (case not in DISCRETE)


@pytest.mark.parametrize("case", [c for c in CASES if not c.startswith("empirical")])
def test_expand_keeps_the_class(case):
    d = make(case)
    e = d.expand(torch.Size([5]) + d.batch_shape)
    assert type(e) is type(d)
    assert e.batch_shape == torch.Size([5]) + d.batch_shape
    x = e.sample((4,))
    assert x.shape == (4, 5, *d.batch_shape)
    torch.testing.assert_close(e.log_prob(x)[:, 0], d.log_prob(x[:, 0]))


@pytest.mark.parametrize("case", CASES)
def test_mask_to_event_and_plate(case):
    d = make(case)
    x = d.sample()
    assert float(d.mask(False).log_prob(x).sum()) == 0.0
    if d.batch_shape:
        ev = d.to_event(len(d.batch_shape))
        assert ev.event_shape == d.batch_shape
        torch.testing.assert_close(ev.log_prob(x), d.log_prob(x).sum())

    def model():
        with pyro.plate("p", 5, dim=-1 - len(d.batch_shape)):
            pyro.sample("w", d)

    tr = pyro.poutine.trace(model).get_trace()
    assert tr.nodes["w"]["value"].shape == (5, *d.batch_shape)
    tr.compute_log_prob()
    assert tr.nodes["w"]["log_prob"].shape == (5, *d.batch_shape)


@pytest.mark.parametrize("case", ["device", "spike-and-slab-inner"])
def test_rsample_gradients_gradcheck(case):
    d = make(case, torch.float64)
    names = (
        ["loc", "scale"] if case == "device" else ["prob", "spike_scale", "slab_scale"]
    )
    params = [getattr(d, n).detach().clone().requires_grad_() for n in names]
    u_seed = 11

    def fn(*ps):
        torch.manual_seed(u_seed)
        if case == "device":
            return DeviceNoise(ps[0], ps[1], noise("mtj")).rsample()
        return SpikeAndSlab(*ps).rsample()

    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-5, rtol=1e-4)


def test_device_noise_reparameterised_gradients_are_analytic():
    loc = T(DEVICE_LOC, dtype=torch.float32).requires_grad_()
    scale = T(DEVICE_SCALE, dtype=torch.float32).requires_grad_()
    w = DeviceNoise(loc, scale, noise("mtj")).rsample()
    w.sum().backward()
    torch.testing.assert_close(loc.grad, torch.ones_like(loc))  # dw/dloc = 1
    torch.testing.assert_close(
        scale.grad, ((w - loc) / scale).detach()
    )  # dw/dscale = e


@pytest.mark.parametrize("case", ["device", "spike-and-slab-inner", "discrete"])
def test_log_prob_gradients_gradcheck(case):
    d = make(case, torch.float64)
    x = d.sample()
    if case == "device":
        params = [d.loc.clone().requires_grad_(), d.scale.clone().requires_grad_()]

        def fn(*ps):
            return DeviceNoise(ps[0], ps[1], noise("mtj")).log_prob(x)

    elif case == "discrete":
        params = [d.logits.clone().requires_grad_()]

        def fn(*ps):
            return DiscreteWeight(GRID, logits=ps[0]).log_prob(x)

    else:
        params = [
            p.clone().requires_grad_() for p in (d.prob, d.spike_scale, d.slab_scale)
        ]

        def fn(*ps):
            return SpikeAndSlab(*ps).log_prob(x)

    assert torch.autograd.gradcheck(fn, params, eps=1e-6, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("case", CONTINUOUS)
def test_cdf_and_icdf(case):
    d = make(case, torch.float64)
    x = d.sample((100,)).double().requires_grad_()
    pdf = d.log_prob(x).exp()
    (grad_cdf,) = torch.autograd.grad(d.cdf(x).sum(), x)
    torch.testing.assert_close(grad_cdf, pdf.detach(), rtol=1e-5, atol=1e-5)
    q = torch.rand((100, *d.batch_shape), dtype=torch.float64) * 0.998 + 0.001
    q.requires_grad_()
    xq = d.icdf(q)
    (grad_icdf,) = torch.autograd.grad(xq.sum(), q)
    torch.testing.assert_close(
        grad_icdf, (-d.log_prob(xq)).exp().detach(), rtol=1e-5, atol=0
    )
    torch.testing.assert_close(d.cdf(xq), q, rtol=0, atol=1e-10)
    bulk = pdf > 1e-3
    torch.testing.assert_close(d.icdf(d.cdf(x))[bulk], x[bulk], rtol=0, atol=1e-8)


@pytest.mark.parametrize("case", CONTINUOUS)
def test_goodness_of_fit(case):
    d = make(case)
    n = 10_000
    x = d.sample((n,))
    probs = d.log_prob(x).exp().reshape(n, -1)
    x = x.reshape(probs.shape)
    for b in range(probs.shape[1]):
        assert auto_goodness_of_fit(x[:, b], probs[:, b]) > TEST_FAILURE_RATE


@pytest.mark.parametrize("case", DISCRETE)
def test_discrete_multinomial_goodness_of_fit(case):
    d = make(case)
    n = 20_000
    x = d.sample((n,)).reshape(n, -1)
    probs = d.probs.reshape(-1, len(d._values))
    for b in range(probs.shape[0]):
        counts = torch.stack([(x[:, b] == v).sum() for v in d._values]).double()
        assert counts.sum() == n
        keep = probs[b] > 0
        assert torch.all(counts[~keep] == 0)
        assert (
            multinomial_goodness_of_fit(probs[b][keep], counts[keep])
            > TEST_FAILURE_RATE
        )


@pytest.mark.parametrize("case", DISCRETE)
def test_discrete_weight_against_an_explicit_categorical(case):
    d = make(case, torch.float64)
    support = d.enumerate_support()
    lp = d.log_prob(support)
    torch.testing.assert_close(
        lp.exp().sum(0), torch.ones(d.batch_shape, dtype=torch.float64)
    )
    probs = d.probs.numpy()
    for b in np.ndindex(tuple(d.batch_shape)):
        ref = scipy.stats.rv_discrete(
            values=(np.array(d._values), probs[b] / probs[b].sum())
        )
        np.testing.assert_allclose(
            lp[(slice(None), *b)].exp().numpy(),
            ref.pmf(np.array(d._values)),
            rtol=1e-12,
        )
        assert float(d.mean[b]) == pytest.approx(ref.mean(), rel=1e-12, abs=1e-14)
        assert float(d.variance[b]) == pytest.approx(ref.var(), rel=1e-12)
        assert float(d.entropy()[b]) == pytest.approx(ref.entropy(), rel=1e-12)
        assert float(d.mode[b]) == d._values[int(np.argmax(probs[b]))]


def test_spike_and_slab_against_scipy_mixture_and_bayes_rule():
    d = make("spike-and-slab", torch.float64)
    x = torch.linspace(-3, 3, 41, dtype=torch.float64)[:, None]
    xn = x.numpy()
    with np.errstate(divide="ignore"):
        slab = np.log(SS_PROB) + scipy.stats.norm.logpdf(xn, 0, SS_SLAB)
        spike = np.log1p(-SS_PROB) + scipy.stats.norm.logpdf(xn, 0, SS_SPIKE)
    np.testing.assert_allclose(
        d.log_prob(x).numpy(), np.logaddexp(slab, spike), rtol=1e-12
    )
    bayes = np.exp(slab - np.logaddexp(slab, spike))
    np.testing.assert_allclose(
        d.inclusion_prob(x).numpy(), bayes, rtol=1e-10, atol=1e-300
    )


def test_out_of_grid_value_is_an_error_under_validation():
    d = DiscreteWeight(GRID, logits=torch.zeros(3), validate_args=True)
    with pytest.raises(ValueError, match="support"):
        d.log_prob(torch.tensor(0.5))
    off = DiscreteWeight(GRID, logits=torch.zeros(3), validate_args=False)
    assert off.log_prob(torch.tensor(0.5)) == -float("inf")


# ---- KL divergences -------------------------------------------------------------


def test_kl_device_noise_normal_against_monte_carlo():
    d = make("device")
    p = dist.Normal(0.3, 1.5)
    x = d.sample((200_000,))
    terms = d.log_prob(x) - p.log_prob(x)
    se = terms.std(0) / np.sqrt(x.shape[0])
    # within 4 standard errors: false alarm 6e-5 per entry
    assert torch.all((kl_divergence(d, p) - terms.mean(0)).abs() < 4 * se)


def test_kl_discrete_weight_against_monte_carlo():
    q = make("discrete")
    p = DiscreteWeight(GRID, probs=torch.tensor([0.25, 0.5, 0.25]))
    x = q.sample((200_000,))
    terms = q.log_prob(x) - p.log_prob(x)
    se = terms.std(0) / np.sqrt(x.shape[0])
    assert torch.all((kl_divergence(q, p) - terms.mean(0)).abs() < 4 * se + 1e-6)
    with pytest.raises(ValueError, match="same grid"):
        kl_divergence(q, DiscreteWeight(GRID5, logits=torch.zeros(5)))


def _elbo_values(model, guide, seeds=range(8)):
    elbo = pyro.infer.TraceMeanField_ELBO()
    out = []
    for s in seeds:
        pyro.set_rng_seed(s)
        out.append(elbo.loss(model, guide))
    return np.array(out)


@pytest.mark.parametrize("expanded", [False, True])
def test_registered_device_noise_kl_is_used_by_trace_mean_field(expanded):
    n = noise("mtj")
    loc, scale = (
        T(DEVICE_LOC, dtype=torch.float32),
        T(DEVICE_SCALE, dtype=torch.float32),
    )

    def model():
        pyro.sample("w", dist.Normal(0.0, 1.0).expand([2, 3]).to_event(2))

    def guide():
        if expanded:
            d = DeviceNoise(0.1, 0.5, n).expand([2, 3]).to_event(2)
        else:
            d = DeviceNoise(loc, scale, n).to_event(2)
        pyro.sample("w", d)

    values = _elbo_values(model, guide)
    assert np.ptp(values) == 0.0  # a KL-only model: the ELBO is the same for every seed
    ref = (
        DeviceNoise(0.1, 0.5, n).expand([2, 3])
        if expanded
        else DeviceNoise(loc, scale, n)
    )
    expected = kl_divergence(ref, dist.Normal(0.0, 1.0).expand([2, 3])).sum()
    assert values[0] == pytest.approx(float(expected), rel=1e-5)


@pytest.mark.parametrize("expanded", [False, True])
def test_registered_discrete_kl_is_used_by_trace_mean_field(expanded):
    prior = DiscreteWeight(GRID, probs=torch.tensor([0.25, 0.5, 0.25]))

    def model():
        pyro.sample("w", prior.expand([4]).to_event(1))

    def guide():
        if expanded:
            q = DiscreteWeight(GRID, logits=torch.tensor([1.0, 0.0, -1.0])).expand([4])
        else:
            q = DiscreteWeight(GRID, logits=T(DISCRETE_LOGITS, dtype=torch.float32))
        pyro.sample("w", q.to_event(1))

    # Pyro's validation refuses guides that are not reparameterised before it looks
    # for a KL; the ELBO itself takes the registered closed form.
    with pyro.validation_enabled(False):
        values = _elbo_values(model, guide)
    assert np.ptp(values) == 0.0
