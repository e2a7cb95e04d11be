"""Shared Pyro plumbing."""

from __future__ import annotations

from typing import Any

import torch
from pyro.distributions.torch_distribution import (
    ExpandedDistribution,
    MaskedDistribution,
)
from torch.distributions import biject_to, constraints, transform_to

from .._backend import BACKEND

__all__ = [
    "BACKEND",
    "WRAPPERS",
    "base_distribution",
    "broadcast_params",
    "finite_positive",
    "finite_real",
    "uniform_open",
]


class _FiniteReal(constraints._Real):
    """``-inf < x < inf`` (torch's ``real`` admits ``±inf``, with which a
    distribution samples ``±inf``; NumPyro's ``real`` refuses them)."""

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return torch.isfinite(value)

    def __repr__(self) -> str:
        return "FiniteReal()"


class _FinitePositive(constraints._GreaterThan):
    """``0 < x < inf``: a scale that can mean something. Unconstrained by ``exp``,
    like ``positive``."""

    def __init__(self) -> None:
        super().__init__(0.0)

    def check(self, value: torch.Tensor) -> torch.Tensor:
        return (value > 0) & torch.isfinite(value)

    def __repr__(self) -> str:
        return "FinitePositive()"


finite_real = _FiniteReal()
finite_positive = _FinitePositive()
for _registry in (biject_to, transform_to):
    _registry.register(_FiniteReal, _registry._registry[constraints._Real])
    _registry.register(_FinitePositive, _registry._registry[constraints._GreaterThan])

#: the wrappers ``to_event``, ``expand`` and ``mask`` put around a distribution: a
#: site's prior is what they wrap (a transformed distribution is not its base)
WRAPPERS = (torch.distributions.Independent, ExpandedDistribution, MaskedDistribution)


def base_distribution(fn: Any) -> Any:
    """The distribution inside any :data:`WRAPPERS` (the one place the Pyro adapter
    unwraps a site's distribution)."""
    while isinstance(fn, WRAPPERS):
        fn = fn.base_dist
    return fn


def broadcast_params(*values: Any) -> tuple[torch.Tensor, ...]:
    """Tensors of a common dtype (float: the default dtype unless a tensor says
    otherwise) broadcast to a common shape."""
    tensors = [v for v in values if isinstance(v, torch.Tensor)]
    dtype = tensors[0].dtype if tensors else torch.get_default_dtype()
    if not dtype.is_floating_point:
        dtype = torch.get_default_dtype()
    device = tensors[0].device if tensors else None
    out = [torch.as_tensor(v, dtype=dtype, device=device) for v in values]
    return tuple(torch.broadcast_tensors(*out))


def uniform_open(shape: Any, dtype: torch.dtype, device: Any) -> torch.Tensor:
    """Uniform draws in (0, 1): never exactly 0, so inverse cdfs stay finite."""
    u = torch.rand(shape, dtype=dtype, device=device)
    return u.clamp_(min=torch.finfo(dtype).tiny)
