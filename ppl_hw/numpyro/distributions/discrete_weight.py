"""``DiscreteWeight``: a categorical over a fixed grid of weight values (NumPyro)."""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax, random
from numpyro.distributions import constraints
from numpyro.distributions.batch_util import vmap_over
from numpyro.distributions.kl import kl_divergence
from numpyro.distributions.util import validate_sample
from numpyro.util import not_jax_tracer

from ...core import discrete as dc
from ...core.checks import describe_invalid
from ._base import HwDistribution

__all__ = ["DiscreteWeight", "FiniteSet"]


@functools.partial(jax.jit, static_argnums=2)
def _log_prob(value: Any, logits: Any, values: tuple[float, ...]) -> Any:
    log_q = logits - jax.nn.logsumexp(logits, axis=-1, keepdims=True)
    grid = jnp.asarray(values, dtype=log_q.dtype)
    return dc.discrete_log_prob(value, log_q, grid, xp=jnp)


@functools.partial(jax.jit, static_argnums=(2, 3))
def _sample(
    key: Any, logits: Any, shape: tuple[int, ...], values: tuple[float, ...]
) -> Any:
    idx = random.categorical(key, logits, shape=shape)
    return jnp.asarray(values, dtype=logits.dtype)[idx]


class FiniteSet(constraints.Constraint):
    """The constraint "``value`` is one of ``values``" (element-wise, discrete)."""

    is_discrete = True
    event_dim = 0

    def __init__(self, values: tuple[float, ...]):
        self.values = tuple(float(v) for v in values)

    def __call__(self, x: Any) -> Any:
        xp = jnp if isinstance(x, jax.Array) else np
        grid = xp.asarray(self.values, dtype=getattr(x, "dtype", None) or float)
        return xp.any(xp.asarray(x)[..., None] == grid, axis=-1)

    def feasible_like(self, prototype: Any) -> Any:
        return jnp.full(
            jnp.shape(prototype), self.values[0], dtype=jnp.result_type(float)
        )

    def tree_flatten(self):
        return (), ((), {"values": self.values})

    def eq(self, other: object, static: bool = False) -> bool:
        return isinstance(other, FiniteSet) and other.values == self.values

    def __repr__(self) -> str:
        return f"FiniteSet({list(self.values)})"


class DiscreteWeight(HwDistribution):
    r"""A weight that takes one value of a fixed grid, with its own probabilities.

    Independent categorical per weight over the sorted, distinct real grid
    ``values`` (Roth & Pernkopf; e.g. ternary ``(-1, 0, 1)``). The batch shape is that
    of ``logits`` (or ``probs``) without its last axis, which indexes the grid.

    .. math::

        q(w = v_k) = \mathrm{softmax}(\ell)_k,\quad
        \mathbb E[w] = \sum_k q_k v_k,\quad
        \mathrm{Var}[w] = \sum_k q_k (v_k - \mathbb E[w])^2 .

    ``log_prob`` of a value off the grid is ``-inf`` (an error under validation);
    ``enumerate_support`` gives the grid; ``mode`` is the most probable value; the
    KL divergence between two ``DiscreteWeight`` on the same grid is registered with
    NumPyro's ``kl_divergence``.

    :param values: the grid: at least 2 finite values, strictly increasing.
    :param logits: unnormalised log-probabilities, shape ``batch_shape + (K,)``.
    :param probs: probabilities (each row sums to 1), instead of ``logits``.

    **Example** — the paper's ternary prior with :math:`p(0) = p_0`::

        p0 = 0.5
        q = (1 - p0) / 2
        prior = DiscreteWeight((-1.0, 0.0, 1.0), probs=jnp.array([q, p0, q]))
    """

    # log-probabilities: -inf is allowed (a zero probability), NaN and +inf are not
    arg_constraints = {
        "logits": constraints.independent(constraints.less_than(math.inf), 1)
    }
    has_enumerate_support = True
    pytree_data_fields = ("logits",)
    pytree_aux_fields = ("_values",)

    def __init__(
        self,
        values: Any = (-1.0, 0.0, 1.0),
        logits: Any = None,
        probs: Any = None,
        *,
        validate_args: bool | None = None,
    ):
        self._values = dc.check_value_grid(values)
        k = len(self._values)
        if (logits is None) == (probs is None):
            raise ValueError("DiscreteWeight needs exactly one of logits or probs")
        name, arr = ("logits", logits) if probs is None else ("probs", probs)
        if jnp.ndim(arr) < 1 or jnp.shape(arr)[-1] != k:
            raise ValueError(
                f"{name} must have last axis of size {k} (one entry per grid value), "
                f"got shape {jnp.shape(arr)}"
            )
        # Concrete arguments stay concrete also while a jit traces the constructor
        # (jnp.asarray of a NumPy array is staged there), so that they are validated
        # as NumPyro validates its own distributions' parameters.
        with jax.ensure_compile_time_eval():
            if probs is not None:
                probs = jnp.asarray(probs)
                validate = (
                    self._validate_args if validate_args is None else validate_args
                )
                if validate and not_jax_tracer(probs):
                    ok = constraints.simplex(probs)
                    if not np.all(ok):
                        rows = describe_invalid(probs, ok)
                        raise ValueError(
                            "DiscreteWeight: probs must be non-negative and sum to 1 "
                            f"along the last axis, got rows {rows}"
                        )
                logits = jnp.log(probs)
            self.logits = jnp.asarray(logits)
        super().__init__(
            batch_shape=jnp.shape(logits)[:-1], validate_args=validate_args
        )

    @classmethod
    def infer_shapes(
        cls, values: Any = (3,), logits: Any = None, probs: Any = None
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        shape = logits if logits is not None else probs
        return tuple(shape)[:-1], ()

    @property
    def values(self) -> jnp.ndarray:
        """The grid of values, as an array."""
        return jnp.asarray(self._values, dtype=self.logits.dtype)

    @property
    def log_probs(self) -> jnp.ndarray:
        """Normalised log-probabilities of the grid values, ``batch_shape + (K,)``."""
        return self.logits - jax.nn.logsumexp(self.logits, axis=-1, keepdims=True)

    @property
    def probs(self) -> jnp.ndarray:
        return jnp.exp(self.log_probs)

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> FiniteSet:
        return FiniteSet(self._values)

    def sample(self, key: Any, sample_shape: tuple[int, ...] = ()) -> jnp.ndarray:
        return _sample(
            key, self.logits, tuple(sample_shape) + self.batch_shape, self._values
        )

    @validate_sample
    def log_prob(self, value: Any) -> jnp.ndarray:
        return _log_prob(
            jnp.asarray(value, dtype=self.logits.dtype), self.logits, self._values
        )

    def enumerate_support(self, expand: bool = True) -> jnp.ndarray:
        k = len(self._values)
        grid = self.values.reshape((k,) + (1,) * len(self.batch_shape))
        return jnp.broadcast_to(grid, (k, *self.batch_shape)) if expand else grid

    @property
    def mean(self) -> jnp.ndarray:
        return dc.discrete_mean(self.log_probs, self.values, xp=jnp)

    @property
    def variance(self) -> jnp.ndarray:
        return dc.discrete_variance(self.log_probs, self.values, xp=jnp)

    @property
    def mode(self) -> jnp.ndarray:
        return self.values[jnp.argmax(self.logits, axis=-1)]

    def entropy(self) -> jnp.ndarray:
        return dc.discrete_entropy(self.log_probs, xp=jnp)


@vmap_over.register
def _vmap_over_discrete_weight(dist: DiscreteWeight, logits=None, probs=None):
    axes = DiscreteWeight.__new__(DiscreteWeight)
    axes.__dict__.update(dist.__dict__)
    axes.logits = logits if logits is not None else probs
    return axes


@kl_divergence.register(DiscreteWeight, DiscreteWeight)
def _kl_discrete_weight(p: DiscreteWeight, q: DiscreteWeight) -> jnp.ndarray:
    if p._values != q._values:
        raise ValueError(
            f"KL between DiscreteWeight needs the same grid, got {list(p._values)} "
            f"and {list(q._values)}"
        )
    kl = dc.discrete_kl(p.log_probs, q.log_probs, xp=jnp)
    return jnp.broadcast_to(kl, lax.broadcast_shapes(p.batch_shape, q.batch_shape))
