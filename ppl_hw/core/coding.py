r"""Blocks of weights for relative-entropy coding (MIRACLE, Havasi et al. 2019).

All weights of a network, in the order of ``sizes`` (site by site, each flattened in
C order), are shuffled by a seeded permutation and cut into ``num_blocks`` blocks of
nearly equal size; every block then carries a KL budget of ``bits_per_block``
bits (:math:`b \ln 2` nats), so a block mixes weights of every layer. The permutation
is reproducible across processes, platforms and NumPy versions: it sorts raw 64-bit
words of the Philox-4x64 counter-based bit generator (its output is fixed by the
algorithm, unlike ``Generator.permutation``).

The coded file these blocks and streams make (byte layout, CRC-32 variant, Philox key
and counter conventions, block boundaries, the candidates' arithmetic) is specified in
``docs/coding.md``, "The file format"; ``tests/test_coded_format_reader.py`` decodes
it from that specification alone.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "GENERATOR_VERSION",
    "Blocks",
    "RangeTask",
    "candidate_normals",
    "decode_blocks",
    "encode_blocks",
    "encode_range",
    "make_blocks",
    "pack_bits",
    "philox_raw",
    "range_tasks",
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
   ``2 * seed + 1`` (``K`` words for block ``b`` at word ``2**24 * b``).

   "Philox-4x64 keyed by ``k``" is NumPy's ``np.random.Philox(key=k)``, 10 rounds:
   key words ``(k mod 2**64, k >> 64)``; word ``j`` of the stream is lane ``j % 4`` of
   the output for the 256-bit counter ``j // 4 + 1`` (NumPy increments the counter
   before it generates each group of four words, so the stream starts at counter 1).
   ``Φ⁻¹`` is Cephes' ``ndtri`` as in SciPy. The candidate's arithmetic is
   ``float32(float64(ν) + float64(ρ) * z)``: the product and the sum each rounded to
   float64 (no fused multiply-add), then rounded to float32."""


def philox_raw(seed: int, n: int, offset: int = 0) -> np.ndarray:
    """``n`` raw uint64 words of Philox-4x64 keyed by ``seed`` (the stream position
    ``offset`` words in): a stable, counter-based stream. Word ``j`` is lane
    ``j % 4`` of the Philox output for counter ``j // 4 + 1`` (NumPy's convention,
    :data:`GENERATOR_VERSION`)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    return np.asarray(_philox_at(seed, offset).random_raw(int(n)), dtype=np.uint64)


def _philox_at(seed: int, offset: int) -> np.random.Philox:
    """Philox-4x64 keyed by ``seed``, positioned ``offset`` words into its stream
    (successive ``random_raw`` calls continue the stream)."""
    bitgen = np.random.Philox(key=int(seed))  # counter 0, no buffered words
    # advance(a) adds a to the counter, i.e. skips a groups of four words; the
    # remaining offset % 4 words of the next group are drawn and dropped
    if offset:
        bitgen.advance(int(offset) // 4)
        skip = int(offset) % 4
        if skip:
            bitgen.random_raw(skip)
    return bitgen


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
        """Block ``b`` holds the shuffled positions ``⌊b d / k⌋ .. ⌊(b + 1) d / k⌋ - 1``
        (exact integer arithmetic; block sizes differ by at most one)."""
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
    # the flat indices sorted by their word of the stream keyed by ``seed`` (as
    # uint64); equal words keep the lower flat index first (a stable sort)
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

# -- the encoder's fast scorer ---------------------------------------------------------
#
# The encoder scores every candidate with float32 normals from a table (below) and a
# float32 quadratic form, then rescores exactly (scipy's float64 ``ndtri``, the
# float32 candidates, the float64 importance weights: the decoder's and the first
# encoder's arithmetic) every candidate whose fast score is within twice a proven
# error bound of the best fast score (``_fast_form``: the bound holds for any float32
# summation order, FMA or not). The exact argmax is always among them, so the chosen
# index is the exact scorer's (bit for bit the same file) on every machine: the
# float32 arithmetic only decides which few (typically one) candidates are rescored.
# Exact ties (two float64 scores equal) go to the lower index, as ``np.argmax``.

_CELL_BITS = 16
_LO_CELL, _HI_CELL = 89, 65446  # cells interpolated: u in [89, 65447) / 2**16, |z| < 3
_TABLE_ERROR = 3e-6
"""Bound on |table normal - ndtri(u)| (measured 2.36e-6 over every cell: interpolation
error ~1.2e-6 after centring, float32 rounding of |z| < 3, the 16 bits of the cell
position used; ``tests/core/test_coding_speedpaths.py`` checks it against scipy).
Tail cells (|z| > 3) are exact float64 ``ndtri`` rounded to float32."""
# |ndtri(u)| < 8.3 for every u = (m + 0.5) / 2**53 (8.2924 at the ends) but the last,
# m = 2**53 - 1, where m + 0.5 rounds to 2**53, u = 1 and z = inf (generator version 1,
# odds 2**-53 a word): its score is not finite and the block is scored exactly
_Z_MAX = 8.3
_CHUNK_WORDS = 1 << 15  # candidates are generated and scored ~32 768 normals at a time
_FAST_MIN_WORDS = 1 << 13  # smaller blocks (K n normals) are scored exactly: as fast
_EPS32 = 2.0**-24  # float32 unit roundoff
_LITTLE = np.little_endian


def _normal_table() -> np.ndarray:
    """Per cell ``c`` (the top 16 bits of a word: u in ``[c, c + 1) / 2**16``) a
    float32 pair (value, slope): ``z ≈ value + slope * f`` with ``f`` the next 16 bits.
    The chord of ``ndtri`` over the cell, moved towards the curve by half the chord's
    error at the cell's middle and by half a step of ``f`` (for the bits below it,
    which are ignored); as float64 words
    (one gather fetches both). Outside the interpolated cells the value is NaN,
    which marks the tails for exact ``ndtri``."""
    global _TABLE
    if _TABLE is None:
        from scipy.special import ndtri

        c = np.arange(_LO_CELL, _HI_CELL + 1, dtype=np.float64)
        h = 2.0**-_CELL_BITS
        z0, z1, zm = ndtri(c * h), ndtri((c + 1) * h), ndtri((c + 0.5) * h)
        slope = (z1 - z0) * h
        table = np.zeros((1 << _CELL_BITS, 2), np.float32)
        table[:, 0] = np.nan
        table[_LO_CELL : _HI_CELL + 1, 0] = (
            z0 + 0.5 * slope + 0.5 * (zm - 0.5 * (z0 + z1))
        )
        table[_LO_CELL : _HI_CELL + 1, 1] = slope
        _TABLE = table.view(np.float64).reshape(-1)
    return _TABLE


_TABLE: np.ndarray | None = None


def _table_normals(words: np.ndarray) -> np.ndarray:
    """float32 standard normals of uint64 ``words`` within :data:`_TABLE_ERROR` of
    ``ndtri(_uniform(words))``: a linear interpolation in a 2**16-cell table for
    ``|z| < 3`` (99.7 % of them), exact ``ndtri`` (rounded to float32) beyond."""
    from scipy.special import ndtri

    q = words.view(np.uint16)  # the 16-bit quarters of each word
    hi, mid = (3, 2) if _LITTLE else (0, 1)
    pairs = _normal_table().take(q[hi::4]).view(np.float32)
    z = pairs[1::2] * q[mid::4]  # float32: a uint16 is exact in float32
    z += pairs[0::2]
    tail = np.flatnonzero(np.isnan(z))  # the tail cells' value is NaN
    if tail.size:
        z[tail] = ndtri(_uniform(words[tail]))
    return z


def _quadratic(mu, sigma, nu, rho):
    """``(a, b, c)`` of :func:`_gaussian_logpdf_ratio`: ``log q(w) - log p(w) =
    Σ a w² + b w + c``."""
    p, r = 1.0 / (sigma * sigma), 1.0 / (rho * rho)
    a = 0.5 * (r - p)
    b = mu * p - nu * r
    c = np.sum(0.5 * (nu * nu * r - mu * mu * p) + np.log(rho / sigma))
    return a, b, c


def _gaussian_logpdf_ratio(w, mu, sigma, nu, rho):
    """log N(w; mu, sigma) - log N(w; nu, rho), summed over the last axis, as the
    quadratic ``w² · a + w · b + c`` (two matrix-vector products over the
    candidates instead of a dozen elementwise passes)."""
    a, b, c = _quadratic(mu, sigma, nu, rho)
    with np.errstate(invalid="ignore", over="ignore"):  # z = inf: NaN, see below
        return (w * w) @ a + w @ b + c


def _fast_form(mu, sigma, nu, rho) -> tuple[np.ndarray, np.ndarray, float]:
    """The fast scorer's form and its error bound for one block.

    With ``w = ν + ρ z`` the log importance weight is ``Σ A z² + B z + const``,
    ``A = a ρ²``, ``B = (2 a ν + b) ρ``; returned as float32 ``A`` and ``B``
    and a bound ``E`` on
    ``|fast score - exact score - const|`` for any candidate:

    * the table's error ``ε_t`` in ``z`` and the exact scorer's rounding of ``w`` to
      float32 (``|δz| <= 2**-24 (|ν|/ρ + Z)``): ``δz_i <= ε_i``, and
      ``|A (z + δ)² + B (z + δ) - A z² - B z| <= (2|A| Z + |B|) ε + |A| ε²``;
    * float32 evaluation (coefficients, ``z²``, products, a sum of ``2n`` terms in
      any order, FMA or not): ``<= γ Σ |A| Z² + |B| Z`` with ``γ = (2n + 4) 2**-24``;
    * the exact scorer's float64 rounding, in ``w = ν + ρ z``:
      ``<= γ' (Σ |a| W² + |b| W + |c|)`` with ``W = |ν| + ρ Z`` and
      ``γ' = (2n + 4) 2**-53``;

    ``Z = 8.3`` bounds ``|z|``, all taken twice (margin)."""
    a, b, c = _quadratic(mu, sigma, nu, rho)
    big_a, big_b = a * rho * rho, (2.0 * a * nu + b) * rho
    eps = _TABLE_ERROR + _EPS32 * (np.abs(nu) / rho + _Z_MAX)
    abs_a, abs_b = np.abs(big_a), np.abs(big_b)
    scale = np.sum(abs_a * _Z_MAX**2 + abs_b * _Z_MAX)
    gamma = (2 * a.size + 4) * _EPS32 * 1.01
    bound = np.sum((2.0 * abs_a * _Z_MAX + abs_b) * eps + abs_a * eps * eps)
    bound += gamma * scale
    w_max = np.abs(nu) + rho * _Z_MAX
    terms64 = np.sum(np.abs(a) * w_max * w_max + np.abs(b) * w_max) + abs(c)
    bound += (2 * a.size + 4) * 2.0**-53 * 1.01 * terms64
    f32 = np.float32
    return big_a.astype(f32), big_b.astype(f32), float(2.0 * bound + 1e-9)


def _window(top: float, bound: float) -> float:
    """How far below the best fast score a candidate may be and still be the exact
    best: twice the bound, plus the float64 rounding of adding the Gumbel noise
    (``|g| < 40``) to scores near ``top``."""
    return 2.0 * bound + 2.0**-50 * (abs(top) + 40.0)


def _select_fast(seed, start, n, k, form, bound, noise, exact):
    """The exact scorer's choice among the ``k`` candidates of a block (module note
    above): fast scores chunk by chunk, exact rescoring of those within ``2 bound`` of
    the best. ``noise`` (float64 Gumbel noise, or ``None``) is added to both scores;
    ``exact(words)`` is the exact log importance weights of candidates given their
    words (shape ``(m, n)``)."""
    bitgen = _philox_at(2 * int(seed), _K_MAX * int(start))
    rows = max(1, min(k, _CHUNK_WORDS // n))
    big_a, big_b = form
    kept_at, kept_score, kept_words, best = [], [], [], -np.inf
    for lo in range(0, k, rows):
        m = min(rows, k - lo)
        words = bitgen.random_raw(m * n)
        # 1-D passes (a 2-D pass over rows of n ~ 8 is slow), then two
        # matrix-vector products; scores and thresholds compared in float64
        z = _table_normals(words)
        score = (z * z).reshape(m, n) @ big_a
        score += z.reshape(m, n) @ big_b
        score = score.astype(np.float64)
        if noise is not None:
            score += noise[lo : lo + m]
        top = float(score.max())
        if not math.isfinite(top):
            return None  # a NaN or infinite score: the caller scores exactly
        best = max(best, top)
        keep = np.flatnonzero(score >= top - _window(top, bound))
        kept_at.append(keep + lo)
        kept_score.append(score[keep])
        kept_words.append(words.reshape(m, n)[keep])
    at = np.concatenate(kept_at)
    near = np.concatenate(kept_score) >= best - _window(best, bound)
    at, words = at[near], np.concatenate(kept_words)[near]
    logw = _finite_scores(exact(words))
    if noise is not None:
        logw = logw + noise[at]
    return int(at[np.argmax(logw)])


def _finite_scores(logw: np.ndarray) -> np.ndarray:
    """Scores with NaN as ``-inf``: a candidate whose uniform word is exactly 1 has
    ``z = +inf`` (odds 2**-53 per word) and scores NaN, which ``np.argmax`` would
    pick; it can never be the sample."""
    return np.where(np.isnan(logw), -np.inf, logw)


def _gumbel(seed: int, b: int, k: int) -> np.ndarray:
    """The Gumbel noise of block ``b``'s selection (``-log(-log u)``, float64)."""
    u = _uniform(philox_raw(2 * int(seed) + 1, k, offset=_K_MAX * b))
    return -np.log(-np.log(u))


@dataclass(frozen=True, eq=False)
class RangeTask:
    """What coding the consecutive blocks ``first .. first + m - 1`` needs, and no
    more (a task of :func:`encode_range`, small and picklable: the blocks' weights are
    contiguous in the shuffled order).

    :ivar first: the first block's index ``b`` (its Gumbel noise stream).
    :ivar bounds: ``m + 1`` shuffled positions: block ``first + i`` holds positions
        ``bounds[i] .. bounds[i + 1] - 1`` (its candidate stream starts at
        ``bounds[i]``).
    :ivar mu, sigma: the posterior's means and scales at those positions (float64).
    :ivar nu, rho: the coding locs and scales at those positions (float32).
    """

    first: int
    bounds: np.ndarray = field(repr=False)
    mu: np.ndarray = field(repr=False)
    sigma: np.ndarray = field(repr=False)
    nu: np.ndarray = field(repr=False)
    rho: np.ndarray = field(repr=False)
    bits_per_block: int
    seed: int
    selection: str = "sample"
    scorer: str = "fast"

    @property
    def num_blocks(self) -> int:
        return len(self.bounds) - 1


def range_tasks(
    mu: np.ndarray,
    sigma: np.ndarray,
    nu: np.ndarray,
    rho: np.ndarray,
    blocks: Blocks,
    bits_per_block: int,
    seed: int,
    *,
    chunks: int = 1,
    selection: str = "sample",
    scorer: str = "fast",
) -> list[RangeTask]:
    """The blocks cut into ``chunks`` runs of consecutive blocks (``min(chunks,
    num_blocks)`` tasks of nearly equal numbers of blocks, in block order), each
    with only its own weights' parameters (flat arrays in site order, as
    :func:`encode_blocks` takes them)."""
    _check_coder(selection, scorer, chunks)
    nb = blocks.num_blocks
    n_tasks = min(int(chunks), nb)
    order = blocks.order
    starts = np.array([blocks._bounds(b)[0] for b in range(nb)] + [blocks.num_weights])
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    nu, rho = np.asarray(nu, np.float32), np.asarray(rho, np.float32)
    tasks = []
    for c in range(n_tasks):
        b0, b1 = (c * nb) // n_tasks, ((c + 1) * nb) // n_tasks
        idx = order[starts[b0] : starts[b1]]
        tasks.append(
            RangeTask(
                first=b0,
                bounds=starts[b0 : b1 + 1].copy(),
                mu=mu[idx],
                sigma=sigma[idx],
                nu=nu[idx],
                rho=rho[idx],
                bits_per_block=int(bits_per_block),
                seed=int(seed),
                selection=selection,
                scorer=scorer,
            )
        )
    return tasks


def encode_range(task: RangeTask) -> tuple[np.ndarray, np.ndarray]:
    """Code the blocks of one :class:`RangeTask`: ``(indices uint32 of shape
    (m,), float32 weights at the task's shuffled positions)``.

    A block's index depends only on the seed, the block's index and first shuffled
    position, ``K`` and its own weights' parameters, so any cut of the blocks into
    tasks, run anywhere in any order, gives the serial encoder's indices bit for
    bit. NumPy and SciPy only: a worker process importing this module loads
    nothing else."""
    from scipy.special import ndtri

    k = 1 << int(task.bits_per_block)
    seed, bounds = task.seed, task.bounds
    base = int(bounds[0])
    mu64 = np.asarray(task.mu, np.float64)
    sigma64 = np.asarray(task.sigma, np.float64)
    nu64 = np.asarray(task.nu, np.float32).astype(np.float64)
    rho64 = np.asarray(task.rho, np.float32).astype(np.float64)
    indices = np.zeros(task.num_blocks, np.uint32)
    weights = np.zeros(int(bounds[-1]) - base, np.float32)
    for i in range(task.num_blocks):
        b, start, stop = task.first + i, int(bounds[i]), int(bounds[i + 1])
        sl = slice(start - base, stop - base)
        n = stop - start
        gauss = mu64[sl], sigma64[sl], nu64[sl], rho64[sl]
        noise = _gumbel(seed, b, k) if task.selection == "sample" else None
        j = None
        if task.scorer == "fast" and k * n >= _FAST_MIN_WORDS:
            *form, bound = _fast_form(*gauss)
            if np.isfinite(bound) and np.all(np.isfinite(form)):

                def exact(words, g=gauss):
                    z = ndtri(_uniform(words.reshape(-1))).reshape(words.shape)
                    w = (g[2] + g[3] * z).astype(np.float32)
                    return _gaussian_logpdf_ratio(w.astype(np.float64), *g)

                j = _select_fast(seed, start, n, k, form, bound, noise, exact)
        if j is None:  # the exact scorer
            z = candidate_normals(seed, start, n, k)
            w = (gauss[2] + gauss[3] * z).astype(np.float32)
            logw = _finite_scores(_gaussian_logpdf_ratio(w.astype(np.float64), *gauss))
            j = int(np.argmax(logw if noise is None else logw + noise))
        indices[i] = j
        z = candidate_normals(seed, start, n, 1, first=j)[0]
        weights[sl] = (gauss[2] + gauss[3] * z).astype(np.float32)
    return indices, weights


def _check_coder(selection: str, scorer: str, chunks: int = 1) -> None:
    if selection not in ("sample", "argmax"):
        raise ValueError(f"selection must be 'sample' or 'argmax', got {selection!r}")
    if scorer not in ("fast", "exact"):
        raise ValueError(f"scorer must be 'fast' or 'exact', got {scorer!r}")
    if (
        isinstance(chunks, bool)
        or not isinstance(chunks, int | np.integer)
        or chunks < 1
    ):
        raise ValueError(f"chunks must be an int >= 1, got {chunks!r}")


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
    scorer: str = "fast",
    map: Callable[..., Iterable] = map,
    chunks: int = 1,
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
        ``sigma`` for the blocks not yet coded. The blocks are then coded one by
        one, in order (``map`` and ``chunks`` must be left at their defaults).
    :param scorer: ``"fast"`` (float32 table normals; exact rescoring of the few
        candidates near the best, so the same indices; blocks of fewer than
        ``2**13`` normals are scored exactly) or ``"exact"`` (every candidate in
        float64, the reference).
    :param map: how the tasks are run: ``map(encode_range, tasks)`` must return
        the results of :func:`encode_range` in the tasks' order (the builtin
        ``map``, an executor's ``map``, or anything like them).
    :param chunks: the number of tasks (:func:`range_tasks`); the result does not
        depend on it nor on ``map``.
    :returns: ``(indices uint32 of shape (num_blocks,), flat float32 weights)``.
    """
    _check_coder(selection, scorer, chunks)
    if finetune is not None and (chunks != 1 or map is not _builtin_map):
        raise ValueError(
            "finetune runs between blocks, so the blocks are coded one by one: "
            f"leave map and chunks at their defaults (got chunks={chunks!r})"
        )
    if not callable(map):
        raise TypeError(f"map must be callable, got {map!r}")
    indices = np.zeros(blocks.num_blocks, np.uint32)
    weights = np.zeros(blocks.num_weights, np.float32)
    if finetune is None:
        tasks = range_tasks(
            mu,
            sigma,
            nu,
            rho,
            blocks,
            bits_per_block,
            seed,
            chunks=chunks,
            selection=selection,
            scorer=scorer,
        )
        results = list(map(encode_range, tasks))
        if len(results) != len(tasks):
            raise ValueError(
                f"map returned {len(results)} results for {len(tasks)} tasks"
            )
        for task, (idx, w) in zip(tasks, results, strict=True):
            b0, lo, hi = task.first, int(task.bounds[0]), int(task.bounds[-1])
            indices[b0 : b0 + task.num_blocks] = idx
            weights[blocks.order[lo:hi]] = w
        return indices, weights
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    coded = np.zeros(blocks.num_weights, bool)
    for b in range(blocks.num_blocks):
        if b > 0:
            new = finetune(b, coded.copy(), weights.copy())
            if new is not None:
                mu, sigma = (np.asarray(a, np.float64) for a in new)
        # the one block, as a task: the same arithmetic as the batched path
        lo, hi = blocks._bounds(b)
        idx = blocks.order[lo:hi]
        (j,), w = encode_range(
            RangeTask(
                first=b,
                bounds=np.array([lo, hi]),
                mu=mu[idx],
                sigma=sigma[idx],
                nu=np.asarray(nu, np.float32)[idx],
                rho=np.asarray(rho, np.float32)[idx],
                bits_per_block=int(bits_per_block),
                seed=int(seed),
                selection=selection,
                scorer=scorer,
            )
        )
        indices[b] = j
        weights[idx] = w
        coded[idx] = True
    return indices, weights


_builtin_map = map


def decode_blocks(
    indices: np.ndarray, nu: np.ndarray, rho: np.ndarray, blocks: Blocks, seed: int
) -> np.ndarray:
    """The flat float32 weights of the candidates ``indices`` (one per block): the
    ``t``-th weight of block ``b`` (flat index ``blocks.members(b)[t]``) is
    ``float32(float64(nu) + float64(rho) * z)`` with ``z`` word
    ``2**24 * start_b + indices[b] * n_b + t`` of the stream keyed by ``2 * seed``
    (:data:`GENERATOR_VERSION`; ``docs/coding.md``, "The file format")."""
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
    (the last byte zero-padded): each value's most significant bit first, the values
    in order, eight bits to a byte with the first bit as the byte's most significant
    (``np.packbits`` order)."""
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
