"""Study: a Bayesian MLP deployed on a simulated PCM crossbar, from 1 s to 1 year.

Trains the digits BNN (64-64-10, ``AutoNormal``) on NumPyro and on Pyro, deploys the
posterior on ``ppl_hw.devices.PCM()`` with ``crossbar`` at times after programming
from 1 s to 1 year, with and without global drift compensation, over several chips
(seeds), and reports test accuracy and ECE (15 bins), with a figure.

    python examples/crossbar_drift.py            # full size (~5 min on 2 cores)
    python examples/crossbar_drift.py --smoke    # seconds: what the tests run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ppl_hw import devices, metrics
from ppl_hw.datasets import load_digits

TIMES = {
    "1 s": 1.0,
    "1 min": 60.0,
    "1 h": 3600.0,
    "1 day": 86_400.0,
    "1 week": 604_800.0,
    "1 month": 2_592_000.0,
    "1 year": 31_536_000.0,
}
SIZES = {
    "smoke": dict(steps=200, samples=10, chips=1, times=("1 year",)),
    "full": dict(steps=2000, samples=100, chips=3, times=tuple(TIMES)),
}


def numpyro_study(data, size, seed):
    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import SVI, Predictive, TraceMeanField_ELBO
    from numpyro.infer.autoguide import AutoNormal

    from ppl_hw.numpyro.handlers import crossbar
    from ppl_hw.numpyro.models import mlp_classifier

    guide = AutoNormal(mlp_classifier)
    svi = SVI(mlp_classifier, guide, numpyro.optim.Adam(1e-2), TraceMeanField_ELBO())
    res = svi.run(
        jax.random.PRNGKey(seed),
        size["steps"],
        jnp.asarray(data.x_train),
        jnp.asarray(data.y_train),
        progress_bar=False,
    )
    x_test = jnp.asarray(data.x_test)

    def probs(model, key):
        pred = Predictive(
            model,
            guide=guide,
            params=res.params,
            num_samples=size["samples"],
            return_sites=["logits"],
        )(key, x_test)
        return np.asarray(jax.nn.softmax(pred["logits"], -1).mean(0))

    out = {"clean": probs(mlp_classifier, jax.random.PRNGKey(seed + 1))}
    for comp in (False, True):
        for label in size["times"]:
            for chip in range(size["chips"]):
                model = crossbar(
                    mlp_classifier,
                    device=devices.PCM(drift_compensation=comp),
                    t_inference=TIMES[label],
                    seed=chip,
                )
                out[(comp, label, chip)] = probs(
                    model, jax.random.PRNGKey(seed + 2 + chip)
                )
    return out


def pyro_study(data, size, seed):
    import pyro
    import torch
    from pyro.infer import SVI, Predictive, TraceMeanField_ELBO
    from pyro.infer.autoguide import AutoNormal

    from ppl_hw.pyro.models import mlp_classifier
    from ppl_hw.pyro.poutine import crossbar

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    guide = AutoNormal(mlp_classifier)
    svi = SVI(
        mlp_classifier, guide, pyro.optim.Adam({"lr": 1e-2}), TraceMeanField_ELBO()
    )
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    for _ in range(size["steps"]):
        svi.step(x, y)
    x_test = torch.as_tensor(data.x_test)

    def probs(model):
        with torch.no_grad():
            pred = Predictive(
                model, guide=guide, num_samples=size["samples"], return_sites=["logits"]
            )(x_test)
            return torch.softmax(pred["logits"], -1).mean(0).numpy()

    out = {"clean": probs(mlp_classifier)}
    for comp in (False, True):
        for label in size["times"]:
            for chip in range(size["chips"]):
                model = crossbar(
                    mlp_classifier,
                    device=devices.PCM(drift_compensation=comp),
                    t_inference=TIMES[label],
                    seed=chip,
                )
                out[(comp, label, chip)] = probs(model)
    return out


def summarise(probs, data, size):
    rows = []
    y = data.y_test
    clean = probs["clean"]
    rows.append(
        dict(
            compensation=None,
            time="clean",
            accuracy=metrics.accuracy(clean, y),
            ece=metrics.expected_calibration_error(clean, y),
            accuracy_sd=0.0,
            ece_sd=0.0,
        )
    )
    for comp in (False, True):
        for label in size["times"]:
            acc = [
                metrics.accuracy(probs[(comp, label, c)], y)
                for c in range(size["chips"])
            ]
            ece = [
                metrics.expected_calibration_error(probs[(comp, label, c)], y)
                for c in range(size["chips"])
            ]
            rows.append(
                dict(
                    compensation=comp,
                    time=label,
                    accuracy=float(np.mean(acc)),
                    accuracy_sd=float(np.std(acc)),
                    ece=float(np.mean(ece)),
                    ece_sd=float(np.std(ece)),
                )
            )
    return rows


def figure(results, size, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    t = [TIMES[k] for k in size["times"]]
    for backend, rows in results.items():
        for comp, ls in ((False, "-"), (True, "--")):
            sel = [r for r in rows if r["compensation"] is comp]
            label = f"{backend}, {'with' if comp else 'no'} drift compensation"
            axes[0].plot(
                t, [100 * r["accuracy"] for r in sel], ls, marker="o", label=label
            )
            axes[1].plot(t, [r["ece"] for r in sel], ls, marker="o", label=label)
        clean = rows[0]
        axes[0].axhline(100 * clean["accuracy"], color="0.6", lw=0.8)
        axes[1].axhline(clean["ece"], color="0.6", lw=0.8)
    for ax, name in zip(axes, ("test accuracy (%)", "ECE (15 bins)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("time since programming (s)")
        ax.set_ylabel(name)
    axes[0].legend(fontsize=7)
    fig.suptitle("Digits BNN on a simulated PCM crossbar (grey: off-chip)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny size, for the tests")
    p.add_argument("--backend", choices=("numpyro", "pyro", "both"), default="both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--output", type=Path, default=Path("examples/output/crossbar_drift")
    )
    args = p.parse_args(argv)
    size = SIZES["smoke" if args.smoke else "full"]
    data = load_digits()
    backends = ("numpyro", "pyro") if args.backend == "both" else (args.backend,)
    results = {}
    for backend in backends:
        start = time.perf_counter()
        study = numpyro_study if backend == "numpyro" else pyro_study
        results[backend] = summarise(study(data, size, args.seed), data, size)
        print(f"{backend}: {time.perf_counter() - start:.0f} s")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    figure(results, size, args.output / "crossbar_drift.png")
    print("| backend | drift compensation | time | accuracy | ECE |")
    print("|---|---|---|---:|---:|")
    for backend, rows in results.items():
        for r in rows:
            comp = (
                "—"
                if r["compensation"] is None
                else ("yes" if r["compensation"] else "no")
            )
            print(
                f"| {backend} | {comp} | {r['time']} | {100 * r['accuracy']:.1f} ± "
                f"{100 * r['accuracy_sd']:.1f} % | {r['ece']:.3f} ± {r['ece_sd']:.3f} |"
            )
    print(f"written to {args.output.resolve()}")
    return results


if __name__ == "__main__":
    main()
