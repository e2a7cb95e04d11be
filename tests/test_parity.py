"""The core mechanism: one core function, three backends, the same numbers.

docs/architecture.md: NumPy in float64 is the oracle; the NumPyro and Pyro adapters agree with it
to rtol 1e-5 in float32 (XLA fuses multiply-adds, so exact equality is not expected)
and 1e-10 in float64.
"""

import numpy as np
import pytest

from ppl_hw.core import gaussian

from .helpers import BACKENDS, TOL, call_on

rng = np.random.default_rng(1234)
N = 257
X = rng.normal(size=N) * 3
LOC_Q = rng.normal(size=N)
SCALE_Q = np.exp(rng.uniform(-3, 1, size=N))
LOC_P = rng.normal(size=N)
SCALE_P = np.exp(rng.uniform(-1, 1, size=N))
P = rng.uniform(1e-4, 1 - 1e-4, size=N)

CASES = [
    pytest.param(gaussian.normal_log_prob, (X, LOC_Q, SCALE_Q), id="normal_log_prob"),
    pytest.param(gaussian.normal_entropy, (SCALE_Q,), id="normal_entropy"),
    pytest.param(
        gaussian.kl_normal_normal,
        (LOC_Q, SCALE_Q, LOC_P, SCALE_P),
        id="kl_normal_normal",
    ),
    pytest.param(gaussian.normal_cdf, (X, LOC_Q, SCALE_Q), id="normal_cdf"),
    pytest.param(gaussian.normal_log_cdf, (X, LOC_Q, SCALE_Q), id="normal_log_cdf"),
    pytest.param(gaussian.normal_icdf, (P, LOC_Q, SCALE_Q), id="normal_icdf"),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS[1:])
@pytest.mark.parametrize("fn, args", CASES)
def test_backends_agree_with_numpy_oracle(fn, args, backend, dtype):
    # The oracle sees exactly the inputs the backend sees (rounded to dtype first).
    rounded = [np.asarray(a, dtype=dtype).astype(np.float64) for a in args]
    expected = call_on("numpy", fn, rounded, np.float64)
    got = call_on(backend, fn, args, dtype)
    assert got.dtype == dtype, "the backend must keep the input precision"
    np.testing.assert_allclose(got, expected, **TOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_special_shim_against_scipy(backend):
    import scipy.special as sps

    from .helpers import get_backend, precision, to_backend, to_numpy

    special = get_backend(backend).special
    x = np.linspace(-30, 8, 101)
    p = np.linspace(1e-6, 1 - 1e-6, 101)
    with precision(backend, np.float64):
        xb, pb = to_backend(backend, x, np.float64), to_backend(backend, p, np.float64)
        got = {
            "erf": to_numpy(special.erf(xb)),
            "ndtr": to_numpy(special.ndtr(xb)),
            "ndtri": to_numpy(special.ndtri(pb)),
            "log_ndtr": to_numpy(special.log_ndtr(xb)),
            "logsumexp": to_numpy(special.logsumexp(xb, axis=0)),
        }
    np.testing.assert_allclose(got["erf"], sps.erf(x), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(got["ndtr"], sps.ndtr(x), rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(got["ndtri"], sps.ndtri(p), rtol=1e-10)
    # JAX's asymptotic lower-tail series is good to ~2e-11 relative
    np.testing.assert_allclose(got["log_ndtr"], sps.log_ndtr(x), rtol=1e-10)
    np.testing.assert_allclose(got["logsumexp"], sps.logsumexp(x), rtol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_interp_uniform_against_numpy_interp(backend, dtype):
    from .helpers import get_backend, precision, to_backend, to_numpy

    x0, dx, n = -2.5, 0.25, 21
    knots = x0 + dx * np.arange(n)
    fp = np.sin(knots) + knots**2
    # inside, on knots, and beyond both ends (clamped, like np.interp)
    x = np.concatenate(
        [rng.uniform(-4, 4, size=200), knots, [knots[-1] + 1e-3, -1e9, 1e9]]
    )
    expected = np.interp(np.asarray(x, dtype).astype(np.float64), knots, fp)
    with precision(backend, dtype):
        special = get_backend(backend).special
        got = special.interp_uniform(
            to_backend(backend, x, dtype), x0, dx, to_backend(backend, fp, dtype)
        )
        got = to_numpy(got)
    assert got.dtype == dtype
    np.testing.assert_allclose(got, expected, **TOL[dtype])
