"""The main job: what ppl_hw does, on the digits data, on both backends.

Run it with ``make demo`` or ``python -m ppl_hw.demo`` (``--help`` lists the
options). It

* fits each device-noise generator of :mod:`ppl_hw.devices` with ``EmpiricalNoise``
  and prints the fitted shape's standardised moments and entropy;
* trains the Bayesian MLP 64-64-10 on the digits with ``TraceMeanField_ELBO`` on
  NumPyro and on Pyro: ``AutoNormal`` with Normal(0, 1) priors and with
  ``SpikeAndSlab(0.5, 0.05, 1.0)`` weight priors, ``AutoMeanKL`` (a 20 000-bit KL
  budget) and ``AutoDeviceNoise`` (the MTJ noise shape), and samples it with
  ``SGHMC`` + ``SpikeSlabEM`` (spike-and-slab priors, minibatches of 128);
* codes the trained ``AutoMeanKL`` network with MIRACLE (``ppl_hw.coding.encode``:
  one posterior sample in about its KL in bits, 16-bit blocks; 8 at the smoke size),
  decodes it and evaluates the decoded network;
* trains the ternary network 64-256-256-10 (``ternary_mlp_classifier``:
  ``DiscreteWeight`` priors with p0 = 0.5, sign activations, batch norm) with
  ``AutoDiscreteWeight`` and ``PFP_ELBO(kl_weight=0.1)`` on both backends and
  evaluates its most probable network;
* prints one table (backend, method, test accuracy, NLL, ECE, sparsity, KL to the
  prior in bits, bits per weight, size in bytes, time), where sparsity is the share
  of weights whose
  posterior slab probability (at the posterior median) is below 0.5 for the
  ``AutoNormal`` row, the share of weights pruned for the SGHMC row and the share of
  zero weights of the most probable ternary network, bits per weight is the
  storage of one weight of the exported ternary network (log2 3 = 1.58) and of the
  MIRACLE-coded network (its index bits over the number of weights; blank for the
  real-valued posteriors), and size is the coded network's file in bytes;
* deploys the ``AutoNormal`` posterior on a simulated PCM crossbar
  (``crossbar(..., device=PCM())``) read 1 s, 1 day and 1 year after programming;

and writes the tables, as Markdown and JSON, to an output folder whose path it prints.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from .. import __version__
from ..datasets import load_digits
from ._common import BACKENDS, SIZES, DemoConfig, NoiseRow, Row
from ._noise import noise_rows

__all__ = [
    "SIZES",
    "DemoConfig",
    "NoiseRow",
    "Row",
    "format_noise_table",
    "format_table",
    "main",
    "run",
]


def _jobs(backend: str):
    if backend == "numpyro":
        from ._numpyro import JOBS
    else:
        from ._pyro import JOBS
    return JOBS


def run(cfg: DemoConfig) -> tuple[list[NoiseRow], list[Row]]:
    """Run the demo for ``cfg``: the noise-shape rows and the main table's rows."""
    noise = noise_rows(cfg)
    data = load_digits()
    rows = [
        row
        for backend in cfg.backends
        for job in _jobs(backend)
        for row in job(data, cfg)
    ]
    return noise, rows


def format_table(rows: Sequence[Row]) -> str:
    """The main table as Markdown."""
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
            f"| {r.backend} | {r.method} | {100 * r.accuracy:.1f} % | {r.nll:.3f} "
            f"| {r.ece:.3f} | {sparsity} | {kl} | {bits} | {size} "
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


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ppl_hw.demo",
        description=(
            "ppl_hw's main job: device-noise shapes fitted by EmpiricalNoise, and a "
            "Bayesian MLP (64-64-10) on the digits data trained on NumPyro and Pyro "
            "with Normal and spike-and-slab priors and with the Mean-KL and "
            "device-noise guides, and a ternary network (64-256-256-10, PFP), and "
            "MIRACLE-codes the Mean-KL network; prints accuracy, NLL, ECE, "
            "sparsity, KL, bits per weight and the coded size."
        ),
    )
    p.add_argument(
        "--backend",
        choices=(*BACKENDS, "both"),
        default="both",
        help="which backend(s) to run (default: both)",
    )
    p.add_argument(
        "--size",
        choices=tuple(SIZES),
        default="default",
        help="run size: 'smoke' is a seconds-long check, 'default' the real run",
    )
    p.add_argument("--steps", type=int, help="SVI steps (overrides --size)")
    p.add_argument(
        "--num-samples",
        type=int,
        help="posterior predictive samples (overrides --size)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument(
        "--output",
        type=Path,
        default=Path("demo_output"),
        help="folder for the tables (results.md, results.json); default ./demo_output",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Command-line entry point; returns the main table's rows."""
    parser = _parser()
    args = parser.parse_args(argv)
    steps, lr, num_samples, noise_samples = SIZES[args.size]
    if args.steps is not None:
        steps = args.steps
    if args.num_samples is not None:
        num_samples = args.num_samples
    for name, value in (("--steps", steps), ("--num-samples", num_samples)):
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
    )
    noise, rows = run(cfg)
    noise_md, table_md = format_noise_table(noise), format_table(rows)
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(
        f"## Device-noise shapes\n\n{noise_md}\n\n## Digits BNN\n\n{table_md}\n"
    )
    payload = {
        "ppl_hw": __version__,
        "config": asdict(cfg),
        "noise": [asdict(r) for r in noise],
        "rows": [asdict(r) for r in rows],
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    print()
    print(f"ppl_hw {__version__} demo, size={cfg.size}")
    print("\nDevice-noise shapes fitted by EmpiricalNoise (standardised):")
    print(noise_md)
    print("\nDigits, Bayesian MLP 64-64-10 (ternary row: 64-256-256-10):")
    print(table_md)
    print(f"\nwritten to {out.resolve()}")
    return rows
