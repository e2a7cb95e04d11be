"""The main job: what ppl_hw does, on the digits data, on both backends.

Run it with ``make demo`` or ``python -m ppl_hw.demo`` (``--help`` lists the
options: ``--backend numpyro|pyro|both``, ``--size smoke|default``, ``--device
PCM|RRAM|MTJ|Ideal``, ``--chips N``, ``--output FOLDER``, ``--no-progress``; the
default size takes
about 4 minutes for both backends on 2 CPU cores with nothing else running: the
median of three ``make demo`` runs was 225 s). It

* fits each device-noise generator of :mod:`ppl_hw.devices` with ``EmpiricalNoise``
  and prints the fitted shape's standardised moments and entropy;
* trains the Bayesian MLP 64-64-10 on the digits (1 000 full-batch Adam steps at the
  default size) with ``TraceMeanField_ELBO`` on NumPyro and on Pyro: ``AutoNormal``
  with Normal(0, 1) priors and with ``SpikeAndSlab(0.5, 0.05, 1.0)`` weight priors,
  ``AutoMeanKL`` (a 20 000-bit KL budget split over MIRACLE's coding blocks,
  ``budget_split="blocks"``: every block's KL fixed by construction) and
  ``AutoDeviceNoise`` (the MTJ noise shape), and samples it with ``SGHMC`` +
  ``SpikeSlabEM`` (spike-and-slab priors, minibatches of 128, at Ke & Fan's
  temperature 0.11, pruning single weights), with progress bars;
* codes the trained ``AutoMeanKL`` network with MIRACLE (``ppl_hw.coding.encode``
  on the guide's own blocks, 10 bits of KL each, 8 at the smoke size, coded with a
  2-bit margin: 12-bit indices, 10 at the smoke size; one posterior sample),
  decodes it and evaluates the decoded network;
* trains the ternary network 64-256-256-10 (``ternary_mlp_classifier``:
  ``DiscreteWeight`` priors with p0 = 0.5, sign activations, batch norm) with
  ``AutoDiscreteWeight`` and ``PFP_ELBO(kl_weight=0.1)`` on both backends and
  evaluates its most probable network;
* deploys the real-valued posteriors (``AutoNormal``, ``AutoMeanKL``,
  ``AutoDeviceNoise``) on ``--chips`` simulated crossbar chips of ``--device``
  (default ``PCM``; 5 chips, 2 at the smoke size) read 1 s, 1 day and 1 year after
  programming, with one deployment sweep per posterior
  (``ppl_hw.numpyro.deploy.deployment_sweep``: ``crossbar(..., device=...,
  seed=seed + i)`` for chip ``i``), with the same posterior samples as off-chip (on
  ``Ideal`` the deployed rows equal the off-chip ones); a deployed row is the mean
  over the chips, ± their standard deviation;
* prints one table (backend, method, test accuracy, NLL, ECE, sparsity, KL to the
  prior in bits, bits per weight, size in bytes, time), where sparsity is the share
  of weights whose posterior slab probability (at the posterior median) is below 0.5
  for the spike-and-slab row, the share of weights pruned for the SGHMC row and the
  share of zero weights of the most probable ternary network, bits per weight is the
  storage of one weight of the exported ternary network (log2 3 = 1.58) and of the
  MIRACLE-coded network (its index bits over the number of weights; blank for the
  real-valued posteriors), and size is the coded network's file in bytes;

and writes the table (``results.md``, ``results.json``) and two figures drawn from
the rows' test-set predictive probabilities (``accuracy_vs_time.png``: accuracy of
each deployed posterior against the read time, its mean over the chips with ± one
sd as error bars, off-chip accuracy as reference, both backends on one y-axis;
``reliability.png``: reliability diagrams in the ECE's 15 confidence bins, one
panel per off-chip method and backend with its deployed read times, each bin
labelled with its count) to an
output folder (``demo_output`` by default) whose path it prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..datasets import load_digits
from ._common import (
    BACKENDS,
    CODING_BITS_PER_BLOCK,
    DEPLOY_CHIPS,
    DEPLOY_TIMES,
    DEVICES,
    SIZES,
    DemoConfig,
    NoiseRow,
    Row,
    row_dict,
    ternary_steps,
)
from ._figures import ACCURACY_VS_TIME, RELIABILITY, accuracy_vs_time, reliability
from ._noise import noise_rows

__all__ = [
    "DEVICES",
    "SIZES",
    "DemoConfig",
    "NoiseRow",
    "Row",
    "format_noise_table",
    "format_table",
    "main",
    "run",
    "write_outputs",
]


def _jobs(backend: str):
    if backend == "numpyro":
        from ._numpyro import JOBS
    else:
        from ._pyro import JOBS
    return JOBS


_TITLES = {
    "autonormal": "AutoNormal, then deployed on the crossbar",
    "spike_and_slab": "AutoNormal with spike-and-slab priors",
    "meankl": "AutoMeanKL, MIRACLE-coded, then deployed on the crossbar",
    "device_noise": "AutoDeviceNoise, then deployed on the crossbar",
    "sghmc": "SGHMC + SpikeSlabEM: warm-up, then sampling",
    "ternary": "ternary network, PFP",
}


def run(cfg: DemoConfig) -> tuple[list[NoiseRow], list[Row]]:
    """Run the demo for ``cfg``: the noise-shape rows and the main table's rows.
    With ``cfg.progress``, each job's title goes to stderr above its progress bars."""
    noise = noise_rows(cfg)
    data = load_digits()
    rows = []
    for backend in cfg.backends:
        for job in _jobs(backend):
            if cfg.progress:
                title = _TITLES.get(job.__name__, job.__name__)
                print(f"[{backend}] {title}", file=sys.stderr, flush=True)
            rows.extend(job(data, cfg))
    return noise, rows


def _spread(mean: float, sd: float | None, fmt: str, scale: float = 1.0) -> str:
    text = f"{scale * mean:{fmt}}"
    return text if sd is None else f"{text} ± {scale * sd:{fmt}}"


def format_table(rows: Sequence[Row]) -> str:
    """The main table as Markdown (a deployed row on several chips: mean ± standard
    deviation over the chips)."""
    lines = [
        "| backend | method | test accuracy | NLL | ECE | sparsity | KL (bits) "
        "| bits/weight | size (bytes) | time (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        sparsity = "—" if r.sparsity is None else f"{100 * r.sparsity:.1f} %"
        kl = "—" if r.kl_bits is None else f"{r.kl_bits:,.0f}"
        bits = "—" if r.bits_per_weight is None else f"{r.bits_per_weight:.2f}"
        size = "—" if r.size_bytes is None else f"{r.size_bytes:,}"
        lines.append(
            f"| {r.backend} | {r.method} "
            f"| {_spread(r.accuracy, r.accuracy_sd, '.1f', 100)} % "
            f"| {_spread(r.nll, r.nll_sd, '.3f')} | {_spread(r.ece, r.ece_sd, '.3f')} "
            f"| {sparsity} | {kl} | {bits} | {size} "
            f"| {r.seconds:.1f} |"
        )
    return "\n".join(lines)


def format_noise_table(rows: Sequence[NoiseRow]) -> str:
    """The noise-shape table as Markdown."""
    lines = [
        "| generator | samples | bandwidth | mean | variance | skewness | kurtosis "
        "| entropy H0 (nats) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.generator} | {r.num_samples} | {r.bandwidth:.3f} | {r.mean:.1e} "
            f"| {r.variance:.6f} | {r.skewness:.3f} | {r.kurtosis:.3f} "
            f"| {r.entropy:.4f} |"
        )
    lines.append("")
    lines.append(
        "(a Gaussian has skewness 0, kurtosis 3 and H0 = 1.4189 nats, the largest)"
    )
    return "\n".join(lines)


def _size_help() -> str:
    parts = []
    for name, (steps, _, samples, _) in SIZES.items():
        parts.append(
            f"'{name}': {steps} SVI and SGHMC steps, {ternary_steps(steps)} ternary "
            f"steps, {samples} predictive samples, {CODING_BITS_PER_BLOCK[name]}-bit "
            f"MIRACLE blocks, {DEPLOY_CHIPS[name]} chips"
        )
    return (
        "run size (default: default). "
        + "; ".join(parts)
        + ". 'smoke' is a check (about 1.5 minutes for both backends), 'default' the "
        "real run (about 4 minutes for both backends on 2 idle CPU cores)"
    )


def _parser() -> argparse.ArgumentParser:
    times = ", ".join(DEPLOY_TIMES)
    p = argparse.ArgumentParser(
        prog="python -m ppl_hw.demo",
        description=(
            "ppl_hw's main job, on the digits data: device-noise shapes fitted by "
            "EmpiricalNoise; the Bayesian MLP 64-64-10 with AutoNormal (Normal and "
            "spike-and-slab priors), AutoMeanKL (MIRACLE-coded too), AutoDeviceNoise "
            "and SGHMC + spike-and-slab EM, and the ternary PFP network "
            "64-256-256-10; the real-valued posteriors deployed on simulated "
            f"crossbar chips read at t = {times}. Prints one table (accuracy, NLL, "
            "ECE, sparsity, KL, bits per weight, compressed size) and writes it with "
            "the figures to an output folder whose path it prints."
        ),
        epilog=(
            "examples: python -m ppl_hw.demo --size smoke --backend numpyro; "
            "python -m ppl_hw.demo --device RRAM --output /tmp/demo"
        ),
    )
    p.add_argument(
        "--backend",
        choices=(*BACKENDS, "both"),
        default="both",
        help=(
            "which backend(s) to run: 'numpyro' (JAX), 'pyro' (PyTorch) or 'both', "
            "one after the other (default: both)"
        ),
    )
    p.add_argument("--size", choices=tuple(SIZES), default="default", help=_size_help())
    p.add_argument(
        "--device",
        choices=tuple(DEVICES),
        default="PCM",
        help=(
            "simulated crossbar device (a preset of ppl_hw.devices) on which the "
            "AutoNormal, AutoMeanKL and AutoDeviceNoise posteriors are deployed, "
            f"read at t = {times} after programming: 'PCM' (aihwkit's "
            "phase-change memory: programming noise, drift, read noise), 'RRAM', "
            "'MTJ' (binary cells: the real-valued weights are binarised first, "
            "sign(w) mean|w| per layer, which costs much of the accuracy) or 'Ideal' "
            "(no effect: the deployed rows equal the off-chip ones) (default: PCM)"
        ),
    )
    p.add_argument(
        "--chips",
        type=int,
        help=(
            "simulated chips (seeds --seed, --seed + 1, ...) each deployed posterior "
            "is read on; its rows show the mean ± sd over them (overrides --size's)"
        ),
    )
    p.add_argument("--steps", type=int, help="SVI and SGHMC steps (overrides --size's)")
    p.add_argument(
        "--num-samples",
        type=int,
        help="posterior predictive samples (overrides --size's)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument(
        "--output",
        type=Path,
        default=Path("demo_output"),
        help=(
            "output folder, created if needed, for the table (results.md, "
            f"results.json) and the figures ({ACCURACY_VS_TIME}, {RELIABILITY}); "
            "its path is printed at the end (default: ./demo_output)"
        ),
    )
    p.add_argument(
        "--no-progress",
        action="store_true",
        help="hide the progress bars of the SVI, SGHMC and ternary training",
    )
    return p


def write_outputs(
    out: Path,
    cfg: DemoConfig,
    noise: Sequence[NoiseRow],
    rows: Sequence[Row],
    labels,
) -> dict[str, Path]:
    """Write ``results.md``, ``results.json`` and the figures into ``out`` (created if
    needed); ``labels`` are the test labels the rows' probabilities are scored on.
    Returns the written files by name."""
    out.mkdir(parents=True, exist_ok=True)
    noise_md, table_md = format_noise_table(noise), format_table(rows)
    files = {name: out / name for name in ("results.md", "results.json")}
    files["results.md"].write_text(
        f"## Device-noise shapes\n\n{noise_md}\n\n## Digits BNN\n\n{table_md}\n"
    )
    payload = {
        "ppl_hw": __version__,
        "config": asdict(cfg),
        "noise": [asdict(r) for r in noise],
        "rows": [row_dict(r) for r in rows],
    }
    files["results.json"].write_text(json.dumps(payload, indent=2) + "\n")
    files[ACCURACY_VS_TIME] = accuracy_vs_time(rows, out / ACCURACY_VS_TIME)
    files[RELIABILITY] = reliability(rows, labels, out / RELIABILITY)
    return files


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Command-line entry point; returns the main table's rows."""
    parser = _parser()
    args = parser.parse_args(argv)
    steps, lr, num_samples, noise_samples = SIZES[args.size]
    if args.steps is not None:
        steps = args.steps
    if args.num_samples is not None:
        num_samples = args.num_samples
    chips = DEPLOY_CHIPS[args.size] if args.chips is None else args.chips
    for name, value in (
        ("--steps", steps),
        ("--num-samples", num_samples),
        ("--chips", chips),
    ):
        if value < 1:
            parser.error(f"{name} must be >= 1, got {value}")
    cfg = DemoConfig(
        backends=BACKENDS if args.backend == "both" else (args.backend,),
        size=args.size,
        steps=steps,
        learning_rate=lr,
        num_samples=num_samples,
        noise_samples=noise_samples,
        seed=args.seed,
        progress=not args.no_progress,
        device=args.device,
        chips=chips,
    )
    noise, rows = run(cfg)
    out = args.output
    write_outputs(out, cfg, noise, rows, load_digits().y_test)
    print()
    print(
        f"ppl_hw {__version__} demo, size={cfg.size}, device={cfg.device}, "
        f"chips={cfg.chips}"
    )
    print("\nDevice-noise shapes fitted by EmpiricalNoise (standardised):")
    print(format_noise_table(noise))
    print("\nDigits, Bayesian MLP 64-64-10 (ternary row: 64-256-256-10):")
    print(format_table(rows))
    print(f"\ntables and figures written to {out.resolve()}")
    return rows
