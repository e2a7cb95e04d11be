"""Import hygiene and the public surface."""

import importlib
import pkgutil
import subprocess
import sys

import pytest

import ppl_hw


def _all_modules():
    names = ["ppl_hw"]
    for info in pkgutil.walk_packages(ppl_hw.__path__, prefix="ppl_hw."):
        if not info.name.endswith(".__main__"):  # importing it runs the program
            names.append(info.name)
    return sorted(names)


MODULES = _all_modules()


def test_import_loads_neither_jax_nor_torch():
    code = (
        "import sys, ppl_hw, ppl_hw.core, ppl_hw.metrics, ppl_hw.datasets\n"
        "import ppl_hw.demo\n"
        "heavy = [m for m in ('jax', 'torch', 'numpyro', 'pyro') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "", (
        f"backend-neutral import pulled in: {out.stdout.strip()}"
    )


def test_backends_import_only_their_own_framework():
    for backend, other in (("numpyro", "torch"), ("pyro", "jax")):
        code = f"import sys, ppl_hw.{backend}\nprint({other!r} in sys.modules)\n"
        out = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, check=True
        )
        assert out.stdout.strip() == "False", f"ppl_hw.{backend} imported {other}"


@pytest.mark.parametrize("name", MODULES)
def test_every_name_in_all_exists(name):
    module = importlib.import_module(name)
    exported = getattr(module, "__all__", None)
    assert exported is not None, f"{name} has no __all__"
    assert len(set(exported)) == len(exported), f"{name}.__all__ has duplicates"
    missing = [n for n in exported if not hasattr(module, n)]
    assert not missing, f"{name}.__all__ names missing attributes: {missing}"


def test_version():
    assert isinstance(ppl_hw.__version__, str) and ppl_hw.__version__[0].isdigit()
