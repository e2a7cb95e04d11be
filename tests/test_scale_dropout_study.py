"""The MC-Scale-Dropout study (examples/scale_dropout.py) at smoke size: the runs
complete with one record per seed, and the paired statistics it reports (MC against
dropout off, per metric) equal those recomputed here from its own per-seed numbers
by closed forms and exact enumeration (sign test, paired t, Wilcoxon signed-rank)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

pytest.importorskip("numpyro")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "scale_dropout.py"
VARIANT = "one, per layer, p=0.2"
SEEDS, STEPS, TS = 4, 30, (5, 10)
# the two tests that read the one smoke run stay together (one run of the fixture)
# when conftest.py reorders the collection or xdist shares it out
SHARES_THE_RUN = pytest.mark.xdist_group("scale_dropout_study")


def _load():
    spec = importlib.util.spec_from_file_location("scale_dropout_study", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    out = tmp_path_factory.mktemp("scale_dropout")
    sd = _load()
    argv = ["--smoke", "--seeds", str(SEEDS), "--steps", str(STEPS), "--output"]
    argv += [str(out), "--T", *map(str, TS), "--variants", VARIANT]
    return sd, sd.main(argv), out


def _sign_test_p(k: int, n: int) -> float:
    """Two-sided exact binomial test at 1/2 (the distribution is symmetric)."""
    tail = sum(math.comb(n, i) for i in range(min(k, n - k) + 1)) / 2**n
    return min(1.0, 2 * tail)


def _wilcoxon_exact_p(d: np.ndarray) -> float:
    """Two-sided signed-rank p-value by enumerating the 2^n sign patterns."""
    n = d.size
    ranks = np.argsort(np.argsort(np.abs(d))) + 1
    centre = n * (n + 1) / 4
    observed = abs(ranks[d > 0].sum() - centre)
    hits = sum(
        abs(sum(r for r, s in zip(ranks, signs, strict=True) if s) - centre)
        >= observed - 1e-9
        for signs in itertools.product((0, 1), repeat=n)
    )
    return hits / 2**n


@pytest.mark.slow
@SHARES_THE_RUN
def test_runs_complete_with_one_record_per_seed(study):
    sd, res, out = study
    assert list(res) == [VARIANT]
    r = res[VARIANT]
    assert (r["seeds"], r["steps"], r["T"]) == (SEEDS, STEPS, list(TS))
    assert r["per_seed"]["seed"] == list(range(SEEDS))
    assert set(r["per_seed"]) == {"seed", "off", *(f"mc_T{T}" for T in TS)}
    for key in ("off", *(f"mc_T{T}" for T in TS)):
        for m in sd.METRICS:
            v = np.asarray(r["per_seed"][key][m])
            assert v.shape == (SEEDS,) and np.all(np.isfinite(v))
            assert r["mean"][key][m] == pytest.approx(v.mean())
            assert r["sd"][key][m] == pytest.approx(v.std(ddof=1))
        correct = np.asarray(r["per_seed"][key]["accuracy"]) * 450  # test images
        np.testing.assert_allclose(correct, np.round(correct), atol=1e-9)
    # the headline summaries are the first T's and dropout off's means
    assert r["mc"] == {m: r["mean"][f"mc_T{TS[0]}"][m] for m in sd.HEADLINE_METRICS}
    assert r["off"] == {m: r["mean"]["off"][m] for m in sd.HEADLINE_METRICS}
    mc_ece = np.asarray(r["per_seed"][f"mc_T{TS[0]}"]["ece"])
    assert r["mc_ece_lower_in"] == int(np.sum(mc_ece < r["per_seed"]["off"]["ece"]))
    assert json.loads((out / "results.json").read_text()) == res
    assert (out / sd.FIGURE).stat().st_size > 0


@pytest.mark.slow
@SHARES_THE_RUN
def test_paired_statistics_equal_independent_recomputation(study):
    sd, res, _ = study
    r = res[VARIANT]
    comparisons = {f"mc_T{T}_vs_off": (f"mc_T{T}", "off") for T in TS}
    comparisons[f"mc_T{TS[1]}_vs_mc_T{TS[0]}"] = (f"mc_T{TS[1]}", f"mc_T{TS[0]}")
    assert set(r["paired"]) == set(comparisons)
    for comp, (ka, kb) in comparisons.items():
        for m in sd.METRICS:
            a = np.asarray(r["per_seed"][ka][m])
            b = np.asarray(r["per_seed"][kb][m])
            st = r["paired"][comp][m]
            d = a - b
            k, n_nonzero = int(np.sum(d < 0)), int(np.sum(d != 0))
            assert (st["n"], st["a_lower"], st["ties"]) == (SEEDS, k, SEEDS - n_nonzero)
            assert st["b_lower"] == n_nonzero - k
            assert st["mean_diff"] == pytest.approx(d.mean(), abs=1e-12)
            if n_nonzero == 0:
                assert st["sign_test_p"] is None and st["wilcoxon_p"] is None
                continue
            assert st["sign_test_p"] == pytest.approx(_sign_test_p(k, n_nonzero))
            sdev = math.sqrt(np.sum((d - d.mean()) ** 2) / (SEEDS - 1))
            assert st["sd_diff"] == pytest.approx(sdev, rel=1e-9)
            if sdev > 0:
                t = d.mean() / (sdev / math.sqrt(SEEDS))
                p = 2 * stats.t.sf(abs(t), SEEDS - 1)
                assert st["t_test_p"] == pytest.approx(p, rel=1e-6)
            else:
                assert st["t_test_p"] is None
            nz = d[d != 0]
            if np.unique(np.abs(nz)).size == nz.size:  # no ties: exact enumeration
                assert st["wilcoxon_p"] == pytest.approx(_wilcoxon_exact_p(nz))
            else:  # ties (accuracy moves in steps of one image): scipy's own
                assert st["wilcoxon_p"] == pytest.approx(stats.wilcoxon(a, b).pvalue)


def test_brier_score_is_the_closed_form_and_bad_pairs_are_refused():
    sd = _load()
    rng = np.random.default_rng(0)
    p = rng.dirichlet(np.ones(10), size=50)
    y = rng.integers(0, 10, size=50)
    expected = np.mean(np.sum((p - np.eye(10)[y]) ** 2, axis=1))
    assert sd.brier(p, y) == pytest.approx(expected, rel=1e-12)
    one = sd.paired_statistics([0.1], [0.2])
    assert (one["a_lower"], one["sign_test_p"]) == (1, 1.0)
    assert one["t_test_p"] is one["wilcoxon_p"] is one["sd_diff"] is None
    with pytest.raises(ValueError, match="a and b"):
        sd.paired_statistics([0.1, 0.2], [0.1])
    with pytest.raises(ValueError, match="a and b"):
        sd.paired_statistics([], [])
    for argv in (["--seeds", "0"], ["--T", "5", "5"]):
        with pytest.raises(SystemExit):
            sd.main(argv)
