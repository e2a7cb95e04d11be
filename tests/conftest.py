"""Test harness: two host devices for JAX, validation on, seeds reset per test.

``XLA_FLAGS`` must be set before JAX is imported anywhere, so it is set here, at the
top of the root conftest, which pytest imports before any test module.
"""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("MPLBACKEND", "Agg")

import random
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parent
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
