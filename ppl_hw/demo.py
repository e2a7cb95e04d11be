"""The main job: a Bayesian MLP on the digits data, on both backends.

Run it with ``make demo`` or ``python -m ppl_hw.demo`` (``--help`` lists the
options). It trains the same Bayesian MLP (64-64-10, Normal(0, 1) priors) with
``AutoNormal`` and ``TraceMeanField_ELBO`` on NumPyro and on Pyro, evaluates the
posterior predictive on the held-out digits, prints one table (backend, guide, test
accuracy, NLL, ECE, time) and writes it, as Markdown and JSON, to an output folder
whose path it prints.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import __version__, metrics
from .datasets import Split, load_digits

__all__ = ["SIZES", "DemoConfig", "Row", "format_table", "main", "run"]

SIZES = {
    # name: (SVI steps, learning rate, posterior predictive samples)
    "smoke": (300, 1e-2, 20),
    "default": (2000, 1e-2, 100),
}
"""Run sizes of the demo: ``(svi_steps, learning_rate, num_samples)``."""

BACKENDS = ("numpyro", "pyro")


@dataclass(frozen=True)
class DemoConfig:
    """Settings of one demo run (see ``python -m ppl_hw.demo --help``)."""

    backends: tuple[str, ...] = BACKENDS
    size: str = "default"
    steps: int = SIZES["default"][0]
    learning_rate: float = SIZES["default"][1]
    num_samples: int = SIZES["default"][2]
    seed: int = 0
    progress: bool = True


@dataclass(frozen=True)
class Row:
    """One line of the demo's table."""

    backend: str
    method: str
    accuracy: float
    nll: float
    ece: float
    seconds: float


def _evaluate(backend: str, method: str, probs, data: Split, seconds: float) -> Row:
    probs = np.asarray(probs, dtype=np.float64)
    return Row(
        backend=backend,
        method=method,
        accuracy=metrics.accuracy(probs, data.y_test),
        nll=metrics.nll(probs, data.y_test),
        ece=metrics.expected_calibration_error(probs, data.y_test),
        seconds=seconds,
    )


def _numpyro_autonormal(data: Split, cfg: DemoConfig) -> Row:
    import jax
    import numpyro
    from numpyro.infer import SVI, Predictive, TraceMeanField_ELBO
    from numpyro.infer.autoguide import AutoNormal

    from .numpyro.models import mlp_classifier

    start = time.perf_counter()
    x, y = jax.numpy.asarray(data.x_train), jax.numpy.asarray(data.y_train)
    guide = AutoNormal(mlp_classifier)
    svi = SVI(
        mlp_classifier,
        guide,
        numpyro.optim.Adam(cfg.learning_rate),
        TraceMeanField_ELBO(),
    )
    key_train, key_pred = jax.random.split(jax.random.PRNGKey(cfg.seed))
    result = svi.run(key_train, cfg.steps, x, y, progress_bar=cfg.progress)
    predictive = Predictive(
        mlp_classifier,
        guide=guide,
        params=result.params,
        num_samples=cfg.num_samples,
        return_sites=["logits"],
    )
    logits = predictive(key_pred, jax.numpy.asarray(data.x_test))["logits"]
    probs = jax.nn.softmax(logits, axis=-1).mean(axis=0)
    probs = jax.block_until_ready(probs)
    return _evaluate("numpyro", "AutoNormal", probs, data, time.perf_counter() - start)


def _pyro_autonormal(data: Split, cfg: DemoConfig) -> Row:
    import pyro
    import torch
    from pyro.infer import SVI, Predictive, TraceMeanField_ELBO
    from pyro.infer.autoguide import AutoNormal
    from tqdm.auto import trange

    from .pyro.models import mlp_classifier

    start = time.perf_counter()
    pyro.clear_param_store()
    pyro.set_rng_seed(cfg.seed)
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    guide = AutoNormal(mlp_classifier)
    svi = SVI(
        mlp_classifier,
        guide,
        pyro.optim.Adam({"lr": cfg.learning_rate}),
        TraceMeanField_ELBO(),
    )
    steps = trange(cfg.steps, disable=not cfg.progress, desc="pyro AutoNormal")
    for step in steps:
        loss = svi.step(x, y)
        if step % 100 == 0:
            steps.set_postfix(loss=f"{loss:.4g}")
    predictive = Predictive(
        mlp_classifier,
        guide=guide,
        num_samples=cfg.num_samples,
        return_sites=["logits"],
    )
    with torch.no_grad():
        logits = predictive(torch.as_tensor(data.x_test))["logits"]
        probs = torch.softmax(logits, dim=-1).mean(dim=0)
    return _evaluate(
        "pyro", "AutoNormal", probs.numpy(), data, time.perf_counter() - start
    )


_JOBS = {"numpyro": [_numpyro_autonormal], "pyro": [_pyro_autonormal]}


def run(cfg: DemoConfig) -> list[Row]:
    """Run the demo's jobs for ``cfg`` and return the table rows."""
    data = load_digits()
    rows = []
    for backend in cfg.backends:
        for job in _JOBS[backend]:
            rows.append(job(data, cfg))
    return rows


def format_table(rows: Sequence[Row]) -> str:
    """The rows as a Markdown table."""
    head = "| backend | method | test accuracy | NLL | ECE | time (s) |"
    sep = "|---|---|---:|---:|---:|---:|"
    lines = [head, sep]
    for r in rows:
        lines.append(
            f"| {r.backend} | {r.method} | {100 * r.accuracy:.1f} % | {r.nll:.3f} "
            f"| {r.ece:.3f} | {r.seconds:.1f} |"
        )
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m ppl_hw.demo",
        description=(
            "ppl_hw's main job: a Bayesian MLP (64-64-10) on the digits data, trained "
            "with AutoNormal on NumPyro and Pyro; prints test accuracy, NLL and ECE."
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
        help="folder for the table (results.md, results.json); default ./demo_output",
    )
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    return p


def main(argv: Sequence[str] | None = None) -> list[Row]:
    """Command-line entry point; returns the table rows."""
    args = _parser().parse_args(argv)
    steps, lr, num_samples = SIZES[args.size]
    if args.steps is not None:
        steps = args.steps
    if args.num_samples is not None:
        num_samples = args.num_samples
    for name, value in (("--steps", steps), ("--num-samples", num_samples)):
        if value < 1:
            _parser().error(f"{name} must be >= 1, got {value}")
    cfg = DemoConfig(
        backends=BACKENDS if args.backend == "both" else (args.backend,),
        size=args.size,
        steps=steps,
        learning_rate=lr,
        num_samples=num_samples,
        seed=args.seed,
        progress=not args.no_progress,
    )
    rows = run(cfg)
    table = format_table(rows)
    out = args.output
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.md").write_text(table + "\n")
    payload = {
        "ppl_hw": __version__,
        "config": asdict(cfg),
        "rows": [asdict(r) for r in rows],
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    print()
    print(f"ppl_hw {__version__} demo: digits, Bayesian MLP 64-64-10, size={cfg.size}")
    print(table)
    print(f"\nwritten to {out.resolve()}")
    return rows


if __name__ == "__main__":
    main()
