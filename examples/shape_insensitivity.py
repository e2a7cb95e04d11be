"""Study: BNN predictives are insensitive to the shape of the weight distribution
(Patel, Xiao, Agarwal & Bennett 2025), more so for wider networks.

A one-hidden-layer BNN (tanh, NNGP-scaled output prior, point-estimate output bias)
is trained on the 1-D regression toy
(``make_toy_regression``: y = x^3 + N(0, 3^2), scaled) with a Gaussian mean-field guide
(``AutoDeviceNoise`` on the Gaussian shape). The trained means and scales are then
moved, unchanged, into guides of other shapes — uniform and the multimodal, skewed
MTJ noise — with ``guide.with_noise(...)``. At every test input the energy distance
between the Gaussian-shaped network's predictive samples of f(x) and the other
shape's is computed — the unbiased energy statistic :math:`D^2` of the predictives
standardised by the Gaussian one's spread (``ppl_hw.metrics.energy_distance``,
``squared=True, unbiased=True``; zero in expectation when the shapes agree) — and
averaged over inputs.

    python examples/shape_insensitivity.py          # full: widths 1 to 512, 3 seeds
    python examples/shape_insensitivity.py --smoke  # what the tests run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import scipy.stats

from ppl_hw import devices, metrics
from ppl_hw.datasets import make_toy_regression

SIZES = {
    "smoke": dict(widths=(1, 2, 8), seeds=(0,), steps=300, samples=20000),
    "full": dict(
        widths=(1, 2, 4, 8, 32, 128, 512), seeds=(0, 1, 2), steps=6000, samples=20000
    ),
}
SHAPES = ("uniform", "mtj")
N_TRAIN = 40
SETTINGS = ("trained", "prior")


def model(x, y=None, *, width):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    w1 = numpyro.sample("w1", dist.Normal(0.0, 1.0).expand([1, width]).to_event(2))
    b1 = numpyro.sample("b1", dist.Normal(0.0, 1.0).expand([width]).to_event(1))
    # NNGP scaling: the output layer's prior scale shrinks as 1/sqrt(width)
    w2 = numpyro.sample(
        "w2", dist.Normal(0.0, width**-0.5).expand([width, 1]).to_event(2)
    )
    # the output bias is a point estimate: a single random bias would add its own
    # shape to every prediction, which no width can average away
    b2 = numpyro.param("b2", 0.0)
    f = numpyro.deterministic("f", (jnp.tanh(x @ w1 + b1) @ w2)[:, 0] + b2)
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", dist.Normal(f, 0.1), obs=y)


def study(size: dict) -> dict:
    import functools

    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import SVI, Predictive, TraceMeanField_ELBO

    from ppl_hw.numpyro.autoguide import AutoDeviceNoise
    from ppl_hw.numpyro.distributions import EmpiricalNoise

    data = make_toy_regression(n_train=N_TRAIN, n_test=50, seed=0)
    # scale to unit-ish ranges: x / 4, y / 64 (noise 3/64 ~ 0.05; the model uses 0.1)
    x, y = jnp.asarray(data.x_train / 4.0), jnp.asarray(data.y_train / 64.0)
    x_test = jnp.asarray(np.linspace(-1.5, 1.5, 50, dtype=np.float32)[:, None])
    noises = {
        "gaussian": EmpiricalNoise(devices.gaussian_noise(20_000, seed=1)),
        "uniform": EmpiricalNoise(devices.uniform_noise(20_000, seed=1)),
        "mtj": EmpiricalNoise(devices.mtj_noise(20_000, seed=1)),
    }
    out: dict[str, dict[str, dict[str, list[float]]]] = {
        setting: {s: {} for s in SHAPES} for setting in SETTINGS
    }
    for width in size["widths"]:
        m = functools.partial(model, width=width)
        for seed in size["seeds"]:
            guide = AutoDeviceNoise(m, noise=noises["gaussian"], init_scale=0.05)
            svi = SVI(m, guide, numpyro.optim.Adam(5e-3), TraceMeanField_ELBO())
            res = svi.run(
                jax.random.PRNGKey(seed), size["steps"], x, y, progress_bar=False
            )
            params = {
                "trained": res.params,
                # the prior's means and scales: every weight as uncertain as it can be
                "prior": {
                    **{
                        k: jnp.zeros_like(v)
                        for k, v in res.params.items()
                        if k.endswith("_loc")
                    },
                    "w1_auto_scale": jnp.ones((1, width)),
                    "b1_auto_scale": jnp.ones(width),
                    "w2_auto_scale": jnp.full((width, 1), width**-0.5),
                    "b2": jnp.zeros(()),
                },
            }
            for setting in SETTINGS:
                preds = {}
                for i, (name, noise) in enumerate(noises.items()):
                    g = guide.with_noise(noise)
                    pred = Predictive(
                        m,
                        guide=g,
                        params=params[setting],
                        num_samples=size["samples"],
                        return_sites=["f"],
                    )
                    key = jax.random.PRNGKey(
                        1000 * seed + i
                    )  # independent draws per shape
                    preds[name] = np.asarray(pred(key, x_test)["f"])
                # standardised by the Gaussian predictive's spread at each input, so
                # that widths compare on shape alone; unbiased D^2 so that the Monte
                # Carlo floor is zero, not O(1/n)
                spread = preds["gaussian"].std(axis=0)
                for shape in SHAPES:
                    d2 = metrics.energy_distance(
                        preds["gaussian"] / spread,
                        preds[shape] / spread,
                        axis=0,
                        squared=True,
                        unbiased=True,
                    )
                    out[setting][shape].setdefault(str(width), []).append(
                        float(np.mean(d2))
                    )
    return out


def summarise(out: dict, size: dict) -> dict:
    return {setting: _summarise(by_shape) for setting, by_shape in out.items()}


def _summarise(out: dict) -> dict:
    rows = {}
    for shape, by_width in out.items():
        widths = [int(w) for w in by_width]
        means = [float(np.mean(by_width[str(w)])) for w in widths]
        pairs = [(w, v) for w in widths for v in by_width[str(w)]]
        rho = scipy.stats.spearmanr([p[0] for p in pairs], [p[1] for p in pairs])[0]
        rows[shape] = dict(
            widths=widths,
            energy_distance=means,
            spread=[float(np.std(by_width[str(w)])) for w in widths],
            spearman_rho=float(rho),
            ratio_widest_to_narrowest=means[-1] / means[0],
        )
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny size, for the tests")
    p.add_argument(
        "--output", type=Path, default=Path("examples/output/shape_insensitivity")
    )
    args = p.parse_args(argv)
    size = SIZES["smoke" if args.smoke else "full"]
    start = time.perf_counter()
    rows = summarise(study(size), size)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    _figure(rows, args.output / "shape_insensitivity.png")
    print(f"{time.perf_counter() - start:.0f} s")
    print(
        "| means and scales | shape vs Gaussian | "
        + " | ".join(f"width {w}" for w in size["widths"])
        + " | Spearman ρ |"
    )
    print("|---|---|" + "---:|" * (len(size["widths"]) + 1))
    for setting, by_shape in rows.items():
        for shape, r in by_shape.items():
            cells = " | ".join(
                f"{m:.2e} ± {s:.1e}"
                for m, s in zip(r["energy_distance"], r["spread"], strict=True)
            )
            print(f"| {setting} | {shape} | {cells} | {r['spearman_rho']:.2f} |")
    print(f"written to {args.output.resolve()}")
    return rows


def _figure(rows: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for ax, (setting, by_shape) in zip(axes, rows.items(), strict=True):
        for shape, r in by_shape.items():
            ax.errorbar(
                r["widths"],
                r["energy_distance"],
                yerr=r["spread"],
                marker="o",
                capsize=3,
                label=f"{shape} vs Gaussian",
            )
        ax.set_xscale("log", base=2)
        ax.axhline(0.0, color="0.6", lw=0.8)
        ax.set_xlabel("hidden width")
        ax.set_ylabel("energy statistic D² (standardised)")
        ax.set_title(f"{setting} means and scales")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
