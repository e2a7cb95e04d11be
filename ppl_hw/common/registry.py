"""How the adapters offer themselves to the backend-neutral entry points.

A neutral module (:mod:`ppl_hw.coding`, :mod:`ppl_hw.arviz`) owns a
:class:`Registry`; each adapter registers its implementations with it when the
adapter is imported (``registry.register(AutoNormal)(gaussians)``), the pattern funsor
uses to serve several array libraries. A neutral module never imports an adapter by
name: a lookup walks the object's class hierarchy, and only when nothing matches does
it load the adapters of the host libraries already imported (a guide of a host exists
only once its host is imported), as :func:`load_adapters`.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from typing import Any

__all__ = ["ADAPTERS", "Registry", "load_adapters"]

#: host package -> the ppl_hw adapter package that serves it
ADAPTERS = {"numpyro": "ppl_hw.numpyro", "pyro": "ppl_hw.pyro"}


def load_adapters(hosts: Any = None) -> None:
    """Import the adapters of ``hosts`` (default: of every host already imported), so
    that they register themselves."""
    for host, adapter in ADAPTERS.items():
        wanted = host in sys.modules if hosts is None else host in hosts
        if wanted and adapter not in sys.modules:
            importlib.import_module(adapter)


class Registry:
    """Implementations keyed by a class (found through an object's MRO) or by a
    backend name."""

    def __init__(self, what: str):
        self.what = what
        self._by_type: dict[type, Any] = {}
        self._by_name: dict[str, Any] = {}

    def register(self, key: type | str) -> Callable[[Any], Any]:
        """Decorator: ``@registry.register(SomeGuide)`` or ``register("numpyro")``."""

        def add(impl: Any) -> Any:
            if isinstance(key, str):
                self._by_name[key] = impl
            else:
                self._by_type[key] = impl
            return impl

        return add

    def _find(self, obj: Any) -> Any:
        for cls in type(obj).__mro__:
            if cls in self._by_type:
                return self._by_type[cls]
        return None

    def lookup(self, obj: Any) -> Any:
        """The implementation for ``obj``'s class (the nearest registered base), or
        ``None`` when no adapter has registered one."""
        impl = self._find(obj)
        if impl is None:
            load_adapters()
            impl = self._find(obj)
        return impl

    def by_name(self, name: str) -> Any:
        """The implementation registered under a backend name (its adapter is
        imported on first use)."""
        if name not in self._by_name:
            load_adapters([name])
        if name not in self._by_name:
            raise ValueError(f"no {self.what} registered for backend {name!r}")
        return self._by_name[name]
