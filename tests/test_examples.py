"""Every study in examples/ runs at its smoke size (the full size is run by hand and its
numbers are in docs/reproductions.md)."""

import importlib.util
import json
from pathlib import Path

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
