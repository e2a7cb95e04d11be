"""Every public module is in the API reference and every public name has a docstring.

Autodoc renders a module's ``__all__`` (``members`` + ``undoc-members``), so a public
module listed in ``docs/api.md`` documents all its names; this test fails when a new
public module is left out, or a public function or class has no docstring.
"""

import importlib
import inspect
import pkgutil
import re
from pathlib import Path

import pytest

import ppl_hw

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _public_modules():
    names = ["ppl_hw"]
    for info in pkgutil.walk_packages(ppl_hw.__path__, prefix="ppl_hw."):
        if not any(part.startswith("_") for part in info.name.split(".")[1:]):
            names.append(info.name)
    return sorted(names)


def _documented_modules():
    found = set()
    for page in DOCS.rglob("*.md"):
        found |= set(re.findall(r"automodule::\s+([\w.]+)", page.read_text()))
    return found


@pytest.mark.parametrize("name", _public_modules())
def test_public_names_are_in_the_api_reference(name):
    """Each public name is rendered by an ``automodule`` of the API pages: its own
    module's, or that of a documented package that re-exports it (the backends'
    ``distributions`` packages hold one file per distribution)."""
    documented = _documented_modules()
    module = importlib.import_module(name)
    candidates = [m for m in documented if name == m or name.startswith(m + ".")]
    missing = []
    for attr in module.__all__:
        if inspect.ismodule(getattr(module, attr)):
            continue
        if not any(
            attr in getattr(importlib.import_module(m), "__all__", ())
            for m in candidates
        ):
            missing.append(attr)
    assert not missing, f"{name}: {missing} are in no automodule of docs/"


@pytest.mark.parametrize("name", _public_modules())
def test_public_names_have_docstrings(name):
    module = importlib.import_module(name)
    assert module.__doc__, f"{name} has no module docstring"
    for attr in module.__all__:
        obj = getattr(module, attr)
        if inspect.ismodule(obj) or not (
            inspect.isfunction(obj) or inspect.isclass(obj)
        ):
            continue
        if getattr(obj, "__module__", name) != name:
            continue  # re-exported: documented where it is defined
        assert inspect.getdoc(obj), f"{name}.{attr} has no docstring"
