"""The demo's figures: accuracy against read time, and reliability diagrams.

Both are drawn from the rows' kept predictive probabilities (nothing is recomputed)
with Matplotlib's object-oriented API (``matplotlib.figure.Figure``, rendered by Agg:
no display needed and pyplot's global state untouched).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._common import Row

__all__ = [
    "ACCURACY_VS_TIME",
    "MIN_BIN_COUNT",
    "NUM_BINS",
    "RELIABILITY",
    "accuracy_vs_time",
    "reliability",
    "reliability_bins",
]

ACCURACY_VS_TIME = "accuracy_vs_time.png"
RELIABILITY = "reliability.png"
NUM_BINS = 15
"""Confidence bins of the reliability diagram: those of
:func:`ppl_hw.metrics.expected_calibration_error` (15 equal-width bins)."""


def reliability_bins(
    probs, labels, num_bins: int = NUM_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per confidence bin: mean confidence, accuracy and count (``nan`` for empty
    bins). Bin ``b`` holds confidences in ``((b-1)/B, b/B]`` as in the ECE, so
    ``sum(count / N * |accuracy - confidence|)`` over non-empty bins is the ECE."""
    p = np.asarray(probs, dtype=np.float64)
    y = np.asarray(labels)
    conf = p.max(axis=-1)
    correct = (np.argmax(p, axis=-1) == y).astype(np.float64)
    idx = np.clip(np.ceil(conf * num_bins).astype(np.int64) - 1, 0, num_bins - 1)
    count = np.bincount(idx, minlength=num_bins).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=num_bins) / count
        acc = np.bincount(idx, weights=correct, minlength=num_bins) / count
    return mean_conf, acc, count


def _backends(rows: Sequence[Row]) -> list[str]:
    return list(dict.fromkeys(r.backend for r in rows))


def _colors(rows: Sequence[Row]) -> dict[str, str]:
    """One colour per off-chip method, the same on every backend and figure (a
    deployed row takes the colour of the posterior it deploys)."""
    methods = dict.fromkeys(r.method for r in rows if r.deployed is None)
    return {m: f"C{i % 10}" for i, m in enumerate(methods)}


def _short(method: str) -> str:
    return method.split(",")[0]


def _figure(ncols: int, nrows: int, width: float, height: float):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    return fig, axes


def accuracy_vs_time(rows: Sequence[Row], path: Path) -> Path:
    """Test accuracy of each deployed posterior against the time since programming
    (log axis), one panel per backend; the dashed line of the same colour is the
    posterior's off-chip accuracy."""
    backends = _backends(rows)
    colors = _colors(rows)
    fig, axes = _figure(len(backends), 1, 5.5, 4.0)
    for ax, backend in zip(axes[0], backends, strict=True):
        mine = [r for r in rows if r.backend == backend]
        offchip = {r.method: r for r in mine if r.deployed is None}
        for method in dict.fromkeys(r.deployed for r in mine if r.deployed):
            deployed = sorted(
                (r for r in mine if r.deployed == method), key=lambda r: r.read_time
            )
            color = colors.get(method, "k")
            ax.plot(
                [r.read_time for r in deployed],
                [100 * r.accuracy for r in deployed],
                "o-",
                color=color,
                label=f"{_short(method)} on {deployed[0].device}",
            )
            if method in offchip:
                ax.axhline(
                    100 * offchip[method].accuracy,
                    color=color,
                    linestyle="--",
                    linewidth=1,
                    label=f"{_short(method)} off-chip",
                )
        ax.set_xscale("log")
        times = _read_times(mine)
        if times:
            ax.set_xticks(list(times), list(times.values()))
            ax.minorticks_off()
            ax.set_xlim(min(times) / 3, max(times) * 3)
        ax.set_xlabel("time since programming (log scale)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(backend)
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    fig.savefig(path, dpi=120)
    return path


MIN_BIN_COUNT = 5
"""The reliability diagram draws the bins holding at least this many test examples
(bins of one or two examples would swing between accuracy 0 and 1)."""


def reliability(rows: Sequence[Row], labels, path: Path) -> Path:
    """Reliability diagrams: accuracy against mean confidence in the ECE's 15 bins
    (those with at least ``MIN_BIN_COUNT`` examples), one row of panels per backend,
    the off-chip methods on the left, the deployed posteriors on the right (colour:
    the posterior, as on the left; line style: the read time; the predictions of all
    the chips of a deployed row pooled)."""
    from matplotlib.lines import Line2D

    backends = _backends(rows)
    colors = _colors(rows)
    labels_of_time = _read_times(rows)
    times = list(labels_of_time)
    styles = dict(zip(times, ["-", "--", ":", "-."] * len(times), strict=False))
    fig, axes = _figure(2, len(backends), 5.0, 5.0)
    for (ax_off, ax_on), backend in zip(axes, backends, strict=True):
        for r in rows:
            if r.backend != backend or r.probs is None:
                continue
            conf, acc, count = reliability_bins(*_pooled(r.probs, labels))
            keep = count >= MIN_BIN_COUNT
            offchip = r.deployed is None
            ax_off_on = ax_off if offchip else ax_on
            ax_off_on.plot(
                conf[keep],
                acc[keep],
                marker=".",
                linestyle="-" if offchip else styles[r.read_time],
                color=colors.get(r.method if offchip else r.deployed, "k"),
            )
        for ax, title in ((ax_off, "off-chip"), (ax_on, "deployed")):
            ax.plot([0, 1], [0, 1], color="0.6", linewidth=1)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_aspect("equal")
            ax.set_xlabel("confidence (mean in bin)")
            ax.set_ylabel("accuracy in bin")
            ax.set_title(f"{backend}, {title}")
            ax.grid(True, alpha=0.3)
    # legends under the last row: the methods, and the posteriors and read times
    ax_off, ax_on = axes[-1]
    deployed = dict.fromkeys(r.deployed for r in rows if r.deployed)
    legends = (
        (
            ax_off,
            [Line2D([], [], color=c, marker=".") for c in colors.values()],
            list(colors),
        ),
        (
            ax_on,
            [Line2D([], [], color=colors.get(m, "k")) for m in deployed]
            + [Line2D([], [], color="0.3", linestyle=styles[t]) for t in times],
            [f"{_short(m)} on {_device(rows, m)}" for m in deployed]
            + [f"t = {labels_of_time[t]}" for t in times],
        ),
    )
    for ax, handles, names in legends:
        if handles:
            ax.legend(
                handles,
                names,
                fontsize="small",
                loc="upper center",
                bbox_to_anchor=(0.5, -0.14),
                ncols=1,
            )
    fig.savefig(path, dpi=120)
    return path


def _pooled(probs, labels) -> tuple[np.ndarray, np.ndarray]:
    """A deployed row's probabilities of all its chips ``(chips, N, C)`` as one
    set of ``chips * N`` predictions, with the labels repeated (an off-chip row's
    ``(N, C)`` as they are)."""
    p = np.asarray(probs)
    if p.ndim == 2:
        return p, np.asarray(labels)
    return p.reshape(-1, p.shape[-1]), np.tile(labels, p.shape[0])


def _read_times(rows: Sequence[Row]) -> dict[float, str]:
    """``{read time (s): label}`` of the deployed rows, in time order (the label is
    the end of the method name, e.g. ``"1 day"``)."""
    times = {r.read_time: r.method.rsplit("t = ", 1)[-1] for r in rows if r.deployed}
    return dict(sorted(times.items()))


def _device(rows: Sequence[Row], method: str) -> str:
    return next(r.device for r in rows if r.deployed == method)
