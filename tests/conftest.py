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


def pytest_collection_modifyitems(config, items):
    """Mark tests under tests/numpyro and tests/pyro with their backend."""
    for item in items:
        path = Path(str(item.fspath)).resolve()
        for marker, folder in _BACKEND_DIRS.items():
            if folder in path.parents:
                item.add_marker(getattr(pytest.mark, marker))


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
