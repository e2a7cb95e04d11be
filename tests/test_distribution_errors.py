"""Bad input raises a ValueError / TypeError naming the argument and the value, on
both backends (docs/architecture.md, validation: structure always, parameter values under validation,
which the test suite turns on)."""

import numpy as np
import pytest

import ppl_hw.numpyro.distributions as nd
import ppl_hw.pyro.distributions as pd

from .dist_cases import noise_samples

GOOD = noise_samples("gaussian")


def _cases(tmp):
    if tmp.is_dir():
        (tmp / "bad.csv").write_text("1,2\n3,4\n" * 60)
    return [
        (
            "nan samples",
            lambda m: m.EmpiricalNoise(np.r_[GOOD, np.nan]),
            ValueError,
            r"samples must be finite, got nan at index 10000",
        ),
        (
            "inf samples",
            lambda m: m.EmpiricalNoise(np.r_[-np.inf, GOOD]),
            ValueError,
            r"samples must be finite, got -inf at index 0",
        ),
        (
            "too few samples",
            lambda m: m.EmpiricalNoise(GOOD[:50]),
            ValueError,
            r"samples must hold at least 100 values, got 50",
        ),
        (
            "zero variance",
            lambda m: m.EmpiricalNoise(np.full(300, 2.5)),
            ValueError,
            r"zero variance\), got 2.5",
        ),
        (
            "2-D samples",
            lambda m: m.EmpiricalNoise(GOOD.reshape(100, 100)),
            ValueError,
            r"samples must be a 1-D array, got shape \(100, 100\)",
        ),
        (
            "missing file",
            lambda m: m.EmpiricalNoise.from_file(tmp / "none.npy"),
            ValueError,
            r"path '.*none.npy' is not an existing file",
        ),
        (
            "malformed file",
            lambda m: m.EmpiricalNoise.from_file(tmp / "bad.csv"),
            ValueError,
            r"path '.*bad.csv' must hold one column or one row",
        ),
        (
            "noise not EmpiricalNoise",
            lambda m: m.DeviceNoise(0.0, 1.0, GOOD),
            TypeError,
            r"noise must be a ppl_hw\..*EmpiricalNoise, got ndarray",
        ),
        (
            "negative scale",
            lambda m: m.DeviceNoise(0.0, -0.5, m.EmpiricalNoise(GOOD)),
            ValueError,
            r"scale.*-0.5",
        ),
        (
            "unsorted grid",
            lambda m: m.DiscreteWeight((1.0, 0.0, -1.0), logits=np.zeros(3)),
            ValueError,
            r"values must be sorted and distinct .*unsorted values \[1.0, 0.0, -1.0\]",
        ),
        (
            "duplicated grid",
            lambda m: m.DiscreteWeight((0.0, 0.0, 1.0), logits=np.zeros(3)),
            ValueError,
            r"duplicated values \[0.0, 0.0, 1.0\]",
        ),
        (
            "one-value grid",
            lambda m: m.DiscreteWeight((1.0,), logits=np.zeros(1)),
            ValueError,
            r"values must hold at least 2 values, got \[1.0\]",
        ),
        (
            "non-finite grid",
            lambda m: m.DiscreteWeight((0.0, np.inf), logits=np.zeros(2)),
            ValueError,
            r"values must be finite, got \[0.0, inf\]",
        ),
        (
            "probs not summing to 1",
            lambda m: m.DiscreteWeight(
                (-1.0, 0.0, 1.0), probs=np.array([0.2, 0.2, 0.2], np.float32)
            ),
            ValueError,
            r"probs must be non-negative and sum to 1.*0.2",
        ),
        (
            "logits and probs",
            lambda m: m.DiscreteWeight(
                (-1.0, 1.0),
                logits=np.zeros(2, np.float32),
                probs=np.ones(2, np.float32) / 2,
            ),
            ValueError,
            r"exactly one of logits or probs",
        ),
        (
            "logits of wrong size",
            lambda m: m.DiscreteWeight(
                (-1.0, 0.0, 1.0), logits=np.zeros((4, 2), np.float32)
            ),
            ValueError,
            r"logits must have last axis of size 3 .*got shape \(4, 2\)",
        ),
        (
            "prob above 1",
            lambda m: m.SpikeAndSlab(1.5, 0.01, 1.0),
            ValueError,
            r"prob.*1.5",
        ),
        (
            "negative spike scale",
            lambda m: m.SpikeAndSlab(0.5, -0.01, 1.0),
            ValueError,
            r"spike_scale.*-0.0(1|0999)",
        ),
        (
            "infinite slab scale",
            lambda m: m.SpikeAndSlab(0.5, 0.1, np.inf),
            ValueError,
            r"(?s)slab_scale.*FinitePositive\(\).*inf",
        ),
        (
            "infinite device-noise scale",
            lambda m: m.DeviceNoise(0.0, np.inf, m.EmpiricalNoise(GOOD)),
            ValueError,
            r"(?s)scale\b.*FinitePositive\(\).*inf",
        ),
        (
            "infinite device-noise loc",
            lambda m: m.DeviceNoise(np.inf, 1.0, m.EmpiricalNoise(GOOD)),
            ValueError,
            r"(?s)loc\b.*Real\(\).*inf",
        ),
    ]


CASE_IDS = [c[0] for c in _cases(__import__("pathlib").Path("/nonexistent"))]


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_input(case, backend, tmp_path):
    module = {"numpyro": nd, "pyro": pd}[backend]
    _, build, exc, match = next(c for c in _cases(tmp_path) if c[0] == case)
    with pytest.raises(exc, match=match):
        build(module)


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_spike_and_slab_takes_any_two_positive_scales(backend):
    """``arg_constraints`` are the whole truth: a spike wider than the slab is a valid
    mixture (the host's generic tests build such values), with the density of the
    two-component mixture (scipy) and the slab component's inclusion probability."""
    from scipy import stats

    module = {"numpyro": nd, "pyro": pd}[backend]
    x = np.linspace(-3.0, 3.0, 7)
    prob, spike, slab = 0.3, 2.0, 0.5
    d = module.SpikeAndSlab(prob, spike, slab)
    slab_pdf = prob * stats.norm.pdf(x, scale=slab)
    mixture = slab_pdf + (1 - prob) * stats.norm.pdf(x, scale=spike)
    value = x.astype(np.float32)
    if backend == "pyro":
        import torch

        value = torch.as_tensor(value)
    lp = np.asarray(d.log_prob(value), np.float64)
    np.testing.assert_allclose(lp, np.log(mixture), rtol=1e-5)
    np.testing.assert_allclose(
        np.asarray(d.inclusion_prob(value), np.float64), slab_pdf / mixture, rtol=1e-5
    )
