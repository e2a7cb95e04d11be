"""The Mean-Var baseline's bookkeeping shared by both backends: blocks of the guide's
weights and the annealing rule of the per-block KL penalties (MIRACLE, Havasi et al.
2019)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..core.checks import check_int, check_number
from ..core.coding import Blocks, make_blocks
from . import autoguide as gc

__all__ = ["MeanVarSettings", "anneal"]


class MeanVarSettings:
    """Validated settings of ``MeanVarAnnealing``."""

    def __init__(
        self,
        kl_budget_bits: Any,
        kl_budget_nats: Any,
        bits_per_block: Any,
        epsilon: Any,
        beta_init: Any,
        seed: Any,
    ):
        self.budget = gc.budget_nats(kl_budget_bits, kl_budget_nats)
        self.bits_per_block = check_number(
            "bits_per_block", bits_per_block, low=0, open_low=True
        )
        # epsilon: the penalties grow by (1 + epsilon) per step; above 1 they double
        # every step, which no schedule means (MIRACLE uses 1e-4)
        self.epsilon = check_number("epsilon", epsilon, low=0, open_low=True, high=1)
        self.beta_init = check_number("beta_init", beta_init, low=0, open_low=True)
        self.seed = check_int("seed", seed, low=0)

    def blocks(self, sizes: list[int]) -> Blocks:
        total_bits = self.budget / math.log(2.0)
        d = sum(sizes)
        num = min(math.ceil(total_bits / self.bits_per_block), d)
        return make_blocks(sizes, self.bits_per_block, self.seed, num_blocks=num)

    def block_budget(self, blocks: Blocks) -> float:
        """Each block's KL target (nats): the total budget shared equally."""
        return self.budget / blocks.num_blocks


def anneal(beta: Any, block_kl: Any, target: float, epsilon: float, *, xp: Any) -> Any:
    r"""MIRACLE's rule: :math:`\beta_b \leftarrow \beta_b (1+\epsilon)` where the
    block's KL is above its target, :math:`\beta_b/(1+\epsilon)` where below."""
    return xp.where(block_kl > target, beta * (1.0 + epsilon), beta / (1.0 + epsilon))


def site_block_ids(blocks: Blocks, sizes: list[int]) -> list[np.ndarray]:
    """The block of each weight, split per site (flat, C order)."""
    out, start = [], 0
    for n in sizes:
        out.append(blocks.block_of[start : start + n])
        start += n
    return out
