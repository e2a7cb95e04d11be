"""The discrete-weight parameterisations, the initialisation from a real-valued
network and the grid export (ppl_hw.core.discrete), against their defining formulas
written out independently, on all three backends."""

import numpy as np
import pytest
import scipy.special

from ppl_hw.core import discrete as dc

from ..helpers import BACKENDS, TOL, call_on

TERNARY = (-1.0, 0.0, 1.0)
QUINARY = (-2.0, -1.0, 0.0, 1.0, 2.0)
RNG = np.random.default_rng(0)


def _expected_probs(kind, theta, values):
    """The definitions of Roth & Pernkopf's code, one case at a time."""
    if kind == "logits":
        return scipy.special.softmax(theta, -1)
    if kind == "logits_fixedzero":
        z = values.index(0.0)
        full = np.insert(theta, z, 0.0, axis=-1)
        return scipy.special.softmax(full, -1)
    s, t = theta[..., 0], theta[..., 1]
    sig = scipy.special.expit
    q0 = sig(s)
    return np.stack([(1 - q0) * (1 - sig(t)), q0, (1 - q0) * sig(t)], -1)


CASES = [
    ("logits", TERNARY, 3),
    ("logits", QUINARY, 5),
    ("logits_fixedzero", TERNARY, 2),
    ("logits_fixedzero", QUINARY, 4),
    ("shayer", TERNARY, 2),
    ("shayer", (-0.5, 0.0, 2.0), 2),
]


@pytest.mark.parametrize("kind, values, n", CASES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_probs_match_the_definitions(kind, values, n, backend, dtype):
    assert dc.check_parameterization(kind, values) == n
    theta = RNG.uniform(-5, 5, size=(7, 4, n))
    got = call_on(
        backend,
        dc.log_probs_from_params,
        (theta,),
        dtype,
        kind=kind,
        values=values,
    )
    assert got.dtype == dtype
    want = np.log(_expected_probs(kind, theta, values))
    np.testing.assert_allclose(got, want, **TOL[dtype])


@pytest.mark.parametrize("kind, values, n", CASES)
def test_params_from_probs_inverts(kind, values, n):
    p = RNG.dirichlet(np.ones(len(values)), size=(5, 6))
    theta = dc.params_from_probs(p, kind, values)
    assert theta.shape == (5, 6, n)
    np.testing.assert_allclose(_expected_probs(kind, theta, values), p, rtol=1e-9)


def test_parameterization_errors():
    with pytest.raises(ValueError, match="parameterization must be one of"):
        dc.check_parameterization("softmax", TERNARY)
    with pytest.raises(ValueError, match="needs the value 0"):
        dc.check_parameterization("logits_fixedzero", (-1.0, 1.0))
    with pytest.raises(ValueError, match="ternary grid"):
        dc.check_parameterization("shayer", QUINARY)


def _stretch_reference(w, vmin, vmax):
    """Rank stretch written with explicit loops (average ranks for ties)."""
    out = np.zeros_like(w)
    neg = [x for x in w if x < 0]
    pos = [x for x in w if x > 0]
    for i, x in enumerate(w):
        if x < 0:
            rank = (
                sum(1 for y in neg if -y < -x) + (sum(1 for y in neg if y == x) + 1) / 2
            )
            out[i] = 1.5 * vmin * rank / len(neg)
        elif x > 0:
            rank = (
                sum(1 for y in pos if y < x) + (sum(1 for y in pos if y == x) + 1) / 2
            )
            out[i] = 1.5 * vmax * rank / len(pos)
    return out


def _roth_probs(u, values, q_max):
    """The piecewise-linear rule of the authors' ``initialize_probabilities_from_
    expectation``, case by case."""
    k = len(values)
    q_min = (1 - q_max) / (k - 1)
    q = np.full((u.size, k), q_min)
    for n, x in enumerate(u):
        if x <= values[0]:
            q[n, 0] = q_max
        elif x >= values[-1]:
            q[n, -1] = q_max
        else:
            j = np.searchsorted(values, x, side="right") - 1  # values[j] <= x < v[j+1]
            frac = (x - values[j]) / (values[j + 1] - values[j])
            q[n, j] = q_max - (q_max - q_min) * frac
            q[n, j + 1] = q_min + (q_max - q_min) * frac
    return q


@pytest.mark.parametrize("values", [TERNARY, QUINARY, (-1.0, 1.0)])
def test_probs_from_real_is_the_papers_stretch_and_interpolation(values):
    w = np.concatenate([RNG.normal(size=200) * 0.1, [0.0, 0.0, 0.05, 0.05]])
    got = dc.probs_from_real(w, values, q_max=0.9)
    u = _stretch_reference(w, values[0], values[-1])
    np.testing.assert_allclose(got, _roth_probs(u, np.array(values), 0.9), atol=1e-12)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-12)
    # the largest weights get q_max at the largest value, zeros at 0
    assert got[np.argmax(w), -1] == pytest.approx(0.9)
    if 0.0 in values:
        assert got[200, values.index(0.0)] == pytest.approx(0.9)


def test_probs_from_real_errors():
    with pytest.raises(ValueError, match="negative and positive"):
        dc.probs_from_real(np.ones(3), (0.0, 1.0))
    with pytest.raises(ValueError, match="q_max"):
        dc.probs_from_real(np.ones(3), TERNARY, q_max=0.2)
    with pytest.raises(ValueError, match="finite"):
        dc.probs_from_real(np.array([np.nan]), TERNARY)


def test_grid_indices_and_errors():
    w = np.array([[1.0, 0.0], [-1.0, 1.0]], np.float32)
    idx = dc.grid_indices(w, TERNARY)
    assert idx.dtype == np.int8
    np.testing.assert_array_equal(np.asarray(TERNARY)[idx], w)
    with pytest.raises(ValueError, match=r"w holds 1 value\(s\) not on the grid"):
        dc.grid_indices(np.array([1.0, 0.5]), TERNARY)
    with pytest.raises(ValueError, match="at least 2 values"):
        dc.grid_indices(w, (1.0,))
