"""Backend-neutral argument checks and bookkeeping for data parallelism: which model
arguments are per-example data, which mesh axis / how many replicas, and whether a
batch splits evenly among them. Every check raises before any work, naming the
argument and the sizes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ..core.checks import check_int

__all__ = [
    "check_divisible",
    "check_global_batch",
    "check_mesh_axis",
    "check_plate_names",
    "data_argument_names",
    "normalize_argnames",
    "normalize_argnums",
    "split_range",
]


def normalize_argnums(name: str, value: Any) -> tuple[int, ...]:
    """An int or a sequence of distinct ints >= 0, as a sorted tuple."""
    items = (value,) if isinstance(value, int) else value
    if isinstance(items, str) or not isinstance(items, Sequence):
        raise TypeError(f"{name} must be an int or a sequence of ints, got {value!r}")
    out = tuple(check_int(f"{name} entries", i, low=0) for i in items)
    if len(set(out)) != len(out):
        raise ValueError(f"{name} must not repeat a position, got {value!r}")
    return tuple(sorted(out))


def normalize_argnames(name: str, value: Any) -> tuple[str, ...]:
    """A string or a sequence of distinct strings, as a tuple."""
    items = (value,) if isinstance(value, str) else value
    if not isinstance(items, Sequence) or not all(isinstance(s, str) for s in items):
        raise TypeError(f"{name} must be a str or a sequence of str, got {value!r}")
    if len(set(items)) != len(items):
        raise ValueError(f"{name} must not repeat a name, got {value!r}")
    return tuple(items)


def check_mesh_axis(axis_names: Sequence[str], axis: Any) -> str:
    """The mesh axis to shard over: ``axis`` if it is one of ``axis_names``, the
    first axis if ``axis`` is ``None``."""
    names = tuple(axis_names)
    if axis is None:
        return names[0]
    if axis not in names:
        raise ValueError(
            f"mesh_axis must be one of the mesh's axes {names}, got {axis!r}"
        )
    return axis


def data_argument_names(
    num_args: int, kwarg_names: Sequence[str], argnums: tuple, argnames: tuple
) -> tuple[list[int], list[str]]:
    """The positions and keyword names among a call's arguments that are per-example
    data (positions beyond ``num_args`` and names not passed are skipped: an
    argument may be optional, e.g. ``y=None`` when predicting)."""
    return [i for i in argnums if i < num_args], [
        k for k in argnames if k in kwarg_names
    ]


def check_divisible(what: str, size: int, parts: int, axis: str) -> None:
    """``size`` examples split evenly into ``parts`` shards along mesh axis ``axis``."""
    if size % parts:
        raise ValueError(
            f"{what} has {size} examples along its leading axis, not divisible by the "
            f"{parts} devices of mesh axis {axis!r}: use a batch size that is a "
            f"multiple of {parts}"
        )


def split_range(total: int, rank: int, world: int, what: str) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank``'s contiguous share of ``total`` items split
    evenly over ``world`` ranks; ``ValueError`` when they do not divide evenly."""
    if total % world:
        raise ValueError(
            f"{what} of {total} does not split evenly over {world} ranks: use a "
            f"multiple of {world}"
        )
    share = total // world
    return rank * share, (rank + 1) * share


def check_global_batch(total: int, share: int, world: int, what: str) -> int:
    """``world * share``, the global minibatch size; ``ValueError`` when it exceeds the
    ``total`` number of data points."""
    if share * world > total:
        raise ValueError(
            f"{what}: {world} ranks x subsample_size {share} = {share * world} is "
            f"larger than the data size {total}; the plate's subsample_size is the "
            "per-rank minibatch"
        )
    return share * world


def check_plate_names(shard: Any) -> frozenset[str] | None:
    """``None`` or the set of plate names of ``shard`` (a name or a sequence of
    names)."""
    if shard is None:
        return None
    if isinstance(shard, str):
        return frozenset([shard])
    if isinstance(shard, Sequence) and all(isinstance(s, str) for s in shard):
        return frozenset(shard)
    raise TypeError(
        f"shard must be None, a plate name or a sequence of plate names, got {shard!r}"
    )
