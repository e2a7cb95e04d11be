"""Shared NumPyro plumbing: argument validation that names the value it got."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints
from numpyro.distributions.distribution import (
    Distribution,
    ExpandedDistribution,
    Independent,
    MaskedDistribution,
)
from numpyro.distributions.transforms import biject_to
from numpyro.util import not_jax_tracer

from ...core.checks import describe_invalid
from .._backend import BACKEND

__all__ = [
    "BACKEND",
    "WRAPPERS",
    "HwDistribution",
    "base_distribution",
    "finite_positive",
]


class _FinitePositive(constraints._GreaterThan):
    """``0 < x < inf``: a scale that can mean something (NumPyro's ``positive``
    admits ``inf``, with which a distribution samples ``±inf``). Unconstrained by
    ``exp``, like ``positive``."""

    def __init__(self) -> None:
        super().__init__(0.0)

    def __call__(self, x: Any) -> Any:
        return (x > 0) & jnp.isfinite(x)

    def __repr__(self) -> str:
        return "FinitePositive()"

    def tree_flatten(self) -> tuple:
        return (), ((), {})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _FinitePositive)

    def __hash__(self) -> int:
        return hash(_FinitePositive)


finite_positive = _FinitePositive()
biject_to.register(_FinitePositive, biject_to._registry[constraints._GreaterThan])

#: the wrappers ``to_event``, ``expand`` and ``mask`` put around a distribution: a
#: site's prior is what they wrap (a transformed distribution is not its base)
WRAPPERS = (Independent, ExpandedDistribution, MaskedDistribution)


def base_distribution(fn: Distribution) -> Distribution:
    """The distribution inside any :data:`WRAPPERS` (the one place the NumPyro
    adapter unwraps a site's distribution)."""
    while isinstance(fn, WRAPPERS):
        fn = fn.base_dist
    return fn


class HwDistribution(Distribution):
    """Base of ppl_hw's NumPyro distributions.

    :meth:`validate_args` checks every parameter against ``arg_constraints`` (as
    NumPyro does) but its ``ValueError`` names the parameter, the constraint and the
    offending values; :meth:`_validate_relations` adds checks between parameters.
    """

    def validate_args(self, strict: bool = True) -> None:
        with jax.ensure_compile_time_eval():
            for param, value in self.get_args().items():
                constraint = self.arg_constraints[param]
                if constraints.is_dependent(constraint):
                    continue
                is_valid = constraint(value)
                if not_jax_tracer(is_valid):
                    if not np.all(is_valid):
                        raise ValueError(
                            f"{type(self).__name__}: {param} must satisfy "
                            f"{constraint}, "
                            f"got {describe_invalid(value, is_valid)}"
                        )
                elif strict:
                    raise RuntimeError("Cannot validate arguments inside jitted code.")
            self._validate_relations()

    def _validate_relations(self) -> None:
        """Checks between parameters (subclasses); skipped on traced values."""
