"""Test harness: two host devices for JAX, validation on, seeds reset per test.

``XLA_FLAGS`` must be set before JAX is imported anywhere, so it is set here, at the
top of the root conftest, which pytest imports before any test module.

The same suite runs on both tested stacks (docs/installation.md). On the second one
(Python 3.13, ``requirements/lock-py313.txt``) torch is not installed, so the Pyro half
is left out there, and only it: the test modules that import torch or Pyro at module
level are not collected, and the tests run for the Pyro backend (marked ``pyro``, or
parametrised with the Pyro backend or a Pyro module, notebook or benchmark) are
deselected; the run's header says how many.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("MPLBACKEND", "Agg")

import ast
import importlib.util
import random
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent

# One JAX compilation cache for the whole run, shared by the xdist workers and by the
# processes the tests start (notebook kernels, examples, the demo, benchmarks): the
# same XLA programs (a NumPyro guide's eager set-up alone compiles ~300 small ones) are
# compiled once per run instead of once per process. The controller makes a fresh
# folder before it starts the workers (they inherit the environment) and removes it at
# the end, so nothing carries over between runs and every run starts cold, as CI's.
_JAX_CACHE = None
if (
    "PYTEST_XDIST_WORKER" not in os.environ
    and "JAX_COMPILATION_CACHE_DIR" not in os.environ
):
    _JAX_CACHE = tempfile.mkdtemp(prefix="ppl_hw-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = _JAX_CACHE
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "0"
_BACKEND_DIRS = {"numpyro": ROOT / "numpyro", "pyro": ROOT / "pyro"}

# The Pyro half runs where torch is installed (the pinned 3.11 stack), not elsewhere.
HAS_TORCH = importlib.util.find_spec("torch") is not None
_PYRO_MODULES = ("torch", "pyro", "ppl_hw.pyro")
# A parameter value that names the Pyro backend or torch: "pyro", "ppl_hw.pyro.nn",
# "quickstart_pyro", "bench_sghmc_pyro", "torch" -- but not "numpyro" nor "pyromodule".
_PYRO_VALUE = re.compile(r"(?<![A-Za-z0-9])(?:pyro|torch)(?![A-Za-z0-9])")
_NOT_COLLECTED: set[str] = set()


def _imports_pyro_at_module_level(path: Path) -> bool:
    """Whether the module's top-level statements import torch, Pyro or ppl_hw.pyro."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in tree.body:
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        if any(n == m or n.startswith(m + ".") for n in names for m in _PYRO_MODULES):
            return True
    return False


def pytest_ignore_collect(collection_path, config):
    """Without torch, the test modules that import it (or Pyro) are not collected."""
    if HAS_TORCH or collection_path.suffix != ".py":
        return None
    if not collection_path.name.startswith("test_"):
        return None
    if _imports_pyro_at_module_level(collection_path):
        _NOT_COLLECTED.add(str(collection_path.relative_to(ROOT.parent)))
        return True
    return None


# A line of a notebook or script that imports torch, Pyro or ppl_hw.pyro.
_PYRO_IMPORT_LINE = re.compile(
    r"^\s*(?:import|from)\s+(?:torch|pyro|ppl_hw\.pyro)\b"
    r"|^\s*from\s+ppl_hw\s+import\s+.*\bpyro\b",
    re.MULTILINE,
)
# Tests that need torch although their module imports it lazily: they run both
# backends in one test body (a study or benchmark that compares them, a cross-backend
# check), or the NumPyro half uses a Pyro helper (tests/test_models.py reads the
# trace with pyro.poutine.util). Without torch they are deselected. A module path
# stands for all its tests, a test id without parameters for all its cases.
_NEEDS_TORCH = {
    "tests/test_models.py",
    "tests/test_examples.py::test_crossbar_drift_smoke",
    "tests/core/test_metrics.py::test_metrics_accept_backend_arrays",
    "tests/core/test_pfp.py::test_numpyro_and_pyro_namespaces_agree_with_numpy",
    "tests/test_public_api.py::test_backends_import_only_their_own_framework",
    "tests/test_sghmc.py::test_core_agrees_across_numpy_jax_and_torch",
    "tests/test_sghmc.py::test_preconditioned_kernels_run_on_both_backends",
    "tests/test_nan_guards.py::test_pyro_svi_stops_on_nan_parameters_naming_the_site",
    *(
        f"tests/test_benchmarks.py::test_benchmark_runs_quick[{name}]"
        for name in (
            "bench_backends",
            "bench_coding",
            "bench_distributions",
            "bench_guides",
            "bench_pfp",
        )
    ),
}


def _file_imports_pyro(path: Path) -> bool:
    """Whether the notebook's code cells or the script import torch or Pyro."""
    if path.suffix == ".ipynb":
        import json

        cells = json.loads(path.read_text(encoding="utf-8"))["cells"]
        text = "\n".join(
            "".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells
            if c["cell_type"] == "code"
        )
    else:
        text = path.read_text(encoding="utf-8")
    return _PYRO_IMPORT_LINE.search(text) is not None


def _runs_the_pyro_backend(item) -> bool:
    if item.get_closest_marker("pyro"):
        return True
    function = item.nodeid.split("[")[0]
    if {item.nodeid, function, function.split("::")[0]} & _NEEDS_TORCH:
        return True
    group = item.get_closest_marker("xdist_group")  # e.g. the demo's run on Pyro
    if group and group.args and _PYRO_VALUE.search(str(group.args[0])):
        return True
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return False
    for value in callspec.params.values():
        if isinstance(value, str) and _PYRO_VALUE.search(value):
            return True
        if (
            isinstance(value, Path)
            and value.suffix in (".ipynb", ".py")
            and value.is_file()
            and _file_imports_pyro(value)
        ):
            return True
    return False


def pytest_report_header(config):
    if HAS_TORCH:
        return None
    return (
        "torch is not installed: the Pyro half is left out (test modules importing "
        "torch or Pyro are not collected, Pyro-backend tests are deselected)"
    )


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _NOT_COLLECTED:
        terminalreporter.write_line(
            f"torch is not installed: {len(_NOT_COLLECTED)} test modules that import "
            "torch or Pyro were not collected: " + ", ".join(sorted(_NOT_COLLECTED))
        )


def pytest_configure(config):
    # Host validation on: distribution parameters are checked through the hosts'
    # own arg_constraints (docs/architecture.md, validation).
    import numpyro

    numpyro.enable_validation(True)
    if not HAS_TORCH:
        return
    import pyro

    pyro.enable_validation(True)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # One intra-op thread per xdist worker: two workers of two torch threads
        # each on two cores spin against each other and run Pyro ~7x slower.
        import torch

        torch.set_num_threads(1)


def pytest_unconfigure(config):
    if _JAX_CACHE is not None:
        shutil.rmtree(_JAX_CACHE, ignore_errors=True)


# Expected seconds of the longest tests (or ``xdist_group``s of tests that share one
# run), from `make test` on 2 cores; unlisted tests marked ``slow`` count as
# _SLOW_SECONDS. Only the order of the run depends on these numbers (see
# _longest_first): a stale entry costs time, never a result.
_LONG_TESTS = {
    "tests/test_examples.py::test_shape_insensitivity_smoke": 100,
    "tests/test_notebooks.py::test_notebook_runs_at_smoke_size[byo_network_numpyro]": 100,
    "demo_numpyro": 80,
    "tests/test_notebooks.py::test_notebook_runs_at_smoke_size[quickstart_numpyro]": 73,
    "tests/test_examples.py::test_hardware_aware_training_smoke[numpyro-regression]": 59,
    "tests/test_examples.py::test_crossbar_drift_smoke": 50,
    "tests/test_notebooks.py::test_notebook_runs_at_smoke_size[byo_network_pyro]": 47,
    "tests/test_pfp_guides.py::test_init_from_a_real_valued_network_and_the_exported_net_under_crossbars": 47,
    "tests/test_examples.py::test_ternary_pfp_smoke": 44,
    "tests/test_benchmarks.py::test_benchmark_runs_quick[bench_guides]": 44,
    "tests/test_benchmarks.py::test_benchmark_runs_quick[bench_pfp]": 41,
    "tests/test_notebooks.py::test_notebook_runs_at_smoke_size[device_noise_shape]": 42,
    "tests/test_notebooks.py::test_notebook_runs_at_smoke_size[meankl_miracle]": 40,
    "tests/test_examples.py::test_meankl_vs_meanvar_smoke": 36,
    "scale_dropout_study": 35,
    "meankl_grid": 60,
    "tests/test_ternary_recipe.py::test_recipe_runs_at_smoke_size": 50,
    "tests/test_examples.py::test_sghmc_sparse_regression_smoke": 35,
    "demo_pyro": 30,
    "tests/test_lenet5_study.py::test_lenet5_mnist_smoke": 70,
}
_SLOW_SECONDS = 20


def _expected_seconds(key, unit: list) -> float:
    """Of a unit of the run: one test (``key`` its id) or an ``xdist_group``."""
    if key in _LONG_TESTS:
        return _LONG_TESTS[key]
    return sum(
        _LONG_TESTS.get(
            item.nodeid, _SLOW_SECONDS if item.get_closest_marker("slow") else 0
        )
        for item in unit
    )


def _longest_first(items: list) -> list:
    """The collection reordered so that each of two xdist workers starts with its share
    of the long tests, longest first, and ends with short ones.

    ``--dist worksteal`` hands the first half of the collection to one worker and the
    second half to the other, and an idle worker then steals the back half of the
    other's queue: with the long tests at the front of both halves (shared out longest
    first, each to the less loaded half), the run never ends on one long test while
    the other worker idles. Tests of one ``xdist_group`` stay together, in their
    order, on one worker (e.g. the demo tests that share one run). Without xdist this
    only changes the order."""
    units: dict = {}
    for item in items:
        group = item.get_closest_marker("xdist_group")
        units.setdefault(group.args[0] if group else item.nodeid, []).append(item)
    long, short = [], []
    for key, unit in units.items():
        seconds = _expected_seconds(key, unit)
        (long if seconds > 0 else short).append((seconds, unit))
    halves: tuple[list, list] = ([], [])
    load = [0.0, 0.0]
    for seconds, unit in sorted(long, key=lambda su: -su[0]):  # stable: ties in order
        k = 0 if load[0] <= load[1] else 1
        halves[k].extend(unit)
        load[k] += seconds
    rest = [item for _, unit in short for item in unit]
    fill = max(len(items) // 2 - len(halves[0]), 0)
    return halves[0] + rest[:fill] + halves[1] + rest[fill:]


def pytest_collection_modifyitems(config, items):
    """Mark tests under tests/numpyro and tests/pyro with their backend; without torch,
    deselect the Pyro-backend tests; run the long tests first (:func:`_longest_first`)."""
    for item in items:
        path = Path(str(item.fspath)).resolve()
        for marker, folder in _BACKEND_DIRS.items():
            if folder in path.parents:
                item.add_marker(getattr(pytest.mark, marker))
    if not HAS_TORCH:
        pyro_items = [item for item in items if _runs_the_pyro_backend(item)]
        if pyro_items:
            config.hook.pytest_deselected(items=pyro_items)
            items[:] = [item for item in items if not _runs_the_pyro_backend(item)]
    items[:] = _longest_first(items)


@pytest.fixture(autouse=True)
def _reset_seeds():
    """Every test starts from the same global random state and an empty param store."""
    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - the legacy global state, for code that uses it
    if HAS_TORCH:
        import pyro
        import torch

        torch.manual_seed(0)
        pyro.set_rng_seed(0)
        pyro.clear_param_store()
    yield
