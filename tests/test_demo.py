"""The main job (``python -m ppl_hw.demo``)."""

import contextlib
import io
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from ppl_hw import demo, metrics
from ppl_hw.datasets import load_digits
from ppl_hw.demo._common import (
    CODING_BITS_PER_BLOCK,
    CODING_MARGIN_BITS,
    DEMO_KL_BUDGET_BITS,
    DEPLOY_CHIPS,
    DEPLOY_TIMES,
    DEVICES,
    SGHMC_TEMPERATURE,
    TERNARY_METHOD,
    coded_method,
    meankl_method,
    row_dict,
    sghmc_method,
)
from ppl_hw.demo._figures import (
    ACCURACY_VS_TIME,
    MIN_BIN_COUNT,
    RELIABILITY,
    accuracy_vs_time_figure,
    reliability_bins,
    reliability_figure,
)

BITS = CODING_BITS_PER_BLOCK["smoke"]
CODED = coded_method(BITS, BITS + CODING_MARGIN_BITS)
MEANKL = meankl_method(BITS)
DEPLOYED = ("AutoNormal", MEANKL, "AutoDeviceNoise, MTJ shape")
# the smoke runs: NumPyro on the default device, Pyro on the ideal one
DEVICE = {"numpyro": "PCM", "pyro": "Ideal"}
CHIPS = DEPLOY_CHIPS["smoke"]


def _methods(device: str) -> list[str]:
    def on(name: str) -> list[str]:
        return [f"{name} on {device}, t = {label}" for label in DEPLOY_TIMES]

    return [
        "AutoNormal",
        *on("AutoNormal"),
        "AutoNormal, SpikeAndSlab prior",
        MEANKL,
        CODED,
        *on("AutoMeanKL"),
        "AutoDeviceNoise, MTJ shape",
        *on("AutoDeviceNoise"),
        sghmc_method(SGHMC_TEMPERATURE),
        TERNARY_METHOD,
    ]


class _Runs(dict):
    """``main`` at the smoke size, run for a backend the first time a test asks for
    it: ``{backend: (rows, stdout, stderr, output folder)}``. Lazy per backend, so
    that xdist can run the two backends' tests (and their runs) on two workers."""

    def __init__(self, tmp_path_factory):
        super().__init__()
        self._tmp = tmp_path_factory

    def __missing__(self, backend):
        device = DEVICE[backend]
        folder = self._tmp.mktemp(f"demo_{backend}")
        argv = ["--size", "smoke", "--backend", backend, "--no-progress"]
        argv += ["--output", str(folder)]
        if device != "PCM":  # the default
            argv += ["--device", device]
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            rows = demo.main(argv)
        self[backend] = (rows, stdout.getvalue(), stderr.getvalue(), folder)
        return self[backend]


@pytest.fixture(scope="session")
def runs(tmp_path_factory):
    """``main`` at the smoke size, once per backend (see :class:`_Runs`)."""
    return _Runs(tmp_path_factory)


def _on(backend: str):
    """The tests of one backend's run share a worker (``xdist_group``): the run is
    made once per backend and session, and tests/conftest.py runs each group first,
    together, on one of the xdist workers."""
    return pytest.mark.xdist_group(f"demo_{backend}")


BACKENDS = [pytest.param(b, marks=_on(b)) for b in DEVICE]


def test_help_documents_the_options():
    out = subprocess.run(
        [sys.executable, "-m", "ppl_hw.demo", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for option in (
        "--backend",
        "--size",
        "--device",
        "--chips",
        "--steps",
        "--num-samples",
        "--seed",
        "--output",
        "--no-progress",
    ):
        assert option in out
    text = " ".join(out.split())  # argparse wraps the lines
    for word in ("numpyro", "pyro", "both", "smoke", "default", *DEVICES):
        assert f"'{word}'" in text
    for words in ("crossbar", "1 s, 1 day, 1 year", ACCURACY_VS_TIME, RELIABILITY):
        assert words in text


@pytest.mark.parametrize("backend", BACKENDS)
def test_smoke_run_prints_and_writes_the_table(runs, backend):
    rows, printed, stderr, folder = runs[backend]
    device = DEVICE[backend]
    assert [(r.backend, r.method) for r in rows] == [
        (backend, m) for m in _methods(device)
    ]
    assert (
        "| backend | method | test accuracy | NLL | ECE | sparsity | KL (bits) |"
        " bits/weight | size (bytes) | time (s) |" in printed
    )
    assert f"device={device}, chips={CHIPS}" in printed
    assert "| generator | samples | bandwidth | mean | variance |" in printed
    for gen in ("gaussian_noise", "uniform_noise", "mtj_noise", "pcm_read_noise"):
        assert f"| {gen} |" in printed
    # the output folder's path is printed last
    assert printed.rstrip().endswith(str(folder.resolve()))
    # --no-progress: no progress bar of the SVI, SGHMC or ternary training
    assert "it/s" not in stderr and "s/it" not in stderr
    saved = json.loads((folder / "results.json").read_text())
    assert saved["config"]["size"] == "smoke"
    assert saved["config"]["device"] == device
    assert saved["rows"] == [row_dict(r) for r in rows]
    assert all("probs" not in r for r in saved["rows"])
    assert len(saved["noise"]) == 4
    for r in saved["noise"]:
        # the exact affine standardisation of EmpiricalNoise
        assert abs(r["mean"]) < 1e-9 and abs(r["variance"] - 1) < 1e-9
    assert "## Digits BNN" in (folder / "results.md").read_text()
    for r in rows:
        # 300 SVI steps already separate the digits far above chance (10 %)
        assert r.accuracy > 0.5 and r.nll > 0 and 0 <= r.ece <= 1
        # a deployed row keeps the predictions of each of its chips
        chips = () if r.deployed is None else (CHIPS,)
        assert r.probs.shape == (*chips, 450, 10)
        assert r.chips == (None if r.deployed is None else CHIPS)
    sparsity = [r.sparsity for r in rows if "SpikeAndSlab prior" in r.method]
    assert all(0 < s < 1 for s in sparsity)
    # the kernel's share of pruned weights: at Ke & Fan's temperature the single-weight
    # pruning removes 27-30 % at the smoke size (seeds 0-2, both backends; > 50 % at the
    # default size); the old set-up (temperature 1, input-pixel groups) pruned 0 %
    assert all(0.1 < r.sparsity < 1 for r in rows if r.method.startswith("SGHMC"))
    (ternary,) = [r for r in rows if r.method == TERNARY_METHOD]
    # the most probable ternary network: ~95 % after 75 steps, p0 = 0.5 priors switch
    # most weights to 0, log2(3) bits per weight
    assert ternary.accuracy > 0.8 and 0 < ternary.sparsity < 1
    assert ternary.bits_per_weight == pytest.approx(math.log2(3))
    assert "| 1.58 |" in printed
    for r in rows:
        if r.method not in (TERNARY_METHOD, CODED):
            assert r.bits_per_weight is None and r.size_bytes is None
        if r.method == CODED:
            continue
        if r.method == MEANKL:
            # recomputed in float64 from the guide's (mu, sigma): the budget holds
            # by construction, up to float32 rounding of the parameters
            assert r.kl_bits == pytest.approx(DEMO_KL_BUDGET_BITS, rel=1e-4)
        elif r.method in ("AutoNormal", "AutoDeviceNoise, MTJ shape"):
            assert r.kl_bits > 0
        else:
            assert r.kl_bits is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_meankl_blocks_are_coded_with_the_margin(runs, backend):
    rows, printed, _, _ = runs[backend]
    by_method = {r.method: r for r in rows}
    coded, guide = by_method[CODED], by_method[MEANKL]
    # the guide's budget split over ceil(20 000 / 8) = 2 500 blocks of 8 bits of KL,
    # each coded with 8 + 2 index bits: 25 000 index bits for the 8 970 weights
    total = coded.bits_per_weight * 8_970
    blocks = math.ceil(DEMO_KL_BUDGET_BITS / BITS)
    assert total == pytest.approx(blocks * (BITS + CODING_MARGIN_BITS))
    # header, coding distribution and checksum on top of the index bytes
    assert coded.size_bytes > total / 8
    assert f"| {coded.size_bytes:,} |" in printed
    assert coded.sparsity is None and coded.kl_bits is None
    # one posterior sample, decoded: a little below the posterior predictive (an
    # average of 20 samples); ~90 % against ~97 % at the smoke size
    assert guide.accuracy - 0.15 < coded.accuracy <= guide.accuracy + 0.02


@_on("pyro")
def test_deployed_rows_on_the_ideal_device_equal_the_posterior(runs):
    rows = runs["pyro"][0]
    offchip = {r.method: r for r in rows if r.deployed is None}
    deployed = [r for r in rows if r.deployed is not None]
    assert [r.deployed for r in deployed] == [m for m in DEPLOYED for _ in range(3)]
    for r in deployed:
        assert r.device == "Ideal" and r.read_time in DEPLOY_TIMES.values()
        # the same posterior samples, and the ideal chips change nothing
        for probs in r.probs:
            np.testing.assert_array_equal(probs, offchip[r.deployed].probs)
        assert (r.accuracy, r.nll, r.ece) == (
            offchip[r.deployed].accuracy,
            offchip[r.deployed].nll,
            offchip[r.deployed].ece,
        )
        assert (r.accuracy_sd, r.nll_sd, r.ece_sd) == (0.0, 0.0, 0.0)


@_on("numpyro")
def test_deployed_rows_on_pcm_drift_away_from_the_posterior(runs):
    rows, printed = runs["numpyro"][:2]
    offchip = {r.method: r for r in rows if r.deployed is None}
    for method in DEPLOYED:
        deployed = [r for r in rows if r.deployed == method]
        assert [r.read_time for r in deployed] == list(DEPLOY_TIMES.values())
        assert all(r.device == "PCM" and r.kl_bits is None for r in deployed)
        # programming noise, drift and read noise change the predictions, chip by
        # chip; the NLL grows with the drift from 1 s to 1 year
        for r in deployed:
            assert r.chips == CHIPS and not np.array_equal(r.probs[0], r.probs[1])
            assert not np.array_equal(r.probs[0], offchip[method].probs)
            assert r.accuracy > 0.8 and r.nll_sd > 0 and r.ece_sd > 0
            # the mean and sd over the chips, each scored on its own predictions
            nll = [metrics.nll(p, load_digits().y_test) for p in r.probs]
            assert r.nll == pytest.approx(np.mean(nll), rel=1e-12)
            assert r.nll_sd == pytest.approx(np.std(nll, ddof=1), rel=1e-9)
        assert deployed[-1].nll > deployed[0].nll
        # printed as mean ± sd over the chips
        (line,) = [
            ln for ln in printed.splitlines() if f"| {deployed[0].method} |" in ln
        ]
        assert f"| {100 * deployed[0].accuracy:.1f} ± " in line
        assert f"| {deployed[0].nll:.3f} ± {deployed[0].nll_sd:.3f} |" in line


@pytest.mark.parametrize("backend", BACKENDS)
def test_figures_are_written(runs, backend):
    folder = runs[backend][3]
    for name in (ACCURACY_VS_TIME, RELIABILITY):
        data = (folder / name).read_bytes()
        assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 20_000


def _plotted_errorbars(fig) -> dict:
    """``{gid: (x, y, lower, upper)}`` of the figure's error bars, read back from
    the drawn artists (the data line and the bar segments)."""
    out = {}
    for ax in fig.axes:
        for c in ax.containers:
            line, _, (bars,) = c.lines
            segments = np.asarray(bars.get_segments())
            out[line.get_gid()] = (
                np.asarray(line.get_xdata(), dtype=float),
                np.asarray(line.get_ydata(), dtype=float),
                segments[:, 0, 1],
                segments[:, 1, 1],
            )
    return out


@pytest.mark.parametrize("backend", BACKENDS)
def test_plotted_means_and_bars_are_the_tables(runs, backend):
    """The accuracy-vs-time figure's points are the table's mean accuracies and its
    bars ± the table's standard deviations over the chips, on one y-axis for both
    backends' panels."""
    rows = runs[backend][0]
    fig = accuracy_vs_time_figure(rows)
    plotted = _plotted_errorbars(fig)
    assert len(plotted) == len(DEPLOYED)
    for method in DEPLOYED:
        deployed = sorted(
            (r for r in rows if r.deployed == method), key=lambda r: r.read_time
        )
        assert all(r.chips == CHIPS for r in deployed)
        x, y, low, high = plotted[f"{backend}|{method}"]
        mean = np.array([100 * r.accuracy for r in deployed])
        sd = np.array([100 * r.accuracy_sd for r in deployed])
        np.testing.assert_array_equal(x, [r.read_time for r in deployed])
        np.testing.assert_allclose(y, mean, rtol=0, atol=1e-12)
        np.testing.assert_allclose(low, mean - sd, rtol=0, atol=1e-12)
        np.testing.assert_allclose(high, mean + sd, rtol=0, atol=1e-12)


def test_panels_share_one_y_axis_and_reliability_has_a_panel_per_method():
    """Synthetic rows (two backends, two methods, one deployed): the accuracy
    panels share their y-axis; the reliability figure has one visible panel per
    off-chip method and backend, each bin point labelled with its count."""
    from ppl_hw.demo._common import Row

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=200)
    probs = rng.dirichlet(np.ones(3), size=200)
    rows = []
    for backend, shift in (("numpyro", 0.0), ("pyro", 0.2)):
        for method in ("A", "B"):
            rows.append(Row(backend, method, 0.5 + shift, 1.0, 0.1, 1.0, probs=probs))
        for t, label in ((1.0, "1 s"), (86_400.0, "1 day")):
            rows.append(
                Row(
                    backend,
                    f"A on PCM, t = {label}",
                    0.4 + shift,
                    1.0,
                    0.1,
                    1.0,
                    deployed="A",
                    device="PCM",
                    read_time=t,
                    chips=5,
                    accuracy_sd=0.01,
                    probs=np.stack([probs] * 5),
                )
            )
    fig = accuracy_vs_time_figure(rows)
    left, right = fig.axes
    assert left.get_ylim() == right.get_ylim()
    assert left.get_shared_y_axes().joined(left, right)
    fig = reliability_figure(rows, labels)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == [
        "numpyro: A",
        "numpyro: B",
        "pyro: A",
        "pyro: B",
    ]
    *_, count = reliability_bins(probs, labels)
    keep = count >= MIN_BIN_COUNT
    texts = sorted(int(t.get_text()) for t in panels[1].texts)
    assert texts == sorted(int(n) for n in count[keep])
    assert len(panels[0].get_lines()) == 1 + 2 + 1  # off-chip, 2 read times, diagonal


@_on("numpyro")
def test_reliability_bins_are_those_of_the_ece(runs):
    labels = load_digits().y_test
    for r in runs["numpyro"][0]:
        # a deployed row's ECE is the mean of its chips' ECEs
        eces = []
        for probs in [r.probs] if r.deployed is None else r.probs:
            conf, acc, count = reliability_bins(probs, labels)
            assert conf.shape == acc.shape == count.shape == (15,)
            assert count.sum() == labels.size
            full = count > 0
            eces.append(
                np.sum(count[full] / labels.size * np.abs(acc[full] - conf[full]))
            )
        assert np.mean(eces) == pytest.approx(r.ece, abs=1e-12)


@pytest.mark.parametrize(
    "argv",
    [
        ["--steps", "0"],
        ["--chips", "0"],
        ["--backend", "tensorflow"],
        ["--device", "GPU"],
    ],
)
def test_bad_options_exit_with_usage(argv):
    with pytest.raises(SystemExit) as err:
        demo.main(argv)
    assert err.value.code == 2
