r"""MIRACLE relative-entropy coding of a trained Gaussian guide (Havasi et al. 2019;
with the Mean-KL guide of Lin, Flamich & Hernández-Lobato 2023).

:func:`encode` sends one sample of the guide's posterior in about as many bits as
its KL to the model's Normal prior: the weights are shuffled into blocks
(:func:`ppl_hw.core.coding.make_blocks`) of ``bits_per_block`` bits of KL each; for
each block, ``K = 2**bits_per_block`` candidates are drawn from the coding
distribution (the prior) by a counter-based generator that encoder and decoder share,
and the index of one candidate — drawn with probability proportional to its
importance weight :math:`q(w_k)/p(w_k)`, or the largest — is stored in exactly
``bits_per_block`` bits. :func:`decode` regenerates the chosen candidates bit for
bit, in NumPy, on any machine and for either backend.

Works for ``AutoMeanKL`` (whose KL budget fixes the number of blocks) and
``AutoNormal`` (the number of blocks is its KL in bits over ``bits_per_block``), from
NumPyro (pass ``params``) or Pyro (the param store's current values, or ``params``).
The sites with ``Normal`` priors on the real line are coded (for ``AutoMeanKL``: its
budgeted sites); every **other** latent site (a noise scale ``sigma ~ HalfNormal``,
a hierarchical scale ``tau``, a site whose Normal prior depends on another latent) is
**stored** as its posterior median in float32 (``CompressedModel.points``, 4 bytes a
value), so :func:`decode` returns everything the model needs.

**File format** (:meth:`CompressedModel.save`), little-endian; version 2 adds the
stored point values (written only when there are any; a file without them is
version 1, byte for byte as before):

==========  =============================================================
bytes       content
==========  =============================================================
8           magic ``b"PPLHWMC\0"``
2           format version (``uint16``, 1 or 2)
2           generator version (``uint16``, :data:`ppl_hw.core.coding.GENERATOR_VERSION`)
4           length ``H`` of the header (``uint32``)
H           UTF-8 JSON: ``seed``, ``bits_per_block``, ``num_blocks``, and per site
            its ``name``, ``shape`` and the shapes of its coding loc and scale
            (``[]`` when one value serves the whole site); version 2: ``points``,
            the ``name`` and ``shape`` of each stored site
...         the coding locs and scales, float32, site by site (loc, then scale)
...         version 2: the stored sites' values, float32, site by site
...         the indices, ``num_blocks * bits_per_block`` bits, big-endian bit
            order, the last byte zero-padded
4           CRC-32 of everything before it (``uint32``)
==========  =============================================================
"""

from __future__ import annotations

import json
import math
import os
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .common import coding as _common
from .core import coding as _cc

__all__ = ["MAX_WEIGHTS_PER_BLOCK", "CompressedModel", "decode", "encode"]

MAGIC = b"PPLHWMC\0"
FORMAT_VERSION = 2
#: versions :meth:`CompressedModel.load` reads (1: no stored point sites)
READ_VERSIONS = (1, 2)
SELECTIONS = ("sample", "argmax")


@dataclass(frozen=True, eq=False)
class CompressedModel:
    """A network coded by :func:`encode`: everything :func:`decode` needs.

    :ivar sites: ``((name, shape), ...)`` in coding order.
    :ivar locs: the coding distribution's loc per site (float32; shape ``()`` when
        one value serves the whole site).
    :ivar scales: the coding distribution's scale per site (float32, likewise).
    :ivar indices: the chosen candidate of every block (uint32).
    :ivar bits_per_block: bits per index.
    :ivar seed: the seed of the blocks and the candidates.
    :ivar generator_version: the candidate generator's version.
    :ivar points: ``((name, value), ...)``: the latent sites stored as their posterior
        median (float32) instead of coded: those without a fixed ``Normal`` prior.
    """

    sites: tuple[tuple[str, tuple[int, ...]], ...]
    locs: tuple[np.ndarray, ...] = field(repr=False)
    scales: tuple[np.ndarray, ...] = field(repr=False)
    indices: np.ndarray = field(repr=False)
    bits_per_block: int
    seed: int
    generator_version: int = _cc.GENERATOR_VERSION
    points: tuple[tuple[str, np.ndarray], ...] = field(default=(), repr=False)

    @property
    def point_sites(self) -> tuple[str, ...]:
        """The names of the stored (not coded) sites."""
        return tuple(n for n, _ in self.points)

    @property
    def num_blocks(self) -> int:
        return int(self.indices.size)

    @property
    def num_weights(self) -> int:
        return int(sum(math.prod(s) for _, s in self.sites))

    @property
    def total_bits(self) -> int:
        """Bits of the index payload: ``num_blocks * bits_per_block``."""
        return self.num_blocks * self.bits_per_block

    @property
    def bits_per_weight(self) -> float:
        return self.total_bits / self.num_weights

    @property
    def compression_ratio(self) -> float:
        """float32 storage of the weights over the index payload."""
        return 32.0 * self.num_weights / self.total_bits

    def report(self) -> dict[str, float]:
        """Total bits, bits per weight, compression ratio against float32, blocks,
        coded weights, stored point values and the size of the saved file in bytes
        (the ratio and bits per weight count the coded weights only)."""
        return {
            "total_bits": self.total_bits,
            "bits_per_weight": self.bits_per_weight,
            "compression_ratio": self.compression_ratio,
            "num_blocks": self.num_blocks,
            "num_weights": self.num_weights,
            "num_point_values": int(sum(np.size(v) for _, v in self.points)),
            "file_bytes": len(self._to_bytes()),
        }

    def _blocks(self) -> _cc.Blocks:
        sizes = [math.prod(s) for _, s in self.sites]
        return _cc.make_blocks(
            sizes, self.bits_per_block, self.seed, num_blocks=self.num_blocks
        )

    # -- the file ---------------------------------------------------------------------

    def _to_bytes(self) -> bytes:
        header = {
            "seed": self.seed,
            "bits_per_block": self.bits_per_block,
            "num_blocks": self.num_blocks,
            "sites": [
                {
                    "name": name,
                    "shape": list(shape),
                    "loc_shape": list(loc.shape),
                    "scale_shape": list(scale.shape),
                }
                for (name, shape), loc, scale in zip(
                    self.sites, self.locs, self.scales, strict=True
                )
            ],
        }
        version = 1
        if self.points:
            version = 2
            header["points"] = [
                {"name": n, "shape": list(np.shape(v))} for n, v in self.points
            ]
        head = json.dumps(header, sort_keys=True).encode("utf-8")
        parts = [
            MAGIC,
            struct.pack("<HHI", version, self.generator_version, len(head)),
            head,
        ]
        for loc, scale in zip(self.locs, self.scales, strict=True):
            parts.append(np.asarray(loc, "<f4").tobytes())
            parts.append(np.asarray(scale, "<f4").tobytes())
        for _, value in self.points:
            parts.append(np.asarray(value, "<f4").tobytes())
        parts.append(_cc.pack_bits(self.indices, self.bits_per_block))
        body = b"".join(parts)
        return body + struct.pack("<I", zlib.crc32(body))

    def save(self, path: str | os.PathLike) -> None:
        """Write the documented binary format (module docstring) to ``path``."""
        path = _check_path(path)
        with open(path, "wb") as f:
            f.write(self._to_bytes())

    @classmethod
    def load(cls, path: str | os.PathLike) -> CompressedModel:
        """Read a file written by :meth:`save`; a ``ValueError`` names what is wrong
        with a corrupted, truncated or foreign file."""
        path = _check_path(path)
        if not os.path.isfile(path):
            raise ValueError(f"path {os.fspath(path)!r} is not an existing file")
        with open(path, "rb") as f:
            data = f.read()
        return cls._from_bytes(data, str(path))

    @classmethod
    def _from_bytes(cls, data: bytes, where: str = "data") -> CompressedModel:
        if len(data) < 20 or data[:8] != MAGIC:
            raise ValueError(f"{where} is not a ppl_hw compressed model (bad magic)")
        body, (crc,) = data[:-4], struct.unpack("<I", data[-4:])
        if zlib.crc32(body) != crc:
            raise ValueError(f"{where} is corrupted or truncated (checksum mismatch)")
        version, gen, hlen = struct.unpack("<HHI", body[8:16])
        if version not in READ_VERSIONS:
            raise ValueError(
                f"{where} has format version {version}; this ppl_hw reads versions "
                f"{list(READ_VERSIONS)}"
            )
        if gen != _cc.GENERATOR_VERSION:
            raise ValueError(
                f"{where} was coded with generator version {gen}; this ppl_hw has "
                f"version {_cc.GENERATOR_VERSION} and would decode other weights"
            )
        if hlen > len(body) - 16:
            raise ValueError(
                f"{where}: header length {hlen} runs past the end of the file "
                f"({len(body) - 16} bytes after the fixed fields)"
            )
        pos = 16 + hlen
        header = _check_header(body[16:pos], version, where)
        payload = 0  # the bytes the header says follow it, summed before reading any
        for s in header["sites"]:
            payload += 4 * (math.prod(s["loc_shape"]) + math.prod(s["scale_shape"]))
        for s in header["points"]:
            payload += 4 * math.prod(s["shape"])
        bits, n = header["bits_per_block"], header["num_blocks"]
        payload += (n * bits + 7) // 8
        if payload != len(body) - pos:
            raise ValueError(
                f"{where}: the header describes {payload} bytes of arrays and "
                f"indices, the file holds {len(body) - pos} (a header that does not "
                "match its file)"
            )
        locs, scales, sites = [], [], []
        for s in header["sites"]:
            arrays = []
            for key in ("loc_shape", "scale_shape"):
                shape = tuple(s[key])
                nbytes = 4 * math.prod(shape)
                arr = np.frombuffer(body[pos : pos + nbytes], "<f4").astype(np.float32)
                arrays.append(arr.reshape(shape))
                pos += nbytes
            loc, scale = arrays
            if not np.all(np.isfinite(loc)):
                raise ValueError(
                    f"{where}: site {s['name']!r} has non-finite coding locs"
                )
            if not np.all(np.isfinite(scale) & (scale > 0)):
                raise ValueError(
                    f"{where}: site {s['name']!r} has coding scales that are not "
                    "finite and > 0"
                )
            locs.append(loc)
            scales.append(scale)
            sites.append((s["name"], tuple(s["shape"])))
        points = []
        for s in header["points"]:
            shape = tuple(s["shape"])
            nbytes = 4 * math.prod(shape)
            value = np.frombuffer(body[pos : pos + nbytes], "<f4")
            points.append((s["name"], value.astype(np.float32).reshape(shape)))
            pos += nbytes
        indices = _cc.unpack_bits(body[pos:], n, bits)
        return cls(
            sites=tuple(sites),
            locs=tuple(locs),
            scales=tuple(scales),
            indices=indices,
            bits_per_block=bits,
            seed=header["seed"],
            generator_version=gen,
            points=tuple(points),
        )


_SITE_KEYS = {"name", "shape", "loc_shape", "scale_shape"}
_POINT_KEYS = {"name", "shape"}
MAX_BITS_PER_BLOCK = 24
"""The largest ``bits_per_block`` a file may claim (the coder's limit)."""
MAX_WEIGHTS_PER_BLOCK = 16_384
"""The most weights a block may hold, in a file and in :func:`encode`: coding a block
draws ``2**bits_per_block`` candidates of its size (10⁹ normals at 16 bits), and the
cap bounds what a header may claim relative to its file (``num_blocks`` is fixed by
the file's size), so a crafted header cannot make :func:`decode` allocate more than
``MAX_WEIGHTS_PER_BLOCK * 4`` bytes per block of the file. MIRACLE's LeNet-5 at 1.5 kB
has ~570 weights per block."""


def _header_int(value: Any, field: str, where: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{where}: header field {field} must be an int, got {value!r}")
    if not low <= value <= high:
        raise ValueError(
            f"{where}: header field {field} must be in [{low}, {high}], got {value!r}"
        )
    return value


def _header_shape(value: Any, field: str, where: str, limit: int) -> tuple[int, ...]:
    if not isinstance(value, list) or len(value) > 32:
        raise ValueError(
            f"{where}: header field {field} must be a list of at most 32 sizes, "
            f"got {value!r}"
        )
    shape = tuple(_header_int(d, field, where, 0, limit) for d in value)
    if math.prod(shape) > limit:
        raise ValueError(
            f"{where}: header field {field} claims {math.prod(shape)} values, more "
            f"than the file can hold ({limit})"
        )
    return shape


def _check_header(raw: bytes, version: int, where: str) -> dict:
    """The JSON header, validated field by field against the format (types, ranges,
    unique names, shapes no larger than the file could hold) before any array is
    read or allocated; a ``ValueError`` names the field."""
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"{where}: the header is not UTF-8 JSON ({err})") from None
    keys = {"seed", "bits_per_block", "num_blocks", "sites"}
    if version >= 2:
        keys.add("points")
    if not isinstance(header, dict) or set(header) != keys:
        got = sorted(header) if isinstance(header, dict) else type(header).__name__
        raise ValueError(
            f"{where}: the header must hold exactly the fields {sorted(keys)}, "
            f"got {got}"
        )
    limit = 2**40  # a sanity bound per shape; the real cap is per block (below)
    out: dict[str, Any] = {
        "seed": _header_int(header["seed"], "seed", where, 0, 2**63 - 1),
        "bits_per_block": _header_int(
            header["bits_per_block"], "bits_per_block", where, 1, MAX_BITS_PER_BLOCK
        ),
    }
    names: set[str] = set()
    for group, fields in (("sites", _SITE_KEYS), ("points", _POINT_KEYS)):
        entries = header.get(group, [])
        if not isinstance(entries, list):
            raise ValueError(f"{where}: header field {group} must be a list")
        checked = []
        for i, s in enumerate(entries):
            if not isinstance(s, dict) or set(s) != fields:
                raise ValueError(
                    f"{where}: header field {group}[{i}] must hold exactly "
                    f"{sorted(fields)}, got {s!r}"
                )
            name = s["name"]
            if not isinstance(name, str) or not name:
                raise ValueError(
                    f"{where}: header field {group}[{i}].name must be a non-empty "
                    f"string, got {name!r}"
                )
            if name in names:
                raise ValueError(
                    f"{where}: header field {group}[{i}].name {name!r} is a duplicate"
                )
            names.add(name)
            entry = {"name": name}
            for key in sorted(fields - {"name"}):
                entry[key] = _header_shape(s[key], f"{group}[{i}].{key}", where, limit)
            for key in ("loc_shape", "scale_shape"):
                if key in entry and entry[key] not in ((), entry["shape"]):
                    raise ValueError(
                        f"{where}: header field {group}[{i}].{key} must be [] or the "
                        f"site's shape {list(entry['shape'])}, got {list(entry[key])}"
                    )
            checked.append(entry)
        out[group] = checked
    if not out["sites"]:
        raise ValueError(f"{where}: header field sites is empty (nothing was coded)")
    for i, s in enumerate(out["sites"]):
        if 0 in s["shape"]:
            raise ValueError(
                f"{where}: header field sites[{i}].shape {list(s['shape'])} holds no "
                "weight (a coded site has at least one)"
            )
    num_weights = sum(math.prod(s["shape"]) for s in out["sites"])
    out["num_blocks"] = _header_int(
        header["num_blocks"], "num_blocks", where, 1, num_weights
    )
    if num_weights > MAX_WEIGHTS_PER_BLOCK * out["num_blocks"]:
        raise ValueError(
            f"{where}: header field sites claims {num_weights} weights in "
            f"{out['num_blocks']} blocks, more than MAX_WEIGHTS_PER_BLOCK="
            f"{MAX_WEIGHTS_PER_BLOCK} per block"
        )
    return out


def _check_path(path: Any) -> str | os.PathLike:
    """A file name: a ``str`` or ``os.PathLike`` (an int would be taken by ``open``
    as a file descriptor: ``load(0)`` would block on stdin, ``save(1)`` write to
    stdout and close it)."""
    if isinstance(path, bool) or not isinstance(path, str | os.PathLike):
        raise TypeError(f"path must be a file name (str or os.PathLike), got {path!r}")
    return path


def _compact(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a, np.float32)
    return a.reshape(-1)[:1].reshape(()) if a.size and np.all(a == a.flat[0]) else a


def _flatten(arrays: Any, shapes: list) -> np.ndarray:
    """Per-site arrays (compact ones broadcast to their site's shape), flattened in
    site order: the weights' coding order."""
    return np.concatenate(
        [np.broadcast_to(a, s).reshape(-1) for a, s in zip(arrays, shapes, strict=True)]
    )


def _gaussians(guide: Any, params: Any) -> tuple[dict, dict, dict]:
    """``({site: (mu, sigma)}, {site: (nu, rho)}, {site: median})`` as float64 NumPy
    arrays — the coded sites' posterior and prior, and the stored sites' medians —
    read by the adapter registered for the guide's class
    (:mod:`ppl_hw.common.coding`)."""
    gaussians = _common.GAUSSIANS.lookup(guide)
    if gaussians is None:
        raise _common.not_gaussian(guide)
    return gaussians(guide, params)


def _first_bad(a: np.ndarray, ok: np.ndarray) -> str:
    """``"k of n values, the first at index i: v"``: where ``ok`` fails."""
    a = np.asarray(a)
    bad = ~np.broadcast_to(ok, a.shape)
    first = np.unravel_index(int(np.argmax(bad)), a.shape) if a.ndim else ()
    return (
        f"{int(bad.sum())} of {a.size} values, the first at index "
        f"{tuple(int(i) for i in first)}: {float(a[first])}"
    )


def _check_gaussians(post: dict, prior: dict, points: dict) -> None:
    """Refuse, naming the site, what cannot be coded: a non-finite posterior mean, a
    posterior scale that is not finite and positive (a zero scale has an infinite
    KL), the same for the prior, and non-finite stored values — before any block is
    drawn (a NaN would otherwise surface as "cannot convert float NaN to integer")."""
    checks = (
        (post, 0, "posterior mean", False),
        (post, 1, "posterior scale", True),
        (prior, 0, "prior mean", False),
        (prior, 1, "prior scale", True),
    )
    for table, i, what, positive in checks:
        for name in sorted(table):
            a = np.asarray(table[name][i], np.float64)
            ok = np.isfinite(a) & (a > 0) if positive else np.isfinite(a)
            if not np.all(ok):
                need = "finite and > 0" if positive else "finite"
                raise ValueError(
                    f"cannot code site {name!r}: its {what} must be {need}, and "
                    f"{_first_bad(a, ok)} are not (was the guide trained on a NaN "
                    "loss, or its parameters edited?)"
                )
    for name in sorted(points):
        a = np.asarray(points[name], np.float64)
        ok = np.isfinite(a)
        if not np.all(ok):
            raise ValueError(
                f"cannot store site {name!r}: its posterior median must be finite, "
                f"and {_first_bad(a, ok)} are not"
            )


def _guide_blocks(guide: Any) -> _cc.Blocks | None:
    """The coding blocks of ``AutoMeanKL(budget_split="blocks")`` (either backend)."""
    if getattr(guide, "budget_split", None) != "blocks":
        return None
    blocks = guide.blocks
    if blocks is None:
        raise ValueError("the guide has not been run yet: train it before encoding")
    return blocks


def encode(
    guide: Any,
    params: dict | None = None,
    *,
    bits_per_block: int | None = None,
    seed: int | None = None,
    selection: str = "sample",
    finetune: Callable[[int, dict], Any] | None = None,
    kl_bits_per_block: float | None = None,
    executor: Any = None,
    chunks: int | None = None,
) -> CompressedModel:
    """Code one posterior sample of a trained Gaussian guide (MIRACLE).

    :param guide: a trained ``AutoMeanKL`` or ``AutoNormal`` (NumPyro or Pyro): the
        sites with ``Normal`` priors are coded, the others stored (module docstring).
    :param params: NumPyro: the trained parameters (``svi.get_params(state)``);
        Pyro: ``None`` (the param store's current values, also right after
        ``pyro.get_param_store().load(path)``) or ``{param store name: value}``
        (e.g. ``dict(pyro.get_param_store().items())``). A missing parameter
        raises, naming its site.
    :param bits_per_block: bits per block index, 1..24 (``K = 2**bits`` candidates);
        default 16, or the guide's ``bits_per_block`` for an ``AutoMeanKL`` with
        ``budget_split="blocks"`` (whose blocks are then coded as they are; a larger
        value gives the sampler a margin).
    :param seed: seed of the blocks, the candidates and the selection (int >= 0);
        default 0, or the guide's ``block_seed`` (``budget_split="blocks"``, which
        needs exactly that seed).
    :param selection: ``"sample"`` (index drawn in proportion to the importance
        weights: the decoded weights follow the posterior) or ``"argmax"``.
    :param finetune: ``None`` or ``callback(block, fixed)`` called before each block
        after the first, with ``fixed = {site: (mask, values)}`` of the weights coded
        so far; it may train the rest (e.g. a few SVI steps with the coded weights
        held by ``substitute``) and return new NumPyro ``params`` (Pyro: update the
        param store and return ``None``).
    :param kl_bits_per_block: KL (bits) each block carries, ``0 < t <=
        bits_per_block`` (default ``bits_per_block``, MIRACLE's choice): the number of
        blocks is the KL over ``t``. A margin (``t < bits_per_block``) gives the
        importance sampler ``2**(bits - t)`` times more candidates than the KL needs,
        at ``bits / t`` times the size (on the digits, ``t = 14`` of 16 moved the
        decoded network from the lower tail of the posterior samples' accuracies to
        their middle; see the reproductions page).
    :param executor: ``None`` (code the blocks in this process) or a
        ``concurrent.futures.Executor`` — anything with ``submit(fn, arg)``
        returning a future: a ``ProcessPoolExecutor`` (best with a ``"spawn"`` or
        ``"forkserver"`` ``mp_context`` once JAX or PyTorch is loaded), a Dask
        ``Client.get_executor()``, a Ray executor. The blocks are sent to it in
        runs of consecutive blocks (:func:`ppl_hw.core.coding.encode_range`: each
        task carries only its blocks' parameters, and the workers import NumPy and
        SciPy only). The file is byte for byte the serial one whatever the executor,
        its number of workers and ``chunks``: a block's index depends only on the
        seed, the block and its own weights. With ``finetune`` the blocks are coded
        one by one in this process (each block waits for the fine-tuning after the
        one before) and a ``UserWarning`` says the executor was not used.
    :param chunks: the number of tasks the blocks are cut into (``None``: 8 per
        worker when the executor has a ``_max_workers`` attribute, as the standard
        library's do, and at least 64; never more than the blocks). More tasks
        balance uneven workers better; each costs a round trip.
    """
    if executor is not None:
        if isinstance(executor, type) or not callable(
            getattr(executor, "submit", None)
        ):
            raise TypeError(
                "executor must be None or a concurrent.futures.Executor instance "
                f"(an object with a submit method), got {executor!r}"
            )
    bad_int = isinstance(chunks, bool) or not isinstance(chunks, int | np.integer)
    if chunks is not None and (bad_int or chunks < 1):
        raise ValueError(f"chunks must be None or an int >= 1, got {chunks!r}")
    guide_blocks = _guide_blocks(guide)
    if guide_blocks is not None:
        g_bits, g_seed = guide.bits_per_block, guide.block_seed
        if bits_per_block is None:
            bits_per_block = g_bits
        if seed is None:
            seed = g_seed
    bits = _common.check_bits_per_block(
        16 if bits_per_block is None else bits_per_block
    )
    seed = 0 if seed is None else seed
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    if guide_blocks is not None:
        if bits < g_bits:
            raise ValueError(
                f"bits_per_block={bits} is less than the guide's blocks carry "
                f"(AutoMeanKL bits_per_block={g_bits}); give >= {g_bits} or leave it"
            )
        if seed != g_seed:
            raise ValueError(
                f"seed={seed} differs from the guide's block_seed={g_seed}: the "
                "blocks of budget_split='blocks' are decoded from the seed; leave "
                "seed unset"
            )
        if kl_bits_per_block is not None:
            raise ValueError(
                "kl_bits_per_block does not apply to an AutoMeanKL with "
                "budget_split='blocks' (its blocks fix the KL per block), got "
                f"{kl_bits_per_block!r}"
            )
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {SELECTIONS}, got {selection!r}")
    if kl_bits_per_block is None:
        kl_bits_per_block = bits
    if isinstance(kl_bits_per_block, bool) or not isinstance(
        kl_bits_per_block, int | float | np.number
    ):
        raise TypeError(
            f"kl_bits_per_block must be a number, got {kl_bits_per_block!r}"
        )
    if not 0 < kl_bits_per_block <= bits:
        raise ValueError(
            f"kl_bits_per_block must be in (0, bits_per_block={bits}], "
            f"got {kl_bits_per_block!r}"
        )
    if finetune is not None and not callable(finetune):
        raise TypeError(f"finetune must be callable or None, got {finetune!r}")
    post, prior, points = _gaussians(guide, params)
    _check_gaussians(post, prior, points)
    if not post:
        raise ValueError(
            "encode codes the sites with a Normal prior on the real line, and this "
            f"guide has none (its sites {sorted(points)} would only be stored); "
            "give the weights Normal priors"
        )
    names = sorted(post)  # the coding order (the blocks of budget_split="blocks")
    shapes = [tuple(np.shape(post[n][0])) for n in names]
    empty = [n for n, s in zip(names, shapes, strict=True) if 0 in s]
    if empty:
        raise ValueError(
            f"encode: the sites {empty} hold no weight (a dimension of size 0); "
            "leave them out of the model or give them a size"
        )
    sizes = [math.prod(s) for s in shapes]
    locs = [_compact(prior[n][0]) for n in names]
    scales = [_compact(prior[n][1]) for n in names]

    def flat(arrs: list) -> np.ndarray:
        return _flatten(arrs, shapes)

    nu = flat(locs).astype(np.float32)
    rho = flat(scales).astype(np.float32)
    mu = flat([post[n][0] for n in names])
    sigma = flat([post[n][1] for n in names])
    kl_nats = float(
        np.sum(
            np.log(rho / sigma)
            + (sigma**2 + (mu - nu) ** 2) / (2.0 * rho.astype(np.float64) ** 2)
            - 0.5
        )
    )
    if guide_blocks is not None:
        if tuple(guide_blocks.sizes) != tuple(sizes):
            raise ValueError(
                f"the guide's blocks cover sites of sizes {list(guide_blocks.sizes)}, "
                f"the guide's parameters {sizes}"
            )
        blocks = guide_blocks
        if blocks.num_weights > MAX_WEIGHTS_PER_BLOCK * blocks.num_blocks:
            raise ValueError(
                f"the guide's {blocks.num_blocks} blocks hold {blocks.num_weights} "
                f"weights, more than MAX_WEIGHTS_PER_BLOCK={MAX_WEIGHTS_PER_BLOCK} "
                "per block: give the AutoMeanKL a larger budget or fewer bits_per_block"
            )
    else:
        kl_bits = max(kl_nats / math.log(2.0), float(kl_bits_per_block))
        # a KL a float32 rounding above a whole number of blocks (an AutoMeanKL
        # budget of 20 000 bits recomputes to 20 000.006) does not add a block
        num_blocks = min(
            math.ceil(kl_bits * (1.0 - 1e-6) / kl_bits_per_block), sum(sizes)
        )
        if sum(sizes) > MAX_WEIGHTS_PER_BLOCK * num_blocks:
            raise ValueError(
                f"the guide's KL ({kl_bits:.6g} bits) gives {num_blocks} blocks for "
                f"{sum(sizes)} weights, more than MAX_WEIGHTS_PER_BLOCK="
                f"{MAX_WEIGHTS_PER_BLOCK} weights per block (each block draws "
                f"2**{bits} candidates of its size); lower kl_bits_per_block"
            )
        blocks = _cc.make_blocks(sizes, bits, int(seed), num_blocks=num_blocks)
    offsets = np.cumsum([0, *sizes])

    callback = None
    if finetune is not None:

        def callback(b: int, coded: np.ndarray, values: np.ndarray) -> Any:
            fixed = {
                n: (
                    coded[offsets[i] : offsets[i + 1]].reshape(shapes[i]),
                    values[offsets[i] : offsets[i + 1]].reshape(shapes[i]),
                )
                for i, n in enumerate(names)
            }
            new = finetune(b, fixed)
            p2, _, pts = _gaussians(guide, params if new is None else new)
            points.update(pts)  # the stored sites as fine-tuned
            return flat([p2[n][0] for n in names]), flat([p2[n][1] for n in names])

    fan_out: dict[str, Any] = {}
    if finetune is not None:
        if executor is not None or chunks is not None:
            warnings.warn(
                "encode(finetune=...) with executor or chunks: fine-tuning runs "
                "between blocks, so the blocks are coded one by one in this "
                "process; the executor is not used",
                UserWarning,
                stacklevel=2,
            )
    elif executor is not None or chunks is not None:
        fan_out["chunks"] = _chunks(executor, chunks, blocks.num_blocks)
        if executor is not None:
            fan_out["map"] = _executor_map(executor)
    indices, _ = _cc.encode_blocks(
        mu,
        sigma,
        nu,
        rho,
        blocks,
        bits,
        int(seed),
        selection=selection,
        finetune=callback,
        **fan_out,
    )
    return CompressedModel(
        sites=tuple(zip(names, shapes, strict=True)),
        locs=tuple(locs),
        scales=tuple(scales),
        indices=indices,
        bits_per_block=bits,
        seed=int(seed),
        points=tuple(
            (n, np.asarray(points[n], np.float32).copy()) for n in sorted(points)
        ),
    )


def _chunks(executor: Any, chunks: int | None, num_blocks: int) -> int:
    """The number of tasks (``encode``'s ``chunks``)."""
    if chunks is None:
        workers = getattr(executor, "_max_workers", None)
        workers = workers if isinstance(workers, int) and workers > 0 else 1
        chunks = max(64, 8 * workers)
    return int(min(chunks, num_blocks))


def _executor_map(executor: Any) -> Callable:
    """A ``map(fn, tasks)`` on ``executor.submit``: every task submitted at once, the
    results in the tasks' order; on a failure the tasks not yet started are
    cancelled and the error raised."""

    def run(fn: Callable, tasks: Any) -> list:
        futures = []
        try:
            for task in tasks:
                futures.append(executor.submit(fn, task))
            return [f.result() for f in futures]
        except BaseException:
            for f in futures:
                f.cancel()
            raise

    return run


def decode(compressed: CompressedModel, backend: str | None = None) -> dict[str, Any]:
    """The coded weights, ``{site: array}`` (float32), bit for bit as the encoder
    chose them, and the stored sites' values (:attr:`CompressedModel.points`), for
    ``handlers.substitute`` / ``poutine.condition``.

    :param compressed: from :func:`encode` or :meth:`CompressedModel.load`.
    :param backend: ``None`` (NumPy arrays), ``"numpyro"`` (JAX arrays) or
        ``"pyro"`` (torch tensors).

    Decoding takes no executor: it regenerates one candidate per block where the
    encoder scored ``K = 2**bits_per_block`` of them, ``K`` times less work (the
    digits network's 1 250 blocks decode in about 30 ms).
    """
    if not isinstance(compressed, CompressedModel):
        raise TypeError(
            f"decode needs a CompressedModel, got {type(compressed).__name__}"
        )
    if backend not in (None, "numpyro", "pyro"):
        raise ValueError(f"backend must be None, 'numpyro' or 'pyro', got {backend!r}")
    to_array = None if backend is None else _common.ARRAYS.by_name(backend)
    shapes = [s for _, s in compressed.sites]
    sizes = [math.prod(s) for s in shapes]
    nu = _flatten(compressed.locs, shapes)
    rho = _flatten(compressed.scales, shapes)
    flat = _cc.decode_blocks(
        compressed.indices, nu, rho, compressed._blocks(), compressed.seed
    )
    out: dict[str, Any] = {}
    pos = 0
    for (name, shape), size in zip(compressed.sites, sizes, strict=True):
        value = flat[pos : pos + size].reshape(shape).copy()
        pos += size
        out[name] = value if to_array is None else to_array(value)
    for name, value in compressed.points:
        value = np.array(value, np.float32)
        out[name] = value if to_array is None else to_array(value)
    return out
