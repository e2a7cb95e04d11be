"""``DiscreteWeight``: a categorical over a fixed real grid of weight values (Pyro)."""

from __future__ import annotations

import math
from typing import Any

import torch
from pyro.distributions import TorchDistribution, constraints
from torch.distributions import register_kl

from ...core import discrete as dc
from ...core.checks import describe_invalid
from ._base import BACKEND

__all__ = ["DiscreteWeight", "FiniteSet"]

_xp = BACKEND.xp


class FiniteSet(constraints.Constraint):
    """The constraint "``value`` is one of ``values``" (element-wise, discrete)."""

    is_discrete = True
    event_dim = 0

    def __init__(self, values: tuple[float, ...]):
        self.values = tuple(float(v) for v in values)
        super().__init__()

    def check(self, value: torch.Tensor) -> torch.Tensor:
        grid = torch.as_tensor(self.values, dtype=value.dtype, device=value.device)
        return (value.unsqueeze(-1) == grid).any(-1)

    def __repr__(self) -> str:
        return f"FiniteSet({list(self.values)})"


class DiscreteWeight(TorchDistribution):
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
    ``torch.distributions.register_kl``, and ``expand`` keeps the class so it applies
    to expanded guides too.

    :param values: the grid: at least 2 finite values, strictly increasing.
    :param logits: unnormalised log-probabilities, shape ``batch_shape + (K,)``.
    :param probs: probabilities (each row sums to 1), instead of ``logits``.

    **Example** — the paper's ternary prior with :math:`p(0) = p_0`::

        p0 = 0.5
        q = (1 - p0) / 2
        prior = DiscreteWeight((-1.0, 0.0, 1.0), probs=torch.tensor([q, p0, q]))
    """

    # log-probabilities: -inf is allowed (a zero probability), NaN and +inf are not
    arg_constraints = {
        "logits": constraints.independent(constraints.less_than(math.inf), 1)
    }
    has_enumerate_support = True

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
        if not isinstance(arr, torch.Tensor):
            arr = torch.as_tensor(arr, dtype=torch.get_default_dtype())
        if arr.dim() < 1 or arr.shape[-1] != k:
            raise ValueError(
                f"{name} must have last axis of size {k} (one entry per grid value), "
                f"got shape {tuple(arr.shape)}"
            )
        validate = self._validate_args if validate_args is None else validate_args
        if probs is not None:
            if validate:
                ok = constraints.simplex.check(arr)
                if not bool(ok.all()):
                    raise ValueError(
                        "DiscreteWeight: probs must be non-negative and sum to 1 along "
                        f"the last axis, got rows {describe_invalid(arr.detach(), ok)}"
                    )
            arr = arr.log()
        self.logits = arr
        super().__init__(
            self.logits.shape[:-1], torch.Size(), validate_args=validate_args
        )

    @classmethod
    def infer_shapes(
        cls, values: Any = (3,), logits: Any = None, probs: Any = None
    ) -> tuple[torch.Size, torch.Size]:
        """The batch shape is that of ``logits`` (or ``probs``) without its last axis
        (the grid ``values`` is not batched)."""
        shape = logits if logits is not None else probs
        return torch.Size(tuple(shape)[:-1]), torch.Size()

    @property
    def values(self) -> torch.Tensor:
        """The grid of values, as a tensor."""
        return torch.as_tensor(
            self._values, dtype=self.logits.dtype, device=self.logits.device
        )

    @property
    def log_probs(self) -> torch.Tensor:
        """Normalised log-probabilities of the grid values, ``batch_shape + (K,)``."""
        return self.logits - self.logits.logsumexp(-1, keepdim=True)

    @property
    def probs(self) -> torch.Tensor:
        return self.log_probs.exp()

    @constraints.dependent_property(is_discrete=True, event_dim=0)
    def support(self) -> FiniteSet:
        return FiniteSet(self._values)

    def expand(self, batch_shape: Any, _instance: Any = None) -> DiscreteWeight:
        new = self._get_checked_instance(DiscreteWeight, _instance)
        batch_shape = torch.Size(batch_shape)
        new._values = self._values
        new.logits = self.logits.expand((*batch_shape, len(self._values)))
        super(DiscreteWeight, new).__init__(
            batch_shape, torch.Size(), validate_args=False
        )
        new._validate_args = self._validate_args
        return new

    def sample(self, sample_shape: Any = torch.Size()) -> torch.Tensor:
        shape = self._extended_shape(torch.Size(sample_shape))
        with torch.no_grad():
            probs = self.probs.expand((*shape, len(self._values)))
            idx = torch.multinomial(probs.reshape(-1, len(self._values)), 1, True)
            return self.values[idx.reshape(shape)]

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        if self._validate_args:
            self._validate_sample(value)
        return dc.discrete_log_prob(value, self.log_probs, self.values, xp=_xp)

    def enumerate_support(self, expand: bool = True) -> torch.Tensor:
        k = len(self._values)
        grid = self.values.reshape((k,) + (1,) * len(self.batch_shape))
        return grid.expand((k, *self.batch_shape)) if expand else grid

    @property
    def mean(self) -> torch.Tensor:
        return dc.discrete_mean(self.log_probs, self.values, xp=_xp)

    @property
    def variance(self) -> torch.Tensor:
        return dc.discrete_variance(self.log_probs, self.values, xp=_xp)

    @property
    def mode(self) -> torch.Tensor:
        return self.values[self.logits.argmax(-1)]

    def entropy(self) -> torch.Tensor:
        return dc.discrete_entropy(self.log_probs, xp=_xp)


@register_kl(DiscreteWeight, DiscreteWeight)
def _kl_discrete_weight(p: DiscreteWeight, q: DiscreteWeight) -> torch.Tensor:
    if p._values != q._values:
        raise ValueError(
            f"KL between DiscreteWeight needs the same grid, got {list(p._values)} "
            f"and {list(q._values)}"
        )
    return dc.discrete_kl(p.log_probs, q.log_probs, xp=_xp)
