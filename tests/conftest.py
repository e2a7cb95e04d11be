"""Test harness: two host devices for JAX, validation on, seeds reset per test.

``XLA_FLAGS`` must be set before JAX is imported anywhere, so it is set here, at the
top of the root conftest, which pytest imports before any test module.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("MPLBACKEND", "Agg")

import random
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


def pytest_configure(config):
    # Host validation on: distribution parameters are checked through the hosts'
    # own arg_constraints (docs/architecture.md, validation).
    import numpyro
    import pyro

    numpyro.enable_validation(True)
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
    "tests/test_examples.py::test_sghmc_sparse_regression_smoke": 35,
    "demo_pyro": 30,
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
    """Mark tests under tests/numpyro and tests/pyro with their backend; run the long
    tests first (:func:`_longest_first`)."""
    for item in items:
        path = Path(str(item.fspath)).resolve()
        for marker, folder in _BACKEND_DIRS.items():
            if folder in path.parents:
                item.add_marker(getattr(pytest.mark, marker))
    items[:] = _longest_first(items)


@pytest.fixture(autouse=True)
def _reset_seeds():
    """Every test starts from the same global random state and an empty param store."""
    import pyro
    import torch

    random.seed(0)
    np.random.seed(0)  # noqa: NPY002 - the legacy global state, for code that uses it
    torch.manual_seed(0)
    pyro.set_rng_seed(0)
    pyro.clear_param_store()
    yield
