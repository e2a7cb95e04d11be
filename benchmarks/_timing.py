"""Side-by-side timing: the candidates of one comparison run interleaved in one process.

Each candidate is a zero-argument callable that finishes its work before returning
(JAX callables block on their result). After ``warmup`` untimed calls each (jit
compilation, caches), ``repeats`` rounds time ``number`` calls of every candidate in
turn, so drift of the machine affects all candidates alike; the figure is the median
over rounds of the time per call, and the spread of a ratio is the range (min–max) of
its per-round ratios: both candidates of a round ran back to back, so a busy moment of
the machine moves both.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["Result", "Timings", "compare"]


class Timings(dict):
    """Median seconds per call by candidate, with every round's figure in ``rounds``."""

    def __init__(self, rounds: dict[str, list[float]]):
        super().__init__({name: statistics.median(s) for name, s in rounds.items()})
        self.rounds = rounds

    def ratio(self, candidate: str, baseline: str) -> tuple[float, float, float]:
        """``(median ratio, min, max)`` of ``candidate ÷ baseline`` over the rounds.

        The median ratio is the ratio of the medians (the table's figure); min and
        max are those of the per-round ratios.
        """
        pairs = zip(self.rounds[candidate], self.rounds[baseline], strict=True)
        per_round = [c / b for c, b in pairs]
        return self[candidate] / self[baseline], min(per_round), max(per_round)


@dataclass
class Result:
    """One benchmark figure: ``ratio`` = time(candidate) / time(baseline).

    ``spread`` is the (min, max) of the per-round ratios (:meth:`Timings.ratio`).
    """

    name: str
    ratio: float
    goal: float | None = None
    details: dict[str, float] = field(default_factory=dict)
    note: str = ""
    spread: tuple[float, float] | None = None

    @classmethod
    def of(
        cls,
        name: str,
        timings: Timings,
        candidate: str,
        baseline: str,
        *,
        goal: float | None = None,
        details: dict[str, float] | None = None,
        note: str = "",
    ) -> Result:
        """The ratio ``candidate ÷ baseline`` of ``timings`` with its spread."""
        ratio, lo, hi = timings.ratio(candidate, baseline)
        return cls(name, ratio, goal, dict(details or {}), note, (lo, hi))

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
) -> Timings:
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
    return Timings(samples)
