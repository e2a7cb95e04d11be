"""Every notebook in ``examples/notebooks`` runs at its smoke size, and is committed
without outputs.

Each notebook's first code cell is tagged ``parameters`` and sets ``smoke_test =
False``; the test inserts ``smoke_test = True`` after it (as papermill does), runs the
notebook with nbclient in a temporary folder, and writes the executed copy to
``docs/_generated/notebooks/``: the documentation renders those copies (myst-nb with
execution off), so each notebook is executed once, here.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "examples" / "notebooks").glob("*.ipynb"))
EXECUTED = ROOT / "docs" / "_generated" / "notebooks"


def _parameters_cell(nb) -> int:
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert "parameters" in cell.metadata.get("tags", []), (
                "the first code cell must be tagged 'parameters'"
            )
            assert "smoke_test = False" in cell.source
            return i
    raise AssertionError("no code cell")


def test_there_are_notebooks():
    names = {p.stem for p in NOTEBOOKS}
    assert {"quickstart_numpyro", "quickstart_pyro"} <= names, names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_without_outputs(path):
    import nbformat

    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, path.name
    _parameters_cell(nb)


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_at_smoke_size(path, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    at = _parameters_cell(nb)
    smoke = nbformat.v4.new_code_cell(
        "smoke_test = True", metadata={"tags": ["injected-parameters"]}
    )
    nb.cells.insert(at + 1, smoke)
    # one torch thread per notebook kernel (xdist runs two at once on two cores),
    # the same two host devices as the rest of the suite
    env_before = dict(os.environ)
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ.setdefault("MPLBACKEND", "Agg")
    try:
        NotebookClient(
            nb,
            timeout=900,
            kernel_name="python3",
            resources={"metadata": {"path": str(tmp_path)}},
        ).execute()
    finally:
        os.environ.clear()
        os.environ.update(env_before)
    EXECUTED.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, EXECUTED / path.name)
