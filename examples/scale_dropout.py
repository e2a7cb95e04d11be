"""Study: MC-Scale-Dropout uncertainty on a binary network (Ahmed et al. 2023).

A binary MLP (sign weights, sign activations, per-layer scales; 64-128-128-10) is
trained on the digits with ``AutoScaleDropout`` (MAP with scale dropout) and evaluated
two ways: MC-Scale-Dropout (``Predictive`` with T = 20 dropout masks) and the same
trained network with dropout off (``guide.without_dropout()``). Test accuracy, NLL and
ECE (15 bins) are averaged over seeds, for several variants of the (unpublished)
details: what a dropped scale becomes (``dropped``), one draw per layer or one for the
whole model (``share_across_layers``), and p.

    python examples/scale_dropout.py          # full: 5 seeds, 3 000 steps per variant
    python examples/scale_dropout.py --smoke  # what the tests run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ppl_hw import metrics
from ppl_hw.datasets import load_digits

VARIANTS = {
    "one, shared, p=0.5": dict(p=0.5, dropped="one", share_across_layers=True),
    "one, per layer, p=0.2": dict(p=0.2, dropped="one", share_across_layers=False),
    "zero, shared, p=0.1": dict(p=0.1, dropped="zero", share_across_layers=True),
    "zero, per layer, p=0.2": dict(p=0.2, dropped="zero", share_across_layers=False),
}
SIZES = {
    "smoke": dict(seeds=(0,), steps=300, T=20, variants=("one, shared, p=0.5",)),
    "full": dict(seeds=(0, 1, 2, 3, 4), steps=3000, T=20, variants=tuple(VARIANTS)),
}
PRIOR_SCALE = 10.0  # a weak prior: the MAP network is a conventional binary network


def run_variant(variant: dict, size: dict) -> dict:
    import functools

    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import SVI, Predictive, Trace_ELBO

    from ppl_hw.numpyro.autoguide import AutoScaleDropout
    from ppl_hw.numpyro.models import binary_mlp_classifier

    data = load_digits()
    x, y, x_test = (jnp.asarray(a) for a in (data.x_train, data.y_train, data.x_test))
    model = functools.partial(binary_mlp_classifier, prior_scale=PRIOR_SCALE)
    rows = []
    for seed in size["seeds"]:
        guide = AutoScaleDropout(model, **variant)
        svi = SVI(model, guide, numpyro.optim.Adam(1e-2), Trace_ELBO())
        params = svi.run(
            jax.random.PRNGKey(seed), size["steps"], x, y, progress_bar=False
        ).params

        def evaluate(g, num_samples, params=params, seed=seed):
            pred = Predictive(
                model,
                guide=g,
                params=params,
                num_samples=num_samples,
                return_sites=["logits"],
            )
            probs = jax.nn.softmax(
                pred(jax.random.PRNGKey(100 + seed), x_test)["logits"], -1
            )
            p = np.asarray(probs.mean(0))
            return [
                metrics.accuracy(p, data.y_test),
                metrics.nll(p, data.y_test),
                metrics.expected_calibration_error(p, data.y_test),
            ]

        rows.append(evaluate(guide, size["T"]) + evaluate(guide.without_dropout(), 1))
    r = np.asarray(rows)
    names = ["accuracy", "nll", "ece"]
    return dict(
        mc={n: float(v) for n, v in zip(names, r[:, :3].mean(0), strict=True)},
        off={n: float(v) for n, v in zip(names, r[:, 3:].mean(0), strict=True)},
        mc_ece_lower_in=int(np.sum(r[:, 2] < r[:, 5])),
        seeds=len(size["seeds"]),
        per_seed=r.tolist(),
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--output", type=Path, default=Path("examples/output/scale_dropout"))
    args = p.parse_args(argv)
    size = SIZES["smoke" if args.smoke else "full"]
    start = time.perf_counter()
    results = {name: run_variant(VARIANTS[name], size) for name in size["variants"]}
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    print(f"{time.perf_counter() - start:.0f} s")
    print(
        "| variant | MC T=20: accuracy | NLL | ECE | dropout off: accuracy | NLL | ECE "
        "| seeds with lower MC ECE |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        mc, off = r["mc"], r["off"]
        print(
            f"| {name} | {100 * mc['accuracy']:.1f} % | {mc['nll']:.3f} "
            f"| {mc['ece']:.3f} "
            f"| {100 * off['accuracy']:.1f} % | {off['nll']:.3f} | {off['ece']:.3f} "
            f"| {r['mc_ece_lower_in']}/{r['seeds']} |"
        )
    print(f"written to {args.output.resolve()}")
    return results


if __name__ == "__main__":
    main()
