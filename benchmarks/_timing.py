"""Side-by-side timing: the candidates of one comparison run interleaved in one process.

Each candidate is a zero-argument callable that finishes its work before returning
(JAX callables block on their result). After ``warmup`` untimed calls each (jit
compilation, caches), ``repeats`` rounds time ``number`` calls of every candidate in
turn, so drift of the machine affects all candidates alike; the figure is the median
over rounds of the time per call.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Result", "compare"]


@dataclass
class Result:
    """One benchmark figure: ``ratio`` = time(candidate) / time(baseline)."""

    name: str
    ratio: float
    goal: float | None = None
    details: dict[str, float] = field(default_factory=dict)
    note: str = ""

    @property
    def status(self) -> str:
        if self.goal is None:
            return "reported"
        return "met" if self.ratio <= self.goal else "missed"


def compare(
    candidates: dict[str, Callable[[], object]],
    *,
    repeats: int = 7,
    number: int = 20,
    warmup: int = 3,
) -> dict[str, float]:
    """Median seconds per call of each candidate, timed interleaved."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples[name].append((time.perf_counter() - start) / number)
    return {name: statistics.median(s) for name, s in samples.items()}
