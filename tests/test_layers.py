"""The architecture rule, checked on the source: ``core <- common <- adapters``,
never upward or sideways, and no import cycle (docs/architecture.md).

Every ``import`` statement of every module of ``ppl_hw`` counts, at module level or
inside a function: a lazy import is still a dependency.
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ppl_hw"
ADAPTERS = ("ppl_hw.numpyro", "ppl_hw.pyro")
# the neutral public modules beside the layers: they may use core and common
NEUTRAL = (
    "ppl_hw.arviz",
    "ppl_hw.coding",
    "ppl_hw.config",
    "ppl_hw.datasets",
    "ppl_hw.devices",
    "ppl_hw.metrics",
)


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(name: str) -> str | None:
    """The ppl_hw module ``name`` refers to (a name inside a module resolves to
    the module), or None outside ppl_hw."""
    if name != "ppl_hw" and not name.startswith("ppl_hw."):
        return None
    while name not in MODULES:
        name = name.rsplit(".", 1)[0]
    return name


def _imports(module: str) -> set[str]:
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # "from pkg import name": the name is a submodule or an attribute
            names = [
                f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else prefix
                for a in node.names
            ]
        else:
            continue
        for n in names:
            target = _resolve(n)
            if target is not None and target != module:
                found.add(target)
    return found


GRAPH = {m: _imports(m) for m in MODULES}


def _layer(module: str) -> str:
    for prefix in ("ppl_hw.core", "ppl_hw.common", *ADAPTERS, *NEUTRAL):
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return module  # ppl_hw itself, the demo application


def _allowed(src: str, dst: str) -> bool:
    a, b = _layer(src), _layer(dst)
    if a == "ppl_hw.core":
        return b == "ppl_hw.core"
    if a == "ppl_hw.common":
        return b in ("ppl_hw.core", "ppl_hw.common")
    if a in ADAPTERS:
        return b in ("ppl_hw.core", "ppl_hw.common", a)
    if a in NEUTRAL:
        return b not in ADAPTERS and b != "ppl_hw.demo"
    return True  # ppl_hw/__init__ and the demo application sit on top


def test_the_walk_sees_the_layers():
    # the walk itself: it finds the layers and their known edges
    assert "ppl_hw.core.crossbar" in GRAPH["ppl_hw.numpyro.handlers"]
    assert "ppl_hw.common.handlers" in GRAPH["ppl_hw.pyro.handlers"]
    assert "ppl_hw.core.sghmc" in GRAPH["ppl_hw.common.sghmc"]
    assert not _allowed("ppl_hw.core.crossbar", "ppl_hw.config")
    assert not _allowed("ppl_hw.common.nn", "ppl_hw.numpyro.nn")
    assert not _allowed("ppl_hw.pyro.nn", "ppl_hw.numpyro.nn")
    assert not _allowed("ppl_hw.coding", "ppl_hw.pyro.autoguide")


@pytest.mark.parametrize("module", sorted(MODULES))
def test_imports_go_down_the_layers(module):
    wrong = sorted(t for t in GRAPH[module] if not _allowed(module, t))
    assert not wrong, f"{module} ({_layer(module)}) imports {wrong}"


def test_no_top_level_private_modules():
    loose = sorted(p.name for p in PACKAGE.glob("_*.py") if p.name != "__init__.py")
    assert not loose, f"loose private modules at the top of ppl_hw: {loose}"


def test_no_import_cycle():
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> None:
        state[m] = 1
        stack.append(m)
        for t in sorted(GRAPH[m]):
            if state.get(t) == 1:
                cycle = [*stack[stack.index(t) :], t]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if t not in state:
                visit(t)
        stack.pop()
        state[m] = 2

    for m in sorted(GRAPH):
        if m not in state:
            visit(m)
