"""Every study in examples/ runs at its smoke size (the full size is run by hand and its
numbers are in docs/reproductions.md)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_crossbar_drift_smoke(tmp_path):
    results = _load("crossbar_drift").main(["--smoke", "--output", str(tmp_path)])
    assert set(results) == {"numpyro", "pyro"}
    for rows in results.values():
        clean, *deployed = rows
        assert clean["time"] == "clean" and clean["accuracy"] > 0.5
        assert {(r["compensation"], r["time"]) for r in deployed} == {
            (False, "1 year"),
            (True, "1 year"),
        }
        for r in deployed:
            assert 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["ece"] <= 1.0
    assert (tmp_path / "crossbar_drift.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "results.json").read_text()) == results


@pytest.mark.slow
def test_shape_insensitivity_smoke(tmp_path):
    import scipy.stats

    rows = _load("shape_insensitivity").main(["--smoke", "--output", str(tmp_path)])
    assert set(rows) == {"trained", "prior"}
    for setting, by_shape in rows.items():
        for shape, r in by_shape.items():
            assert r["widths"] == [1, 2, 8]
            d2 = r["energy_distance"]
            # the pass rule, from width 1: the predictives of different shapes converge
            # as the layer widens (at widths 8-512 every value is at the Monte Carlo
            # floor, ~1e-4, see docs/reproductions.md)
            assert d2[-1] < d2[0] / 2, (setting, shape, d2)
            assert scipy.stats.spearmanr(r["widths"], d2)[0] < 0, (setting, shape, d2)
            assert abs(d2[-1]) < 1e-3  # insensitive to the shape at width 8
    assert (tmp_path / "shape_insensitivity.png").exists()


@pytest.mark.slow
def test_meankl_vs_meanvar_smoke(tmp_path):
    res = _load("meankl_vs_meanvar").main(["--smoke", "--output", str(tmp_path)])
    budget = res["budget_nats"]
    assert res["meankl"]["kl"] == pytest.approx(budget, rel=1e-5)  # by construction
    kl_mv = res["meanvar"]["kl"]
    assert kl_mv[-1] < kl_mv[0]  # the annealed penalties pull Mean-Var's KL down
    assert len(res["meankl"]["curve"]) == len(res["meanvar"]["curve"]) == 8
    assert all(np.isfinite(v) for _, v in res["meankl"]["curve"])


@pytest.mark.slow
def test_ternary_pfp_smoke(tmp_path):
    import math

    res = _load("ternary_pfp").main(["--smoke", "--output", str(tmp_path)])
    assert set(res) == {"digits"}
    real, *ternary = res["digits"]
    assert real["network"].startswith("real") and real["accuracy"] > 0.8
    assert [(r["p0"], r["init"], r["output"]) for r in ternary] == [
        (1 / 3, "random", "sample"),
        (0.8, "random", "sample"),
        (0.8, "real", "sample"),
        (0.8, "random", "taylor"),
    ]
    for r in ternary:
        assert r["accuracy"] > 0.5 and 0 <= r["sampled_accuracy"] <= 1
        assert set(r["sparsity_per_layer"]) == {"w0", "w1", "w2"}
        assert r["bits_per_weight"] == pytest.approx(math.log2(3))
        assert 0 < r["entropy_bits"] <= math.log2(3) + 1e-9
    # a prior favouring zeros gives a sparser network
    assert ternary[1]["sparsity"] > ternary[0]["sparsity"] + 0.1
    assert (tmp_path / "ternary_pfp.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "results.json").read_text()) == res


@pytest.mark.slow
def test_sghmc_sparse_regression_smoke(tmp_path):
    """The smoke pass rule (Ke & Fan Example 1 at P = 100; docs/reproductions.md):
    the five true inputs kept and >= 90 % of the other input groups pruned."""
    res = _load("sghmc_sparse_regression").main(["--smoke", "--output", str(tmp_path)])
    assert res["true_inputs_kept"], res["kept_inputs"]
    assert res["other_inputs_pruned"] >= 0.9
    # most parameters sit in the first layer: pruning inputs prunes the network
    assert res["pruned_share"] > 0.8
    assert res["pruned_share"] == pytest.approx(res["kernel_sparsity"], abs=1e-6)
    # the noise variance is 1 (the authors' 1.108 at full size); a fit that lost
    # the signal sits at the test targets' variance
    from ppl_hw.datasets import make_sparse_regression

    var_y = float(np.var(make_sparse_regression("smoke").y_test))
    assert 1.0 < res["test_mse"] < 0.5 * var_y


@pytest.mark.slow
def test_miracle_coding_smoke(tmp_path):
    res = _load("miracle_coding").main(["--smoke", "--output", str(tmp_path)])
    num_weights = 64 * 64 + 64 + 64 * 64 + 64 + 64 * 10 + 10  # 8 970
    for kind in ("meankl_blocks", "meankl", "meanvar"):
        r = res[kind]
        assert r["num_weights"] == num_weights
        assert r["total_bits"] == r["num_blocks"] * 8
        # about as many bits as the guide's KL
        assert r["kl_bits"] - 8 <= r["total_bits"] <= r["kl_bits"] + 8
        assert r["bits_per_weight"] == pytest.approx(r["total_bits"] / num_weights)
        assert r["compression_ratio"] == pytest.approx(32 / r["bits_per_weight"])
        assert r["file_bytes"] == (tmp_path / f"{kind}.mrc").stat().st_size
        assert r["file_bytes"] >= r["total_bits"] / 8
        assert len(r["sample_accuracies"]) == 50
        assert r["sample_accuracy_p05"] <= r["sample_accuracy_p95"]
        assert 0.2 < r["decoded_accuracy"] <= 1
        assert [p["fraction"] for p in r["pruning"]] == res["prune_fractions"]
        assert r["pruning"][0]["decoded"] == r["decoded_accuracy"]
        # pruning 90 % of the weights costs accuracy
        assert r["pruning"][-1]["samples_mean"] < r["pruning"][0]["samples_mean"]
    # Mean-KL's KL is the budget by construction; with budget_split="blocks" it is
    # cut into exactly 20 000 / 8 blocks of 8 bits, which encode codes as they are
    assert res["meankl"]["kl_bits"] == pytest.approx(20_000, rel=1e-5)
    assert res["meankl_blocks"]["kl_bits"] == pytest.approx(20_000, rel=1e-5)
    assert res["meankl_blocks"]["num_blocks"] == 20_000 // 8
    assert (tmp_path / "miracle_coding.png").stat().st_size > 10_000
    assert json.loads((tmp_path / "results.json").read_text()) == res


@pytest.mark.slow
@pytest.mark.parametrize(
    "backend, task", [("numpyro", "regression"), ("pyro", "digits")]
)
def test_hardware_aware_training_smoke(tmp_path, backend, task):
    """Structure and valid ranges only: at the smoke size (60 steps, 2 chips) the
    sign of the gain means nothing; the full-size numbers are in
    docs/reproductions.md. Both backends and both tasks, in two runs (each
    backend x task is the same code path; NumPyro digits alone compiles ~80 s)."""
    res = _load("hardware_aware_training").main(
        ["--smoke", "--backend", backend, "--task", task, "--output", str(tmp_path)]
    )
    settings = res.pop("settings")
    chips = settings["chips"]
    assert chips >= 2 and isinstance(
        settings["deploy_device"]["drift_compensation"], bool
    )
    assert settings["train_device"]["name"] == settings["deploy_device"]["name"]
    assert set(res) == {backend}
    valid = {
        "accuracy": lambda v: 0.0 <= v <= 1.0,
        "nll": np.isfinite,  # the regression's Gaussian NLL may be negative
        "rmse": lambda v: 0.0 < v < np.inf,
    }
    names = {"digits": ("accuracy", "nll"), "regression": ("rmse", "nll")}[task]
    assert set(res[backend]) == {task}
    r = res[backend][task]
    for method in ("off", "hat"):
        assert np.isfinite(r["training"][method]["final_loss"])
        assert set(r["clean"][method]) == set(names)
        assert all(valid[m](v) for m, v in r["clean"][method].items())
    assert [(d["time"], d["metric"]) for d in r["deployed"]] == [
        (t, m) for t in ("1 day", "1 year") for m in names
    ]
    for d in r["deployed"]:
        for method in ("off", "hat"):
            values = d[method]["chips"]
            assert len(values) == chips
            assert all(valid[d["metric"]](v) for v in values)
            assert d[method]["mean"] == pytest.approx(np.mean(values))
            assert d[method]["sd"] >= 0.0
        # the gain is paired, chip by chip
        assert d["gain"]["mean"] == pytest.approx(
            d["hat"]["mean"] - d["off"]["mean"], abs=1e-9
        )
        assert 0.0 <= d["p_value"] <= 1.0
        clean = r["clean"]
        assert d["clean_gain"] == pytest.approx(
            clean["hat"][d["metric"]] - clean["off"][d["metric"]]
        )
        assert 0 <= d["hat_better_on"] <= chips
    assert (tmp_path / "hardware_aware_training.png").stat().st_size > 10_000
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved == {**res, "settings": settings}
