r"""Blocks of weights for relative-entropy coding (MIRACLE, Havasi et al. 2019).

All weights of a network, in the order of ``sizes`` (site by site, each flattened in
C order), are shuffled by a seeded permutation and cut into ``num_blocks`` blocks of
nearly equal size; every block then carries a KL budget of ``bits_per_block``
bits (:math:`b \ln 2` nats), so a block mixes weights of every layer. The permutation
is reproducible across processes, platforms and NumPy versions: it sorts raw 64-bit
words of the Philox-4x64 counter-based bit generator (its output is fixed by the
algorithm, unlike ``Generator.permutation``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["Blocks", "make_blocks", "philox_raw"]


def philox_raw(seed: int, n: int, offset: int = 0) -> np.ndarray:
    """``n`` raw uint64 words of Philox-4x64 keyed by ``seed`` (the stream position
    ``offset`` words in): a stable, counter-based stream."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    bitgen = np.random.Philox(key=int(seed))
    if offset:
        bitgen.advance(int(offset) // 4)
        skip = int(offset) % 4
        if skip:
            bitgen.random_raw(skip)
    return np.asarray(bitgen.random_raw(int(n)), dtype=np.uint64)


@dataclass(frozen=True, eq=False)
class Blocks:
    """A seeded assignment of ``sum(sizes)`` weights to ``num_blocks`` blocks.

    :ivar sizes: number of weights per site, in order.
    :ivar bits_per_block: KL budget of each block in bits.
    :ivar seed: the permutation's seed.
    :ivar order: the permutation: ``order[j]`` is the flat weight index at position
        ``j`` of the shuffled sequence.
    :ivar block_of: the block of each flat weight index, shape ``(sum(sizes),)``.
    :ivar num_blocks: number of blocks.
    """

    sizes: tuple[int, ...]
    bits_per_block: float
    seed: int
    order: np.ndarray = field(repr=False)
    block_of: np.ndarray = field(repr=False)
    num_blocks: int

    @property
    def num_weights(self) -> int:
        return int(sum(self.sizes))

    @property
    def budget_nats(self) -> float:
        """KL budget of one block, in nats."""
        return self.bits_per_block * math.log(2.0)

    def members(self, b: int) -> np.ndarray:
        """Flat weight indices in block ``b``, in shuffled order."""
        lo, hi = self._bounds(b)
        return self.order[lo:hi]

    def _bounds(self, b: int) -> tuple[int, int]:
        d, k = self.num_weights, self.num_blocks
        return (b * d) // k, ((b + 1) * d) // k


def make_blocks(
    sizes: Sequence[int],
    bits_per_block: float,
    seed: int,
    *,
    total_bits: float | None = None,
    num_blocks: int | None = None,
) -> Blocks:
    """Shuffle all weights into blocks of about ``bits_per_block`` bits of KL each.

    :param sizes: number of weights of each site.
    :param bits_per_block: KL budget per block (bits), ``> 0``.
    :param seed: the permutation's seed (int ``>= 0``).
    :param total_bits: the network's total KL budget (bits): the number of blocks is
        ``ceil(total_bits / bits_per_block)``.
    :param num_blocks: or the number of blocks directly (exactly one of the two).
    """
    sizes_t = tuple(int(s) for s in sizes)
    if not sizes_t or any(s < 1 for s in sizes_t):
        raise ValueError(f"sizes must be positive weight counts, got {list(sizes)!r}")
    if not (isinstance(bits_per_block, int | float) and bits_per_block > 0):
        raise ValueError(f"bits_per_block must be > 0, got {bits_per_block!r}")
    if (total_bits is None) == (num_blocks is None):
        raise ValueError("make_blocks needs exactly one of total_bits or num_blocks")
    d = sum(sizes_t)
    if num_blocks is None:
        if not (isinstance(total_bits, int | float) and total_bits > 0):
            raise ValueError(f"total_bits must be > 0, got {total_bits!r}")
        num_blocks = math.ceil(total_bits / bits_per_block)
    if isinstance(num_blocks, bool) or not isinstance(num_blocks, int | np.integer):
        raise TypeError(f"num_blocks must be an int, got {num_blocks!r}")
    if not 1 <= num_blocks <= d:
        raise ValueError(
            f"num_blocks must be in [1, {d}] (one weight per block), got {num_blocks}"
        )
    order = np.argsort(philox_raw(seed, d), kind="stable").astype(np.int64)
    block_of = np.empty(d, dtype=np.int64)
    for b in range(num_blocks):
        block_of[order[(b * d) // num_blocks : ((b + 1) * d) // num_blocks]] = b
    return Blocks(
        sizes=sizes_t,
        bits_per_block=float(bits_per_block),
        seed=int(seed),
        order=order,
        block_of=block_of,
        num_blocks=int(num_blocks),
    )
