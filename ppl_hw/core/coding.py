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
from typing import Any

import numpy as np

__all__ = [
    "GENERATOR_VERSION",
    "Blocks",
    "candidate_normals",
    "decode_blocks",
    "encode_blocks",
    "make_blocks",
    "pack_bits",
    "philox_raw",
    "unpack_bits",
]

GENERATOR_VERSION = 1
"""Version of the candidate generator (recorded in compressed files):

1. Candidates of block ``b`` come from Philox-4x64 keyed by ``2 * seed``: the block's
   ``K * n`` words start at word ``2**24 * start_b`` (``start_b`` the block's first
   position in the shuffled order, ``n`` its size; 2**24 is the largest ``K``, so
   the blocks' streams never overlap); word ``j`` becomes
   ``u = ((word >> 11) + 0.5) / 2**53`` in (0, 1) and ``z = Φ⁻¹(u)``
   (``scipy.special.ndtri``, float64); candidate ``k`` of the block is
   ``float32(ν + ρ z[k*n:(k+1)*n])`` with ν, ρ the float32 coding loc and scale.
   ``selection="sample"`` draws its index with Gumbel noise from Philox keyed by
   ``2 * seed + 1`` (``K`` words for block ``b`` at word ``2**24 * b``)."""


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


# -- relative-entropy coding (MIRACLE) -----------------------------------------------


def _uniform(words: np.ndarray) -> np.ndarray:
    return ((words >> np.uint64(11)).astype(np.float64) + 0.5) * 2.0**-53


def candidate_normals(
    seed: int, start: int, n: int, k: int, first: int = 0
) -> np.ndarray:
    """Standard normals of candidates ``first .. first + k - 1`` of a block of ``n``
    weights starting at shuffled position ``start`` (generator version 1), float64
    of shape ``(k, n)``."""
    from scipy.special import ndtri

    offset = _K_MAX * int(start) + int(first) * int(n)
    words = philox_raw(2 * int(seed), int(k) * int(n), offset=offset)
    return ndtri(_uniform(words)).reshape(int(k), int(n))


_K_MAX = 1 << 24  # the largest K (bits_per_block <= 24): fixes each block's stream


def _gaussian_logpdf_ratio(w, mu, sigma, nu, rho):
    """log N(w; mu, sigma) - log N(w; nu, rho), summed over the last axis, as the
    quadratic ``w² · a + w · b + c`` (two matrix-vector products over the
    candidates instead of a dozen elementwise passes)."""
    p, r = 1.0 / (sigma * sigma), 1.0 / (rho * rho)
    a = 0.5 * (r - p)
    b = mu * p - nu * r
    c = np.sum(0.5 * (nu * nu * r - mu * mu * p) + np.log(rho / sigma))
    return (w * w) @ a + w @ b + c


def encode_blocks(
    mu: np.ndarray,
    sigma: np.ndarray,
    nu: np.ndarray,
    rho: np.ndarray,
    blocks: Blocks,
    bits_per_block: int,
    seed: int,
    *,
    selection: str = "sample",
    finetune: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """MIRACLE's encoder on flat weights: for each block, ``K = 2**bits_per_block``
    candidates from the coding distribution ``N(nu, rho)``, importance weights
    ``q/p`` under ``N(mu, sigma)``, the index drawn in proportion (``"sample"``) or
    the largest (``"argmax"``).

    :param mu, sigma: the posterior's flat means and scales (float64 or float32).
    :param nu, rho: the coding distribution's flat locs and scales (float32 values).
    :param finetune: ``None`` or ``callback(b, coded) -> (mu, sigma) | None`` called
        before block ``b`` is coded with the weights coded so far (``{flat index:
        value}`` as a boolean mask and values): it may return new flat ``mu``,
        ``sigma`` for the blocks not yet coded.
    :returns: ``(indices uint32 of shape (num_blocks,), flat float32 weights)``.
    """
    if selection not in ("sample", "argmax"):
        raise ValueError(f"selection must be 'sample' or 'argmax', got {selection!r}")
    k = 1 << int(bits_per_block)
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    nu64 = np.asarray(nu, np.float32).astype(np.float64)
    rho64 = np.asarray(rho, np.float32).astype(np.float64)
    indices = np.zeros(blocks.num_blocks, np.uint32)
    weights = np.zeros(blocks.num_weights, np.float32)
    coded = np.zeros(blocks.num_weights, bool)
    for b in range(blocks.num_blocks):
        if finetune is not None and b > 0:
            new = finetune(b, coded.copy(), weights.copy())
            if new is not None:
                mu, sigma = (np.asarray(a, np.float64) for a in new)
        idx = blocks.members(b)
        start = blocks._bounds(b)[0]
        z = candidate_normals(seed, start, len(idx), k)
        w = (nu64[idx] + rho64[idx] * z).astype(np.float32)
        logw = _gaussian_logpdf_ratio(
            w.astype(np.float64), mu[idx], sigma[idx], nu64[idx], rho64[idx]
        )
        if selection == "argmax":
            j = int(np.argmax(logw))
        else:
            u = _uniform(philox_raw(2 * int(seed) + 1, k, offset=_K_MAX * b))
            j = int(np.argmax(logw - np.log(-np.log(u))))  # Gumbel-max
        indices[b] = j
        weights[idx] = w[j]
        coded[idx] = True
    return indices, weights


def decode_blocks(
    indices: np.ndarray, nu: np.ndarray, rho: np.ndarray, blocks: Blocks, seed: int
) -> np.ndarray:
    """The flat float32 weights of the candidates ``indices`` (one per block)."""
    nu64 = np.asarray(nu, np.float32).astype(np.float64)
    rho64 = np.asarray(rho, np.float32).astype(np.float64)
    weights = np.zeros(blocks.num_weights, np.float32)
    for b in range(blocks.num_blocks):
        idx = blocks.members(b)
        start = blocks._bounds(b)[0]
        z = candidate_normals(seed, start, len(idx), 1, first=int(indices[b]))[0]
        weights[idx] = (nu64[idx] + rho64[idx] * z).astype(np.float32)
    return weights


def pack_bits(values: np.ndarray, bits: int) -> bytes:
    """Unsigned integers ``< 2**bits`` packed big-endian at exactly ``bits`` bits each
    (the last byte zero-padded)."""
    v = np.asarray(values, np.uint64)
    if np.any(v >> np.uint64(bits)):
        raise ValueError(f"values must be < 2**{bits}")
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    bitmat = ((v[:, None] >> shifts) & np.uint64(1)).astype(np.uint8)
    return np.packbits(bitmat.reshape(-1)).tobytes()


def unpack_bits(data: bytes, count: int, bits: int) -> np.ndarray:
    """The inverse of :func:`pack_bits` for ``count`` values."""
    need = (count * bits + 7) // 8
    if len(data) != need:
        raise ValueError(
            f"expected {need} bytes for {count} values of {bits} bits, got {len(data)}"
        )
    flat = np.unpackbits(np.frombuffer(data, np.uint8))[: count * bits]
    bitmat = flat.reshape(count, bits).astype(np.uint64)
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    return (bitmat << shifts).sum(axis=1).astype(np.uint32)
