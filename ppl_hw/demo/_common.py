"""Rows, configuration and evaluation shared by the demo's jobs."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields

import numpy as np

from .. import devices, metrics
from ..common.sghmc import ke_fan_temperature
from ..core.device import Device
from ..core.gaussian import kl_location_scale_normal
from ..datasets import Split

__all__ = [
    "BACKENDS",
    "CODING_BITS_PER_BLOCK",
    "CODING_MARGIN_BITS",
    "DEMO_KL_BUDGET_BITS",
    "DEPLOY_CHIPS",
    "DEPLOY_TIMES",
    "DEVICES",
    "GAUSSIAN_ENTROPY",
    "SGHMC_BATCH",
    "SGHMC_HARD_THRESHOLD",
    "SGHMC_STEP_SIZE",
    "SGHMC_TEMPERATURE",
    "SIZES",
    "SPIKE_AND_SLAB",
    "TERNARY_KL_WEIGHT",
    "TERNARY_METHOD",
    "DemoConfig",
    "NoiseRow",
    "Row",
    "coded_method",
    "coded_row",
    "deploy",
    "deploy_method",
    "deployment_rows",
    "evaluate",
    "kl_bits",
    "meankl_method",
    "row_dict",
    "sghmc_em_settings",
    "sghmc_method",
    "ternary_steps",
    "zero_share",
]

SIZES = {
    # name: (SVI steps, learning rate, posterior predictive samples, noise samples)
    "smoke": (300, 1e-2, 20, 2_000),
    "default": (1000, 1e-2, 100, 20_000),
}
"""Run sizes of the demo: ``(svi_steps, learning_rate, num_samples, noise_samples)``.
The SGHMC row takes ``svi_steps`` warm-up and ``svi_steps`` sampling steps, the
ternary row :func:`ternary_steps`. ``"default"`` takes about 4 minutes for both
backends on 2 CPU cores with nothing else running (``make demo``, once installed:
217, 225 and 228 s in three runs, 2026-12-07): 1 000 steps reach the accuracies of
2 000 (within ±1 point, the backends' spread) at about half the time; ``"smoke"``
takes about 1.5 minutes."""

BACKENDS = ("numpyro", "pyro")

DEPLOY_TIMES = {"1 s": 1.0, "1 day": 86_400.0, "1 year": 31_536_000.0}
"""Times since programming (seconds) at which the demo reads the crossbar."""

DEPLOY_CHIPS = {"smoke": 2, "default": 5}
"""Simulated chips (seeds ``seed``, ``seed + 1``, ...) each deployed posterior is
evaluated on, per run size (``--chips`` overrides): a deployed row is the mean over
them, with their standard deviation."""

DEVICES: dict[str, Callable[[], Device]] = {
    "PCM": devices.PCM,
    "RRAM": devices.RRAM,
    # binary cells: the real-valued weights are binarised, sign(w) * mean|w| per site
    "MTJ": lambda: devices.MTJ(binarize=True),
    "Ideal": devices.Ideal,
}
"""The crossbar devices of ``--device`` (the presets of :mod:`ppl_hw.devices`)."""


def deploy_method(method: str, device: str, label: str) -> str:
    """The method name of a deployed row: the off-chip method's name up to its first
    comma, the device and the read time, e.g. ``"AutoNormal on PCM, t = 1 day"``."""
    return f"{method.split(',')[0]} on {device}, t = {label}"


def meankl_method(bits_per_block: int) -> str:
    """The method name of the demo's ``AutoMeanKL`` row."""
    return (
        f"AutoMeanKL, {DEMO_KL_BUDGET_BITS:,.0f}-bit budget "
        f"in {bits_per_block}-bit blocks"
    )


SPIKE_AND_SLAB = (0.5, 0.05, 1.0)
"""The demo's spike-and-slab weight prior: slab weight, spike scale, slab scale."""

# SGHMC + SpikeSlabEM: step size on the potential, minibatch, EM/pruning settings;
# cfg.steps warm-up steps then cfg.steps sampling steps, thinned to 100 draws
SGHMC_STEP_SIZE = 1e-4
SGHMC_BATCH = 128
SGHMC_HARD_THRESHOLD = 4e-3
SGHMC_TEMPERATURE = ke_fan_temperature(num_data=1, c2=0.01, t=1.0)
"""The SGHMC row's posterior temperature, Ke & Fan's tempering: their noise scale
:math:`T = N^{-1/2}` at :math:`C^2 = 0.01`, :math:`\\beta_1 = 0.1` and
:math:`\\beta_2 = 1` (their defaults), mapped as ``SGHMC.ke_fan`` maps them:
:math:`(2 + 2\\beta_1^2) C T^2 N / (2(1-\\beta_1)\\beta_2) = 0.1122` for any
:math:`N` (written here with :math:`N = 1`, :math:`T = 1`). The step size stays the
demo's own: ``ke_fan``'s :math:`\\epsilon = C^2/N = 7.4 \\cdot 10^{-6}` trains the
digits network to only 65 % in 2 000 steps."""


def sghmc_method(temperature: float) -> str:
    """The method name of the demo's SGHMC row."""
    return f"SGHMC + SpikeSlabEM, temperature {temperature:.2f}"


def sghmc_em_settings(num_train: int, steps: int) -> dict:
    """``SpikeSlabEM`` arguments of the demo: the EM once per epoch from half-way
    through the warm-up, posterior E-step, hard pruning of single weights
    (``groups=None``: on the digits every input pixel's group of 64 weights keeps
    some slab weights, so grouped pruning removes none)."""
    return dict(
        every=num_train // SGHMC_BATCH,
        warmup=steps // 2,
        hard_threshold=SGHMC_HARD_THRESHOLD,
        groups=None,
    )


DEMO_KL_BUDGET_BITS = 20_000.0
"""``AutoMeanKL``'s KL budget in the demo (bits; ~2.3 bits per weight of 64-64-10)."""

CODING_BITS_PER_BLOCK = {"smoke": 8, "default": 10}
"""KL bits per MIRACLE coding block of the demo's ``AutoMeanKL`` network, per run
size: the guide splits its budget over ``ceil(budget / bits)`` blocks
(``budget_split="blocks"``; 2 000 blocks at the default size)."""

CODING_MARGIN_BITS = 2
"""Index bits above each block's KL with which :func:`ppl_hw.coding.encode` codes the
demo's network: ``2**(bits + 2)``, four times the ``2**bits`` candidates the block's KL
asks for. Without a margin the chosen candidate leans towards the prior and the decoded
network lands at the bottom of (or below) its posterior samples' accuracies after the
demo's short training: 12-bit blocks coded with 12 bits decoded below the samples'
5-95 % range at 1 of 3 seeds on the MLP and on a small conv net (NumPyro), 10-bit
blocks coded with 12 bits inside at 3 of 3 on both, and on Pyro's MLP
(``docs/coding.md``, "Give the sampler a margin"). ``2**12`` candidates per block take
~2 s for the 64-64-10 net's 2 000 blocks (NumPy), ``2**16`` ~90 s."""


def coded_row(
    backend: str, kl_bits: int, compressed, probs, data, seconds: float
) -> Row:
    """The row of a MIRACLE-coded network (``kl_bits`` of KL per block): its decoded
    accuracy, NLL and ECE, bits per weight and file size."""
    report = compressed.report()
    return evaluate(
        backend,
        coded_method(kl_bits, compressed.bits_per_block),
        probs,
        data,
        seconds,
        bits_per_weight=report["bits_per_weight"],
        size_bytes=report["file_bytes"],
    )


def coded_method(kl_bits: int, index_bits: int) -> str:
    """The method name of the demo's MIRACLE-coded ``AutoMeanKL`` row."""
    return (
        f"AutoMeanKL, MIRACLE-coded, {kl_bits}-bit blocks in {index_bits}-bit indices"
    )


TERNARY_KL_WEIGHT = 0.1
"""``PFP_ELBO``'s KL weight for the ternary network (the paper's code trains with a
small one)."""


def ternary_steps(steps: int) -> int:
    """SVI steps of the ternary network: a quarter of the other rows' (250 at the
    default size, 75 at the smoke size). Its PFP step costs several AutoNormal steps of
    the 64-64-10 net, and the most probable network is at 95-96 % after 75-500 steps
    (longer training only sharpens the distribution and raises the NLL)."""
    return max(steps // 4, 1)


TERNARY_METHOD = "AutoDiscreteWeight, ternary 64-256-256-10"
"""The ternary network's row: ``ternary_mlp_classifier`` (DiscreteWeight priors,
p0 = 0.5, sign activations, batch norm) trained with ``PFP_ELBO``; its most probable
network is evaluated."""

GAUSSIAN_ENTROPY = 0.5 * math.log(2 * math.pi * math.e)
"""Differential entropy (nats) of the standard Normal."""


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run (see ``python -m ppl_hw.demo --help``)."""

    backends: tuple[str, ...] = BACKENDS
    size: str = "default"
    steps: int = SIZES["default"][0]
    learning_rate: float = SIZES["default"][1]
    num_samples: int = SIZES["default"][2]
    noise_samples: int = SIZES["default"][3]
    seed: int = 0
    progress: bool = True
    device: str = "PCM"
    chips: int = DEPLOY_CHIPS["default"]


@dataclass(frozen=True)
class Row:
    """One line of the demo's main table.

    ``sparsity`` is the share of weights the method switches off (for the
    spike-and-slab prior: weights whose posterior slab probability is below 0.5; for
    the ternary network: its most probable weights equal to 0), ``None`` where it
    does not apply; ``kl_bits`` is the KL divergence (bits) of the
    posterior to the model's ``Normal(0, 1)`` priors, ``None`` where the guide has no
    closed form for it; ``bits_per_weight`` is the storage of one weight of the
    exported low-precision network (ternary: ``log2 3`` = 1.58; MIRACLE-coded: the
    index bits over the number of weights), ``None`` for the real-valued posteriors;
    ``size_bytes`` is the size of the coded network's file
    (:meth:`ppl_hw.coding.CompressedModel.save`: header, coding distribution, indices,
    checksum), ``None`` for the other rows. A deployed row (the posterior of the
    off-chip row ``deployed`` run on ``chips`` simulated crossbars of ``device``, read
    ``read_time`` seconds after programming, by a deployment sweep) has these four
    set, the others ``None``; its accuracy, NLL and ECE are the means over the chips,
    and ``accuracy_sd``, ``nll_sd`` and ``ece_sd`` their standard deviations over the
    chips (``ddof=1``; ``None`` for one chip and for the off-chip rows).
    ``probs`` holds the test set's predictive class probabilities, shape ``(N, C)``;
    for a deployed row one array per chip, ``(chips, N, C)`` (for the figures; not
    written to JSON, see :func:`row_dict`).
    """

    backend: str
    method: str
    accuracy: float
    nll: float
    ece: float
    seconds: float
    sparsity: float | None = None
    kl_bits: float | None = None
    bits_per_weight: float | None = None
    size_bytes: int | None = None
    deployed: str | None = None
    device: str | None = None
    read_time: float | None = None
    chips: int | None = None
    accuracy_sd: float | None = None
    nll_sd: float | None = None
    ece_sd: float | None = None
    probs: np.ndarray | None = field(default=None, repr=False, compare=False)


def row_dict(row: Row) -> dict:
    """The row as a JSON-ready dict, without its predictive probabilities."""
    return {f.name: getattr(row, f.name) for f in fields(row) if f.name != "probs"}


@dataclass(frozen=True)
class NoiseRow:
    """One noise generator as fitted by ``EmpiricalNoise``: its standardised moments
    and entropy (nats)."""

    generator: str
    num_samples: int
    bandwidth: float
    mean: float
    variance: float
    skewness: float
    kurtosis: float
    entropy: float


def kl_bits(
    loc_scale: Iterable[tuple[object, object]], entropy: float = GAUSSIAN_ENTROPY
) -> float:
    """KL (bits, summed in float64) of the mean-field posterior ``loc + scale * e``
    (``e`` of entropy ``entropy``: the Gaussian's by default) to ``Normal(0, 1)``
    priors, from its per-site ``(loc, scale)`` arrays."""
    total = 0.0
    for loc, scale in loc_scale:
        loc, scale = (np.asarray(a, dtype=np.float64) for a in (loc, scale))
        total += float(
            np.sum(kl_location_scale_normal(loc, scale, entropy, 0.0, 1.0, xp=np))
        )
    return total / math.log(2)


def zero_share(sparsity: dict, sizes: dict) -> float:
    """The overall share of zero weights: per-site shares ``sparsity`` (as
    ``AutoDiscreteWeight.sparsity`` returns them) weighted by the sites' sizes."""
    total = sum(sizes[k] for k in sparsity)
    return sum(s * sizes[k] for k, s in sparsity.items()) / total


def evaluate(
    backend: str,
    method: str,
    probs,
    data: Split,
    seconds: float,
    sparsity=None,
    kl_bits: float | None = None,
    bits_per_weight: float | None = None,
    size_bytes: int | None = None,
) -> Row:
    """Test accuracy, NLL and ECE of predictive probabilities, as a :class:`Row`
    (which keeps the probabilities)."""
    probs = np.asarray(probs, dtype=np.float64)
    return Row(
        backend=backend,
        method=method,
        accuracy=metrics.accuracy(probs, data.y_test),
        nll=metrics.nll(probs, data.y_test),
        ece=metrics.expected_calibration_error(probs, data.y_test),
        seconds=seconds,
        sparsity=None if sparsity is None else float(sparsity),
        kl_bits=kl_bits,
        bits_per_weight=bits_per_weight,
        size_bytes=size_bytes,
        probs=probs,
    )


def deployment_rows(
    backend: str,
    sweep,
    data: Split,
    cfg: DemoConfig,
    seconds: float,
    kl_bits: float | None = None,
) -> tuple[Row, list[Row]]:
    """The off-chip row and the deployed rows (one per read time: mean and standard
    deviation over the chips) of a deployment sweep (``include_clean`` and
    ``keep_predictions``, times ``DEPLOY_TIMES``) labelled with the off-chip
    method's name. ``seconds`` is the time of the sweep and of the training before
    it: the off-chip row takes it less the deployed cells' own times."""
    cells = sweep.rows[1:]
    method = sweep.rows[0]["label"]
    offchip = evaluate(
        backend,
        method,
        sweep.predictions[0],
        data,
        seconds - sum(r["seconds"] for r in cells),
        kl_bits=kl_bits,
    )
    summary = {g["t"]: g for g in sweep.summary()}
    deployed = []
    for label, t in DEPLOY_TIMES.items():
        mine = [i for i, r in enumerate(sweep.rows) if r["t"] == t]
        g = summary[t]

        def sd(metric: str, g=g) -> float | None:
            return None if g["n"] < 2 else g[f"{metric}_sd"]

        deployed.append(
            Row(
                backend=backend,
                method=deploy_method(method, cfg.device, label),
                accuracy=g["accuracy_mean"],
                nll=g["nll_mean"],
                ece=g["ece_mean"],
                seconds=sum(sweep.rows[i]["seconds"] for i in mine),
                deployed=method,
                device=cfg.device,
                read_time=t,
                chips=g["n"],
                accuracy_sd=sd("accuracy"),
                nll_sd=sd("nll"),
                ece_sd=sd("ece"),
                probs=np.stack([sweep.predictions[i] for i in mine]),
            )
        )
    return offchip, deployed


def deploy(
    backend: str,
    deployment_sweep: Callable,
    model,
    guide,
    method: str,
    data: Split,
    cfg: DemoConfig,
    start: float,
    kl_bits: float | None = None,
    **extra,
) -> tuple[Row, list[Row]]:
    """The off-chip row and the deployed rows of a trained posterior, from one
    ``deployment_sweep`` (the backend's, given ``extra`` arguments such as NumPyro's
    ``params``) on the test set: ``cfg.chips`` chips of ``cfg.device`` from seed
    ``cfg.seed``, read at ``DEPLOY_TIMES``, with the off-chip row and the predictions
    kept for the figures. ``start`` is when the training started (the off-chip
    row's time runs from there)."""
    sweep = deployment_sweep(
        model,
        guide,
        data.x_test,
        data.y_test,
        device=DEVICES[cfg.device](),
        times=list(DEPLOY_TIMES.values()),
        chips=cfg.chips,
        num_samples=cfg.num_samples,
        seed=cfg.seed,
        rng_seed=cfg.seed + 1,
        label=method,
        keep_predictions=True,
        **extra,
    )
    seconds = time.perf_counter() - start
    return deployment_rows(backend, sweep, data, cfg, seconds, kl_bits)
