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
        if not any(part.startswith("_") for part in info.name.split(".")):
            names.append(info.name)
    return sorted(names)


def _documented_modules():
    found = set()
    for page in DOCS.rglob("*.md"):
        found |= set(re.findall(r"automodule::\s+([\w.]+)", page.read_text()))
    return found


@pytest.mark.parametrize("name", _public_modules())
def test_public_module_is_in_the_api_reference(name):
    assert name in _documented_modules(), f"{name} is missing from docs/api.md"


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
