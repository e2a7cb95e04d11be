"""Study: MC-Scale-Dropout uncertainty on a binary network (Ahmed et al. 2023).

A binary MLP (sign weights, sign activations, per-layer scales; 64-128-128-10) is
trained on the digits with ``AutoScaleDropout`` (MAP with scale dropout) and evaluated
two ways: MC-Scale-Dropout (``Predictive`` with T dropout masks; T = 20 is the
headline, further T are evaluated on the same trained networks) and the same trained
network with dropout off (``guide.without_dropout()``). Test accuracy, NLL, ECE (15
bins) and the multiclass Brier score (scikit-learn's ``brier_score_loss``, a proper
scoring rule with less variance than a binned ECE) are recorded per seed, for several
variants of the (unpublished) details: what a dropped scale becomes (``dropped``), one
draw per layer or one for the whole model (``share_across_layers``), and p.

The comparison is paired (the MC and the dropout-off prediction of one seed come from
the same trained network): per metric, the number of seeds in which MC is lower, a
two-sided sign test (``scipy.stats.binomtest`` on the non-tied seeds), a paired t-test
(``scipy.stats.ttest_rel``) and a Wilcoxon signed-rank test (``scipy.stats.wilcoxon``).

    python examples/scale_dropout.py          # full: 5 seeds, 3 000 steps per variant
    python examples/scale_dropout.py --default-seeds 20   # 20 seeds for the default
    python examples/scale_dropout.py --smoke  # what the tests run
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
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
DEFAULT_VARIANT = "one, shared, p=0.5"  # AutoScaleDropout's defaults, p = 0.5
SIZES = {
    "smoke": dict(seeds=1, steps=300, T=(20,), variants=(DEFAULT_VARIANT,)),
    "full": dict(seeds=5, steps=3000, T=(20, 100), variants=tuple(VARIANTS)),
}
PRIOR_SCALE = 10.0  # a weak prior: the MAP network is a conventional binary network
METRICS = ("accuracy", "nll", "ece", "brier")
HEADLINE_METRICS = ("accuracy", "nll", "ece")  # the "mc" / "off" summaries
NUM_CLASSES = 10
DOCS_STATIC = Path(__file__).resolve().parents[1] / "docs" / "_static"
FIGURE = "scale_dropout_seeds.png"


def brier(probs, labels) -> float:
    """Multiclass Brier score, the mean over images of sum_k (p_k - 1[y = k])^2 (in
    [0, 2]), by scikit-learn's ``brier_score_loss`` (multiclass since 1.7)."""
    from sklearn.metrics import brier_score_loss

    return float(
        brier_score_loss(
            np.asarray(labels),
            np.asarray(probs),
            labels=np.arange(NUM_CLASSES),
            scale_by_half=False,
        )
    )


def score(probs, labels) -> dict:
    """Every metric of :data:`METRICS` for predictive probabilities ``(N, C)``."""
    return {
        "accuracy": float(metrics.accuracy(probs, labels)),
        "nll": float(metrics.nll(probs, labels)),
        "ece": float(metrics.expected_calibration_error(probs, labels)),
        "brier": brier(probs, labels),
    }


def paired_statistics(a, b) -> dict:
    """Paired comparison of ``a`` against ``b`` (one value each per seed).

    ``a_lower`` / ``b_lower`` / ``ties`` count the seeds; ``sign_test_p`` is the
    two-sided exact binomial test of ``a_lower`` among the non-tied seeds at 1/2;
    ``t_test_p`` the two-sided paired t-test and ``wilcoxon_p`` the two-sided
    Wilcoxon signed-rank test (zero differences dropped). A p-value is ``None``
    where the test is undefined (fewer than 2 seeds, or all differences equal).
    """
    from scipy import stats

    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise ValueError(
            f"a and b must be non-empty 1-D arrays of one shape, got {a.shape} "
            f"and {b.shape}"
        )
    d = a - b
    n = int(d.size)
    a_lower, b_lower = int(np.sum(d < 0)), int(np.sum(d > 0))
    nonzero = a_lower + b_lower
    sign_p = float(stats.binomtest(a_lower, nonzero, 0.5).pvalue) if nonzero else None
    varies = n >= 2 and bool(np.ptp(d) > 0)
    t_p = float(stats.ttest_rel(a, b).pvalue) if varies else None
    w_p = float(stats.wilcoxon(a, b).pvalue) if n >= 2 and nonzero >= 1 else None
    return dict(
        n=n,
        mean_a=float(a.mean()),
        mean_b=float(b.mean()),
        mean_diff=float(d.mean()),
        sd_diff=float(d.std(ddof=1)) if n >= 2 else None,
        a_lower=a_lower,
        b_lower=b_lower,
        ties=n - nonzero,
        sign_test_p=sign_p,
        t_test_p=t_p,
        wilcoxon_p=w_p,
    )


def run_variant(variant: dict, size: dict, log=None) -> dict:
    """Train ``size["seeds"]`` networks (seeds 0, 1, ...) for one variant and
    evaluate each with MC-Scale-Dropout at every T of ``size["T"]`` and with
    dropout off; per-seed metrics, means, sds and the paired statistics."""
    import functools

    import jax
    import jax.numpy as jnp
    import numpyro
    from jax import lax
    from numpyro.infer import SVI, Predictive, Trace_ELBO

    from ppl_hw.numpyro.autoguide import AutoScaleDropout
    from ppl_hw.numpyro.models import binary_mlp_classifier

    data = load_digits()
    x, y, x_test = (jnp.asarray(a) for a in (data.x_train, data.y_train, data.x_test))
    model = functools.partial(binary_mlp_classifier, prior_scale=PRIOR_SCALE)
    seeds = list(range(size["seeds"]))
    Ts = tuple(size["T"])
    shared = {}  # the first seed's SVI: one compilation serves every seed

    def advance(state):  # = SVI.run(..., progress_bar=False) after SVI.init
        return lax.scan(
            lambda s, _: shared["svi"].update(s, x, y), state, None, size["steps"]
        )[0]

    advance = jax.jit(advance)

    def predict(params, key, num_samples, dropout):
        g = shared["guide"] if dropout else shared["guide"].without_dropout()
        pred = Predictive(
            model,
            guide=g,
            params=params,
            num_samples=num_samples,
            return_sites=["logits"],
        )
        return jax.nn.softmax(pred(key, x_test)["logits"], -1).mean(0)

    predict = jax.jit(predict, static_argnums=(2, 3))
    per_seed = {"off": {m: [] for m in METRICS}}
    per_seed.update({f"mc_T{T}": {m: [] for m in METRICS} for T in Ts})
    for seed in seeds:
        t0 = time.perf_counter()
        # a fresh guide per seed: AutoDelta keeps the initial values of its first
        # call, so each seed's initial values come from its own guide
        guide = AutoScaleDropout(model, **variant)
        svi = SVI(model, guide, numpyro.optim.Adam(1e-2), Trace_ELBO())
        state = svi.init(jax.random.PRNGKey(seed), x, y)
        shared.setdefault("svi", svi)
        shared.setdefault("guide", guide)
        params = shared["svi"].get_params(advance(state))
        key = jax.random.PRNGKey(100 + seed)
        p_off = np.asarray(predict(params, key, 1, False))
        for name, v in score(p_off, data.y_test).items():
            per_seed["off"][name].append(v)
        for T in Ts:
            p_mc = np.asarray(predict(params, key, T, True))
            for name, v in score(p_mc, data.y_test).items():
                per_seed[f"mc_T{T}"][name].append(v)
        if log is not None:
            mc = per_seed[f"mc_T{Ts[0]}"]
            log(
                f"  seed {seed}: ECE MC {mc['ece'][-1]:.4f} off "
                f"{per_seed['off']['ece'][-1]:.4f}; NLL MC {mc['nll'][-1]:.4f} off "
                f"{per_seed['off']['nll'][-1]:.4f} ({time.perf_counter() - t0:.0f} s)"
            )
    return summarise(per_seed, seeds, size["steps"], Ts)


def summarise(per_seed: dict, seeds: list, steps: int, Ts: tuple) -> dict:
    """Means, sds and paired statistics from the per-seed metrics."""
    mc = per_seed[f"mc_T{Ts[0]}"]
    off = per_seed["off"]
    n = len(seeds)

    def mean(d, names):
        return {m: float(np.mean(d[m])) for m in names}

    def sd(d):
        return {m: float(np.std(d[m], ddof=1)) if n >= 2 else None for m in METRICS}

    paired = {
        f"mc_T{T}_vs_off": {
            m: paired_statistics(per_seed[f"mc_T{T}"][m], off[m]) for m in METRICS
        }
        for T in Ts
    }
    for T in Ts[1:]:
        paired[f"mc_T{T}_vs_mc_T{Ts[0]}"] = {
            m: paired_statistics(per_seed[f"mc_T{T}"][m], mc[m]) for m in METRICS
        }
    return dict(
        mc=mean(mc, HEADLINE_METRICS),
        off=mean(off, HEADLINE_METRICS),
        mc_ece_lower_in=int(np.sum(np.asarray(mc["ece"]) < np.asarray(off["ece"]))),
        seeds=n,
        steps=steps,
        T=list(Ts),
        mean={k: mean(v, METRICS) for k, v in per_seed.items()},
        sd={k: sd(v) for k, v in per_seed.items()},
        paired=paired,
        per_seed=dict(seed=list(seeds), **per_seed),
    )


def _fmt_p(p) -> str:
    return "—" if p is None else f"{p:.2g}"


def _figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    rows = (("ece", "ECE (15 bins)"), ("nll", "NLL"), ("brier", "Brier score"))
    fig, axes = plt.subplots(
        len(rows), len(names), figsize=(3.2 * len(names), 9.0), squeeze=False
    )
    for j, name in enumerate(names):
        r = results[name]
        T = r["T"][0]
        for i, (m, label) in enumerate(rows):
            ax = axes[i][j]
            off = np.asarray(r["per_seed"]["off"][m])
            mc = np.asarray(r["per_seed"][f"mc_T{T}"][m])
            lo = min(off.min(), mc.min())
            hi = max(off.max(), mc.max())
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], color="0.6", lw=0.8)
            ax.scatter(off, mc, s=18, color=f"C{i}", zorder=3)
            st = r["paired"][f"mc_T{T}_vs_off"][m]
            ax.set_title(
                f"{name}\nMC lower in {st['a_lower']}/{st['n']}, sign p "
                f"{_fmt_p(st['sign_test_p'])}, t p {_fmt_p(st['t_test_p'])}",
                fontsize=8,
            )
            ax.set_xlabel(f"dropout off: {label}", fontsize=8)
            ax.set_ylabel(f"MC (T = {T}): {label}", fontsize=8)
            ax.tick_params(labelsize=7)
    fig.suptitle(
        "MC-Scale-Dropout against dropout off, one point per seed "
        "(below the diagonal: MC better)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--output", type=Path, default=Path("examples/output/scale_dropout"))
    p.add_argument(
        "--seeds",
        type=_positive_int,
        default=None,
        help="seeds 0..N-1 for every variant (default: 5 at full size, 1 at smoke)",
    )
    p.add_argument(
        "--default-seeds",
        type=_positive_int,
        default=None,
        help=f"seeds for the default variant {DEFAULT_VARIANT!r} (default: --seeds)",
    )
    p.add_argument(
        "--steps", type=_positive_int, default=None, help="training steps per seed"
    )
    p.add_argument(
        "--T",
        type=_positive_int,
        nargs="+",
        default=None,
        help="MC sample counts; the first is the headline (default: 20 100; smoke 20)",
    )
    p.add_argument(
        "--variants",
        nargs="+",
        choices=tuple(VARIANTS),
        default=None,
        metavar="VARIANT",
        help="variants to run, by name: "
        + "; ".join(map(repr, VARIANTS))
        + " (default: all at full size, the default one at smoke)",
    )
    args = p.parse_args(argv)
    if args.T is not None and len(set(args.T)) != len(args.T):
        p.error(f"--T values must be distinct, got {args.T}")
    size = dict(SIZES["smoke" if args.smoke else "full"])
    for key in ("seeds", "steps", "T", "variants"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    start = time.perf_counter()
    args.output.mkdir(parents=True, exist_ok=True)
    results = {}
    for name in size["variants"]:
        seeds = size["seeds"]
        if name == DEFAULT_VARIANT and args.default_seeds is not None:
            seeds = args.default_seeds
        print(f"{name}: {seeds} seeds x {size['steps']} steps", flush=True)
        results[name] = run_variant(
            VARIANTS[name], dict(size, seeds=seeds), log=lambda s: print(s, flush=True)
        )
        # written after every variant, so a long run keeps what it has measured
        (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    wall = time.perf_counter() - start
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"{wall:.0f} s (load average {load})")
    _print_tables(results)
    _figure(results, args.output / FIGURE)
    if not args.smoke:
        DOCS_STATIC.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.output / FIGURE, DOCS_STATIC / FIGURE)
    print(f"written to {args.output.resolve()}")
    return results


def _print_tables(results: dict) -> None:
    T0 = next(iter(results.values()))["T"][0]
    print(
        f"| variant | seeds | MC T={T0}: accuracy | NLL | ECE | Brier "
        "| dropout off: accuracy | NLL | ECE | Brier |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        cells = []
        for key in (f"mc_T{r['T'][0]}", "off"):
            mu, sd = r["mean"][key], r["sd"][key]
            for m in METRICS:
                scale, fmt = (100, ".1f") if m == "accuracy" else (1, ".3f")
                unit = " %" if m == "accuracy" else ""
                s = "" if sd[m] is None else f" ± {scale * sd[m]:{fmt}}"
                cells.append(f"{scale * mu[m]:{fmt}}{s}{unit}")
        print(f"| {name} | {r['seeds']} | " + " | ".join(cells) + " |")
    print()
    print(
        "| variant | comparison | metric | lower in (ties) | mean difference ± sd "
        "| sign p | t p | Wilcoxon p |"
    )
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        for comp, per_metric in r["paired"].items():
            for m in METRICS:
                st = per_metric[m]
                sd = "" if st["sd_diff"] is None else f" ± {st['sd_diff']:.4f}"
                print(
                    f"| {name} | {comp} | {m} | {st['a_lower']}/{st['n']} "
                    f"({st['ties']}) | {st['mean_diff']:+.4f}{sd} "
                    f"| {_fmt_p(st['sign_test_p'])} | {_fmt_p(st['t_test_p'])} "
                    f"| {_fmt_p(st['wilcoxon_p'])} |"
                )


if __name__ == "__main__":
    main()
