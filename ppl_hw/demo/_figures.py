"""The demo's figures: accuracy against read time, and reliability diagrams.

Both are drawn from the rows' kept predictive probabilities (nothing is recomputed)
with Matplotlib's object-oriented API (``matplotlib.figure.Figure``, rendered by Agg:
no display needed and pyplot's global state untouched).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ._common import Row

__all__ = [
    "ACCURACY_VS_TIME",
    "MIN_BIN_COUNT",
    "NUM_BINS",
    "RELIABILITY",
    "RELIABILITY_COLUMNS",
    "accuracy_vs_time",
    "accuracy_vs_time_figure",
    "reliability",
    "reliability_bins",
    "reliability_figure",
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


def _figure(ncols: int, nrows: int, width: float, height: float, sharey=False):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharey=sharey)
    return fig, axes


def accuracy_vs_time_figure(rows: Sequence[Row]):
    """The figure of :func:`accuracy_vs_time` (a ``matplotlib.figure.Figure``)."""
    backends = _backends(rows)
    colors = _colors(rows)
    fig, axes = _figure(len(backends), 1, 5.5, 4.0, sharey=True)
    for ax, backend in zip(axes[0], backends, strict=True):
        mine = [r for r in rows if r.backend == backend]
        offchip = {r.method: r for r in mine if r.deployed is None}
        for method in dict.fromkeys(r.deployed for r in mine if r.deployed):
            deployed = sorted(
                (r for r in mine if r.deployed == method), key=lambda r: r.read_time
            )
            color = colors.get(method, "k")
            chips = deployed[0].chips or 1
            bars = ax.errorbar(
                [r.read_time for r in deployed],
                [100 * r.accuracy for r in deployed],
                yerr=[100 * (r.accuracy_sd or 0.0) for r in deployed],
                fmt="o-",
                capsize=3,
                color=color,
                label=f"{_short(method)} on {deployed[0].device} "
                f"(mean ± sd, {chips} chip{'s' if chips > 1 else ''})",
            )
            bars.lines[0].set_gid(f"{backend}|{method}")  # found again by the tests
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
        ax.set_title(backend)
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    axes[0][0].set_ylabel("test accuracy (%)")
    return fig


def accuracy_vs_time(rows: Sequence[Row], path: Path) -> Path:
    """Test accuracy of each deployed posterior against the time since programming
    (log axis): the mean over the chips with a bar of ± one standard deviation (the
    table's numbers), one panel per backend on a shared y-axis; the dashed line of
    the same colour is the posterior's off-chip accuracy."""
    accuracy_vs_time_figure(rows).savefig(path, dpi=120)
    return path


MIN_BIN_COUNT = 5
"""The reliability diagram draws the bins holding at least this many test examples
(bins of one or two examples would swing between accuracy 0 and 1)."""

RELIABILITY_COLUMNS = 4
"""Panels per row of the reliability diagram (one panel per off-chip method)."""


def reliability_figure(rows: Sequence[Row], labels):
    """The figure of :func:`reliability` (a ``matplotlib.figure.Figure``)."""

    backends = _backends(rows)
    labels_of_time = _read_times(rows)
    styles = dict(zip(labels_of_time, ["--", ":", "-.", (0, (1, 3))] * 4, strict=False))
    methods = {
        b: [r for r in rows if r.backend == b and r.deployed is None] for b in backends
    }
    ncols = min(RELIABILITY_COLUMNS, max(len(m) for m in methods.values()))
    rows_per_backend = {b: math.ceil(len(m) / ncols) for b, m in methods.items()}
    fig, axes = _figure(ncols, sum(rows_per_backend.values()), 3.4, 3.6)
    colors = _colors(rows)
    first = 0
    for backend in backends:
        panels = axes[first : first + rows_per_backend[backend]].reshape(-1)
        first += rows_per_backend[backend]
        for i, ax in enumerate(panels):
            if i >= len(methods[backend]):
                ax.set_visible(False)
                continue
            offchip = methods[backend][i]
            curves = [(offchip, "-", "off-chip")] + [
                (
                    r,
                    styles[r.read_time],
                    f"on {r.device}, t = {labels_of_time[r.read_time]}",
                )
                for r in sorted(
                    (
                        r
                        for r in rows
                        if r.backend == backend and r.deployed == offchip.method
                    ),
                    key=lambda r: r.read_time,
                )
            ]
            color = colors.get(offchip.method, "k")
            handles = []
            for r, style, name in curves:
                if r.probs is None:
                    continue
                conf, acc, count = reliability_bins(*_pooled(r.probs, labels))
                keep = count >= MIN_BIN_COUNT
                (line,) = ax.plot(
                    conf[keep],
                    acc[keep],
                    marker="o",
                    markersize=3,
                    linestyle=style,
                    color=color,
                )
                handles.append((line, name))
                if r is offchip:  # the off-chip curve's bin counts
                    for c, a, n in zip(conf[keep], acc[keep], count[keep], strict=True):
                        ax.annotate(
                            f"{int(n)}",
                            (c, a),
                            textcoords="offset points",
                            xytext=(0, -9),
                            ha="center",
                            fontsize=6,
                            color="0.25",
                        )
            ax.plot([0, 1], [0, 1], color="0.6", linewidth=1)
            ax.set_xlim(0, 1)
            ax.set_ylim(0, 1.02)
            ax.set_aspect("equal")
            ax.set_title(f"{backend}: {_short(offchip.method)}", fontsize="small")
            ax.set_xlabel("confidence (mean in bin)", fontsize="small")
            ax.set_ylabel("accuracy in bin", fontsize="small")
            ax.grid(True, alpha=0.3)
            ax.tick_params(labelsize="small")
            if len(handles) > 1:
                ax.legend(
                    [h for h, _ in handles],
                    [n for _, n in handles],
                    fontsize="x-small",
                    loc="upper left",
                )
    fig.suptitle(
        f"Reliability in the ECE's {NUM_BINS} confidence bins (bins of >= "
        f"{MIN_BIN_COUNT} test images; numbers: images per bin off-chip; deployed: "
        "all chips pooled)",
        fontsize="small",
    )
    return fig


def reliability(rows: Sequence[Row], labels, path: Path) -> Path:
    """Reliability diagrams as small multiples: one panel per off-chip method (rows
    of ``RELIABILITY_COLUMNS`` panels, one group of rows per backend), accuracy
    against mean confidence in the ECE's 15 bins (those with at least
    ``MIN_BIN_COUNT`` examples), each point labelled with its bin's count; a deployed
    posterior's curves (one line style per read time, the predictions of all its
    chips pooled) in the panel of the posterior it deploys."""
    reliability_figure(rows, labels).savefig(path, dpi=120)
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
