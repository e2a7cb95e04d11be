"""Shared NumPyro plumbing: argument validation that names the value it got."""

from __future__ import annotations

import jax
import numpy as np
from numpyro.distributions import constraints
from numpyro.distributions.distribution import (
    Distribution,
    ExpandedDistribution,
    Independent,
    MaskedDistribution,
)
from numpyro.util import not_jax_tracer

from ...core.checks import describe_invalid
from .._backend import BACKEND

__all__ = ["BACKEND", "WRAPPERS", "HwDistribution", "base_distribution"]

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
