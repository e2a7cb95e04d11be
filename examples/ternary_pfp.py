"""Study: discrete-valued (ternary) networks trained with the probabilistic forward
pass (Roth & Pernkopf).

``ternary_mlp_classifier`` (ternary weights in every layer, sign activations, batch
norm, real output bias) is trained with ``AutoDiscreteWeight`` and ``PFP_ELBO`` on
MNIST-1D (40 inputs, standardised with the training set's statistics; 40-256-256-10)
and on the digits (the reference network 64-256-256-10), for priors with
p0 = P(w = 0) in {1/3, 0.5, 0.8, 0.95}. Reported per run: test accuracy of the most
probable network (hard signs, ``guide.most_probable``), mean accuracy of sampled
networks (``guide.sample_posterior``) and of their ensemble (softmax average), the
share of zero weights (overall and per layer), bits per stored weight
(``guide.bits_per_weight()``) and the entropy of the deployed weights' values (the
bits per weight an entropy coder would need). Beside them: a real-valued twin (same
architecture with tanh, ``AutoDelta``), the ternary network initialised from it with
``init_weights`` (the paper's empirical-CDF initialisation), the Taylor output
(``PFP_ELBO(output="taylor")``) against the sampled logits, and a second KL weight
(the KL weight is 0.1 on the digits; on MNIST-1D 0.1 collapses the network to ~30 %,
so its sweep uses 0.01 and 0.1 is the extra run).

    python examples/ternary_pfp.py          # full size (~9 min on 2 cores)
    python examples/ternary_pfp.py --smoke  # what the tests run
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np

from ppl_hw import metrics
from ppl_hw.datasets import load_digits, make_mnist1d

P0S = (1 / 3, 0.5, 0.8, 0.95)
DATASETS = {
    # kl_weight: the KL weight of the p0 sweep; other_kl: KL weights also run at ref_p0
    "mnist1d": dict(batch_size=250, kl_weight=0.01, other_kl=(0.1,), real_steps=1000),
    "digits": dict(batch_size=128, kl_weight=0.1, other_kl=(0.01,), real_steps=1000),
}
SIZES = {
    "smoke": dict(
        datasets=("digits",),
        hidden=(32, 32),
        p0s=(1 / 3, 0.8),
        ref_p0=0.8,
        steps={"digits": 150},
        real_steps=150,
        samples=3,
        other_kl=False,
    ),
    "full": dict(
        datasets=("mnist1d", "digits"),
        hidden=(256, 256),
        p0s=P0S,
        ref_p0=0.5,
        steps={"mnist1d": 2000, "digits": 1000},
        real_steps=None,  # per data set (DATASETS)
        samples=10,
        other_kl=True,
    ),
}
LR = 1e-2


def load(name: str):
    """The split as float32/int64 arrays; MNIST-1D standardised per input with the
    training set's mean and standard deviation (the digits stay in [0, 1])."""
    if name == "digits":
        return load_digits()
    data = make_mnist1d()
    mean, sd = data.x_train.mean(0), data.x_train.std(0)
    return data._replace(
        x_train=((data.x_train - mean) / sd).astype(np.float32),
        x_test=((data.x_test - mean) / sd).astype(np.float32),
    )


def real_mlp_classifier(
    x, y=None, *, hidden=(256, 256), num_classes=10, out_scale=3.0, batch_size=None
):
    """The real-valued twin of ``ternary_mlp_classifier``: the same sites, scaling and
    batch norm, Normal(0, 1) weights and tanh for sign."""
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    from ppl_hw.numpyro import nn

    sizes = (x.shape[-1], *hidden, num_classes)
    ws = [
        numpyro.sample(f"w{i}", dist.Normal(0.0, 1.0).expand([a, b]).to_event(2))
        for i, (a, b) in enumerate(itertools.pairwise(sizes))
    ]
    b = numpyro.sample(
        f"b{len(ws) - 1}", dist.Normal(0.0, 1.0).expand([num_classes]).to_event(1)
    )
    with numpyro.plate("data", x.shape[0], subsample_size=batch_size):
        h = numpyro.subsample(x, event_dim=1)
        for i, w in enumerate(ws):
            h = nn.dense(h, w) * sizes[i] ** -0.5
            if i < len(ws) - 1:
                h = jnp.tanh(nn.batch_norm(h))
        logits = numpyro.deterministic("logits", out_scale * h + b)
        obs = None if y is None else numpyro.subsample(y, event_dim=0)
        numpyro.sample("y", dist.Categorical(logits=logits), obs=obs)


def _predictor(model):
    """Jitted ``(weights, x) -> logits`` of the deployed network (arrays, hard
    signs): for one network, and vmapped over a leading axis of the weights."""
    import jax
    from numpyro import handlers

    def logits(weights, x):
        sub = handlers.substitute(handlers.seed(model, 0), data=weights)
        return handlers.trace(sub).get_trace(x)["logits"]["value"]

    return jax.jit(logits), jax.jit(jax.vmap(logits, in_axes=(0, None)))


def _entropy_bits(low: dict) -> float:
    """Entropy (bits per weight) of the deployed weights' values, per layer, averaged
    with the layers' sizes: what an entropy coder of each layer would need."""
    total, bits = 0, 0.0
    for idx, grid in low.values():
        counts = np.bincount(idx.reshape(-1).astype(np.int64), minlength=grid.size)
        p = counts[counts > 0] / idx.size
        bits += idx.size * float(-(p * np.log2(p)).sum())
        total += idx.size
    return bits / total


def run_dataset(name: str, size: dict, seed: int = 0) -> list[dict]:
    import functools

    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoDelta

    from ppl_hw.numpyro.autoguide import AutoDiscreteWeight
    from ppl_hw.numpyro.infer import PFP_ELBO
    from ppl_hw.numpyro.models import ternary_mlp_classifier

    cfg = DATASETS[name]
    data = load(name)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_test = jnp.asarray(data.x_test)
    hidden, bs = size["hidden"], cfg["batch_size"]

    def accuracy(logits):
        return metrics.accuracy(np.asarray(jax.nn.softmax(logits, -1)), data.y_test)

    # the real-valued twin (MAP), the baseline and the source of init_weights
    start = time.perf_counter()
    real = functools.partial(real_mlp_classifier, hidden=hidden)
    guide = AutoDelta(functools.partial(real, batch_size=bs))
    svi = SVI(guide.model, guide, numpyro.optim.Adam(LR), Trace_ELBO())
    steps = size["real_steps"] or cfg["real_steps"]
    params = svi.run(jax.random.PRNGKey(seed), steps, x, y, progress_bar=False).params
    real_weights = guide.median(params)
    predict, _ = _predictor(real)
    real_zeros = [np.ravel(v) == 0 for k, v in real_weights.items() if k[0] == "w"]
    rows = [
        dict(
            dataset=name,
            network="real (tanh, AutoDelta)",
            p0=None,
            init=None,
            output=None,
            kl_weight=None,
            steps=steps,
            accuracy=accuracy(predict(real_weights, x_test)),
            sampled_accuracy=None,
            sampled_accuracy_sd=None,
            ensemble_accuracy=None,
            sparsity=float(np.mean(np.concatenate(real_zeros))),
            sparsity_per_layer=None,
            bits_per_weight=32.0,
            entropy_bits=None,
            time=time.perf_counter() - start,
        )
    ]

    runs = [(p0, "random", "sample", cfg["kl_weight"]) for p0 in size["p0s"]]
    runs += [(size["ref_p0"], "real", "sample", cfg["kl_weight"])]
    runs += [(size["ref_p0"], "random", "taylor", cfg["kl_weight"])]
    if size["other_kl"]:
        runs += [(size["ref_p0"], "random", "sample", kw) for kw in cfg["other_kl"]]
    steps = size["steps"][name]
    # the deployed network does not depend on p0 (every weight is substituted)
    predict, predict_many = _predictor(
        functools.partial(ternary_mlp_classifier, hidden=hidden)
    )
    for i, (p0, init, output, kl_weight) in enumerate(runs):
        start = time.perf_counter()
        model = functools.partial(ternary_mlp_classifier, hidden=hidden, p0=p0)
        init_weights = (
            {k: v for k, v in real_weights.items() if k[0] == "w"}
            if init == "real"
            else None
        )
        guide = AutoDiscreteWeight(
            functools.partial(model, batch_size=bs), init_weights=init_weights
        )
        svi = SVI(
            guide.model,
            guide,
            numpyro.optim.Adam(LR),
            PFP_ELBO(kl_weight=kl_weight, output=output),
        )
        key = jax.random.PRNGKey(seed)
        params = svi.run(key, steps, x, y, progress_bar=False).params
        acc = accuracy(predict(guide.most_probable(params), x_test))
        sampled = guide.sample_posterior(
            jax.random.PRNGKey(100 + seed + i), params, sample_shape=(size["samples"],)
        )
        logits = predict_many(sampled, x_test)
        each = [accuracy(lg) for lg in logits]
        probs = np.asarray(jax.nn.softmax(logits, -1)).mean(0)
        low = guide.to_low_precision(params)
        per_layer = guide.sparsity(params)
        n = {k: idx.size for k, (idx, _) in low.items()}
        rows.append(
            dict(
                dataset=name,
                network="ternary",
                p0=p0,
                init=init,
                output=output,
                kl_weight=kl_weight,
                steps=steps,
                accuracy=acc,
                sampled_accuracy=float(np.mean(each)),
                sampled_accuracy_sd=float(np.std(each)),
                ensemble_accuracy=metrics.accuracy(probs, data.y_test),
                sparsity=sum(per_layer[k] * n[k] for k in n) / sum(n.values()),
                sparsity_per_layer=per_layer,
                bits_per_weight=guide.bits_per_weight(),
                entropy_bits=_entropy_bits(low),
                time=time.perf_counter() - start,
            )
        )
    return rows


def sweep(rows: list[dict], kl_weight: float) -> list[dict]:
    """The p0 sweep: random initialisation, sampled output, the data set's KL weight."""
    return [
        r
        for r in rows
        if r["network"] == "ternary"
        and r["init"] == "random"
        and r["output"] == "sample"
        and r["kl_weight"] == kl_weight
    ]


def figure(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    top = 0.0
    for (name, rows), color in zip(results.items(), ("C0", "C1"), strict=False):
        sw = sweep(rows, DATASETS[name]["kl_weight"])
        accs = [r[k] for r in sw for k in ("accuracy", "sampled_accuracy")]
        top = max(top, 100 * rows[0]["accuracy"], *(100 * a for a in accs))
        label = f"{name} (KL weight {DATASETS[name]['kl_weight']})"
        p0 = [r["p0"] for r in sw]
        axes[0].plot(
            p0,
            [100 * r["accuracy"] for r in sw],
            "-o",
            color=color,
            label=f"{label}: most probable",
        )
        axes[0].plot(
            p0,
            [100 * r["sampled_accuracy"] for r in sw],
            "--s",
            color=color,
            label=f"{label}: sampled (mean)",
        )
        axes[0].axhline(
            100 * rows[0]["accuracy"],
            color=color,
            ls=":",
            lw=1,
            label=f"{name}: real-valued",
        )
        axes[1].plot(
            p0, [100 * r["sparsity"] for r in sw], "-o", color=color, label=name
        )
        for k, marker in zip(sw[0]["sparsity_per_layer"], "v^<>", strict=False):
            axes[1].plot(
                p0,
                [100 * r["sparsity_per_layer"][k] for r in sw],
                ":",
                color=color,
                marker=marker,
                ms=4,
                lw=0.8,
                label=f"{name}: {k}",
            )
    axes[0].set_ylim(top=top + 2)  # axhline does not autoscale
    axes[0].set_ylabel("test accuracy (%)")
    axes[1].set_ylabel("zero weights (%)")
    for ax in axes:
        ax.set_xlabel("prior p0 = P(w = 0)")
        ax.axvline(1 / 3, color="0.7", lw=0.8)
        ax.legend(fontsize=7)
    fig.suptitle("Ternary sign-activation networks trained with the PFP")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _fmt(v, pct=True, digits=1):
    if v is None:
        return "—"
    return f"{100 * v:.{digits}f} %" if pct else f"{v:.2f}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny size, for the tests")
    p.add_argument("--dataset", choices=("mnist1d", "digits", "both"), default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", type=Path, default=Path("examples/output/ternary_pfp"))
    args = p.parse_args(argv)
    size = SIZES["smoke" if args.smoke else "full"]
    names = size["datasets"]
    if args.dataset is not None:
        names = ("mnist1d", "digits") if args.dataset == "both" else (args.dataset,)
    if args.smoke:
        size = {**size, "steps": {n: size["steps"].get(n, 150) for n in names}}
    start = time.perf_counter()
    results = {}
    for name in names:
        t = time.perf_counter()
        results[name] = run_dataset(name, size, args.seed)
        print(f"{name}: {time.perf_counter() - t:.0f} s")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    figure(results, args.output / "ternary_pfp.png")
    print(f"total: {time.perf_counter() - start:.0f} s")
    print(
        "| data | network | p0 | init | output | KL weight | most probable "
        "| sampled (mean ± sd) | ensemble | zeros | zeros per layer | bits/weight "
        "| entropy (bits) | time (s) |"
    )
    print("|---|---|---:|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for name, rows in results.items():
        for r in rows:
            p0 = "—" if r["p0"] is None else f"{r['p0']:.2f}"
            sampled = (
                "—"
                if r["sampled_accuracy"] is None
                else f"{100 * r['sampled_accuracy']:.1f} ± "
                f"{100 * r['sampled_accuracy_sd']:.1f} %"
            )
            layers = (
                "—"
                if r["sparsity_per_layer"] is None
                else " / ".join(
                    f"{100 * v:.0f}" for v in r["sparsity_per_layer"].values()
                )
            )
            print(
                f"| {name} | {r['network']} | {p0} | {r['init'] or '—'} "
                f"| {r['output'] or '—'} | {r['kl_weight'] or '—'} "
                f"| {_fmt(r['accuracy'])} | {sampled} | {_fmt(r['ensemble_accuracy'])} "
                f"| {_fmt(r['sparsity'])} | {layers} | {r['bits_per_weight']:.2f} "
                f"| {_fmt(r['entropy_bits'], pct=False)} | {r['time']:.0f} |"
            )
    print(f"written to {args.output.resolve()}")
    return results


if __name__ == "__main__":
    main()
