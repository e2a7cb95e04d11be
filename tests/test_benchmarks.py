"""Every benchmark runs (at its tiny ``quick`` size) and reports a ratio."""

import importlib
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
run = importlib.import_module("run")


@pytest.mark.parametrize("name", run.discover())
def test_benchmark_runs_quick(name):
    results = importlib.import_module(name).run(quick=True)
    assert results
    for r in results:
        assert r.ratio > 0 and r.status in {"met", "missed", "reported"}


def test_write_docs_replaces_only_the_marked_block(tmp_path):
    from _timing import Result

    page = tmp_path / "b.md"
    page.write_text(f"# title\n\nbefore\n\n{run.BEGIN}\nold\n{run.END}\n\nafter\n")
    run.write_docs(page, [Result("x ÷ y", 1.5, goal=2.0, details={"x ms": 3.0})])
    text = page.read_text()
    assert "old" not in text and "before" in text and "after" in text
    assert "| x ÷ y | 1.50× | ≤ 2× | met | x ms 3 |" in text
