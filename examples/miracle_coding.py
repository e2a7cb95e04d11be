"""Study: MIRACLE relative-entropy coding of the digits BNN (Havasi et al. 2019), with
the Mean-KL guide against annealed Mean-Var (Lin, Flamich & Hernández-Lobato 2023).

The digits BNN (64-64-10, Normal(0, 1) priors: the coding distribution) is trained at a
total KL budget of 20 000 bits two ways, with the set-up of
``examples/meankl_vs_meanvar.py`` (Adam lr 1e-3, full batch):

* Mean-KL with the budget split by coding block:
  ``AutoMeanKL(kl_budget_bits=20_000, budget_split="blocks", bits_per_block=b)`` +
  ``TraceMeanField_ELBO`` (every block's KL is exactly ``b`` bits; ``encode`` codes
  those blocks);
* Mean-KL with one softmax over all weights (``budget_split="learned"``, the
  default): the coder's blocks then carry 4-33 bits of KL each;
* Mean-Var (MIRACLE): ``AutoNormal`` + ``MeanVarAnnealing`` (10-bit blocks).

Each trained guide is coded with :func:`ppl_hw.coding.encode` (``bits_per_block`` bits
per block, importance-weighted selection ``"sample"``, seed 0), saved to a file,
loaded back and decoded with :func:`ppl_hw.coding.decode`. Reported: total bits, bits
per weight, compression ratio against float32, file size, the decoded network's test
accuracy, and the accuracies of ``samples`` single posterior samples of the guide
(each sample is one network, ``guide.sample_posterior``) with their 5-95 % range: the
decoded network is one (approximate) posterior sample, so its accuracy should lie
inside. Also reported: the decoded accuracy with ``selection="argmax"`` and, at full
size, with two more seeds (for ``"blocks"``, whose blocks are drawn from the seed, two
more guides trained with ``block_seed`` = training seed = 1, 2, each against its own
samples).

Magnitude pruning: for each fraction in 0, 0.1, ..., 0.9 the smallest-|w| fraction of
the **weight matrices** ``w0``, ``w1``, ``w2`` (one global threshold over all three;
the biases are left alone) is set to zero, in the decoded network and, for a less noisy
comparison, in each of the posterior samples (mean and 5-95 % range).

    python examples/miracle_coding.py          # full size (~12 min on 2 cores)
    python examples/miracle_coding.py --smoke  # what the tests run
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np

from ppl_hw import metrics
from ppl_hw.datasets import load_digits

SIZES = {
    # extra_seeds: further encodings (selection "sample") to see the spread of the
    # decoded accuracy; every run also codes once with selection "argmax"
    "smoke": dict(
        steps=400,
        epsilon=2e-2,
        bits_per_block=8,
        samples=50,
        bits=20_000,
        extra_seeds=[],
    ),
    "full": dict(
        steps=30_000,
        epsilon=1e-3,
        bits_per_block=16,
        samples=200,
        bits=20_000,
        extra_seeds=[1, 2],
    ),
}
PRUNE = tuple(round(0.1 * i, 1) for i in range(10))
KINDS = (
    ("meankl_blocks", "Mean-KL (blocks)"),
    ("meankl", "Mean-KL (learned)"),
    ("meanvar", "Mean-Var"),
)
WEIGHT_SITES = ("w0", "w1", "w2")
FIGURE = "miracle_coding.png"
DOCS_STATIC = Path(__file__).resolve().parents[1] / "docs" / "_static"


def _train(kind: str, size: dict, seed: int, x, y):
    """Train one guide; returns ``(guide, params, kl_nats)``."""
    import jax
    import numpyro
    from numpyro.infer import SVI, TraceMeanField_ELBO
    from numpyro.infer.autoguide import AutoNormal

    from ppl_hw.numpyro.autoguide import AutoMeanKL
    from ppl_hw.numpyro.infer import MeanVarAnnealing
    from ppl_hw.numpyro.models import mlp_classifier

    if kind.startswith("meankl"):
        split = (
            dict(
                budget_split="blocks",
                bits_per_block=size["bits_per_block"],
                block_seed=seed,
            )
            if kind == "meankl_blocks"
            else {}
        )
        guide = AutoMeanKL(mlp_classifier, kl_budget_bits=size["bits"], **split)
        svi = SVI(
            mlp_classifier, guide, numpyro.optim.Adam(1e-3), TraceMeanField_ELBO()
        )
        state = svi.init(jax.random.PRNGKey(seed), x, y)
        update = jax.jit(lambda s: svi.update(s, x, y))
        for _ in range(size["steps"]):
            state, _ = update(state)
        params = svi.get_params(state)
        return guide, params, float(guide.kl(params)[0])
    guide = AutoNormal(mlp_classifier)
    mv = MeanVarAnnealing(
        mlp_classifier,
        guide,
        numpyro.optim.Adam(1e-3),
        kl_budget_bits=size["bits"],
        bits_per_block=10.0,
        epsilon=size["epsilon"],
        seed=seed,
    )
    state = mv.init(jax.random.PRNGKey(seed), x, y)
    step = jax.jit(lambda s: mv.update(s, x, y))
    for _ in range(size["steps"]):
        state, _ = step(state)
    params = mv.get_params(state)
    return guide, params, float(mv.block_kl(params).sum())


def _prune(weights: dict, fraction: float) -> dict:
    """Zero the smallest-|w| ``fraction`` of the weight matrices (one global
    threshold over ``WEIGHT_SITES``; biases untouched). Works on a leading batch axis
    when the arrays have one more dimension than a single network's."""
    import jax.numpy as jnp

    if fraction == 0:
        return weights
    batched = weights["w0"].ndim == 3
    lead = (weights["w0"].shape[0],) if batched else ()
    flat = jnp.concatenate(
        [jnp.abs(weights[n]).reshape(*lead, -1) for n in WEIGHT_SITES], axis=-1
    )
    k = int(fraction * flat.shape[-1])
    # the k-th smallest magnitude; ties at the threshold are vanishingly unlikely
    thresh = jnp.sort(flat, axis=-1)[..., k - 1]
    out = dict(weights)
    for n in WEIGHT_SITES:
        t = thresh.reshape(*lead, 1, 1) if batched else thresh
        out[n] = jnp.where(jnp.abs(weights[n]) <= t, 0.0, weights[n])
    return out


def study(size: dict, seed: int, outdir: Path) -> dict:
    import jax
    import jax.numpy as jnp
    from numpyro import handlers

    from ppl_hw.coding import CompressedModel, decode, encode
    from ppl_hw.numpyro.models import mlp_classifier

    data = load_digits()
    x, y, x_test = (jnp.asarray(a) for a in (data.x_train, data.y_train, data.x_test))
    y_test = np.asarray(data.y_test)

    def logits(weights):
        model = handlers.substitute(handlers.seed(mlp_classifier, 0), data=weights)
        return handlers.trace(model).get_trace(x_test)["logits"]["value"]

    acc_one = jax.jit(lambda w: jnp.mean(jnp.argmax(logits(w), -1) == y_test))
    acc_many = jax.jit(
        jax.vmap(lambda w: jnp.mean(jnp.argmax(logits(w), -1) == y_test))
    )
    probs_many = jax.jit(jax.vmap(lambda w: jax.nn.softmax(logits(w), -1)))

    results: dict = dict(
        size=size,
        seed=seed,
        num_test=int(y_test.size),
        prune_fractions=list(PRUNE),
        pruned_sites=list(WEIGHT_SITES),
    )

    def sample_accuracies(guide, params, s, names):
        post = guide.sample_posterior(
            jax.random.PRNGKey(s + 1), params, sample_shape=(size["samples"],)
        )
        post = {n: post[n] for n in names}
        return post, np.asarray(acc_many(post))

    def code(kind, guide, params, **kw):
        # the "blocks" guide fixes its own blocks, bits and seed
        if kind != "meankl_blocks":
            kw.setdefault("bits_per_block", size["bits_per_block"])
        return encode(guide, params, **kw)

    for kind, _ in KINDS:
        t0 = time.perf_counter()
        guide, params, kl = _train(kind, size, seed, x, y)
        t_train = time.perf_counter() - t0
        t0 = time.perf_counter()
        compressed = code(kind, guide, params, seed=seed)
        t_encode = time.perf_counter() - t0
        path = outdir / f"{kind}.mrc"
        compressed.save(path)
        loaded = CompressedModel.load(path)
        t0 = time.perf_counter()
        decoded = decode(loaded, backend="numpyro")
        t_decode = time.perf_counter() - t0
        direct = decode(compressed)
        assert all(np.array_equal(direct[n], np.asarray(decoded[n])) for n in direct)
        report = compressed.report()
        assert report["file_bytes"] == path.stat().st_size
        decoded_acc = float(acc_one(decoded))

        post, sample_acc = sample_accuracies(guide, params, seed, decoded)
        lo, hi = (float(v) for v in np.percentile(sample_acc, [5, 95]))
        ensemble = float(
            metrics.accuracy(np.asarray(probs_many(post)).mean(0), data.y_test)
        )
        c = code(kind, guide, params, seed=seed, selection="argmax")
        variants = [
            dict(
                selection="argmax",
                seed=seed,
                decoded_accuracy=float(acc_one(decode(c, backend="numpyro"))),
            )
        ]
        for s in size["extra_seeds"]:
            row: dict = dict(selection="sample", seed=s)
            if kind == "meankl_blocks":
                # blocks are drawn from the seed: a new guide per seed, against
                # its own posterior samples
                g, p, _ = _train(kind, size, s, x, y)
                c = code(kind, g, p)
                _, accs = sample_accuracies(g, p, s, decoded)
                row.update(
                    retrained=True,
                    sample_accuracy_p05=float(np.percentile(accs, 5)),
                    sample_accuracy_p95=float(np.percentile(accs, 95)),
                    sample_accuracy_mean=float(accs.mean()),
                )
            else:
                c = code(kind, guide, params, seed=s)
            row["decoded_accuracy"] = float(acc_one(decode(c, backend="numpyro")))
            variants.append(row)
        pruning = []
        for f in PRUNE:
            accs = np.asarray(acc_many(_prune(post, f)))
            pruning.append(
                dict(
                    fraction=f,
                    decoded=float(acc_one(_prune(decoded, f))),
                    samples_mean=float(accs.mean()),
                    samples_p05=float(np.percentile(accs, 5)),
                    samples_p95=float(np.percentile(accs, 95)),
                )
            )
        results[kind] = dict(
            kl_nats=kl,
            kl_bits=kl / np.log(2),
            **report,
            decoded_accuracy=decoded_acc,
            sample_accuracies=sample_acc.tolist(),
            sample_accuracy_mean=float(sample_acc.mean()),
            sample_accuracy_p05=lo,
            sample_accuracy_p95=hi,
            decoded_inside=bool(lo <= decoded_acc <= hi),
            ensemble_accuracy=ensemble,
            other_encodings=variants,
            pruning=pruning,
            seconds=dict(train=t_train, encode=t_encode, decode=t_decode),
        )
        print(
            f"{kind}: trained {t_train:.0f} s, encoded {t_encode:.0f} s; "
            f"decoded acc {decoded_acc:.4f} in [{lo:.4f}, {hi:.4f}]"
        )
    return results


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny size, for the tests")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--output", type=Path, default=Path("examples/output/miracle_coding")
    )
    args = p.parse_args(argv)
    size = SIZES["smoke" if args.smoke else "full"]
    start = time.perf_counter()
    args.output.mkdir(parents=True, exist_ok=True)
    res = study(size, args.seed, args.output)
    res["seconds"] = time.perf_counter() - start
    (args.output / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    figure(res, args.output / FIGURE)
    if not args.smoke:
        DOCS_STATIC.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(args.output / FIGURE, DOCS_STATIC / FIGURE)
    print(f"total: {res['seconds']:.0f} s")
    print(
        "| guide | KL (bits) | total bits | bits/weight | ratio vs float32 "
        "| file (bytes) | decoded acc | 5-95 % of samples | inside |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for kind, label in KINDS:
        r = res[kind]
        print(
            f"| {label} | {r['kl_bits']:.0f} | {r['total_bits']} "
            f"| {r['bits_per_weight']:.3f} | {r['compression_ratio']:.1f}x "
            f"| {r['file_bytes']} | {100 * r['decoded_accuracy']:.1f} % "
            f"| {100 * r['sample_accuracy_p05']:.1f}-"
            f"{100 * r['sample_accuracy_p95']:.1f} % | {r['decoded_inside']} |"
        )
    for kind, _ in KINDS:
        for v in res[kind]["other_encodings"]:
            own = (
                f" (its samples {100 * v['sample_accuracy_p05']:.1f}-"
                f"{100 * v['sample_accuracy_p95']:.1f} %)"
                if v.get("retrained")
                else ""
            )
            print(
                f"{kind} {v['selection']} seed {v['seed']}: "
                f"decoded acc {100 * v['decoded_accuracy']:.1f} %{own}"
            )
    labels = [label for _, label in KINDS]
    print(
        "| pruned | "
        + " | ".join(f"{lb} decoded" for lb in labels)
        + " | "
        + " | ".join(f"{lb} samples" for lb in labels)
        + " |"
    )
    print("|---:|" + "---:|" * (2 * len(KINDS)))
    rows = zip(*(res[k]["pruning"] for k, _ in KINDS), strict=True)
    for row in rows:
        cells = [f"{100 * r['decoded']:.1f} %" for r in row]
        cells += [f"{100 * r['samples_mean']:.1f} %" for r in row]
        print(f"| {row[0]['fraction']:.0%} | " + " | ".join(cells) + " |")
    print(f"written to {args.output.resolve()}")
    return res


def figure(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    styles = tuple((kind, label, f"C{i}") for i, (kind, label) in enumerate(KINDS))
    for kind, label, colour in styles:
        r = res[kind]
        accs = 100 * np.asarray(r["sample_accuracies"])
        ax1.hist(accs, bins=25, alpha=0.5, color=colour, label=f"{label} samples")
        ax1.axvline(100 * r["decoded_accuracy"], color=colour, lw=2, ls="--")
        for q in ("sample_accuracy_p05", "sample_accuracy_p95"):
            ax1.axvline(100 * r[q], color=colour, lw=0.8, ls=":")
    ax1.set_xlabel("test accuracy (%) of one network")
    ax1.set_ylabel("posterior samples")
    ax1.set_title("decoded (dashed) vs posterior samples (5-95 % dotted)")
    ax1.legend(fontsize=8)
    for kind, label, colour in styles:
        rows = res[kind]["pruning"]
        f = [100 * r["fraction"] for r in rows]
        ax2.plot(
            f,
            [100 * r["decoded"] for r in rows],
            "o-",
            color=colour,
            label=f"{label} decoded",
        )
        ax2.plot(
            f,
            [100 * r["samples_mean"] for r in rows],
            "--",
            color=colour,
            label=f"{label} samples (mean, 5-95 %)",
        )
        ax2.fill_between(
            f,
            [100 * r["samples_p05"] for r in rows],
            [100 * r["samples_p95"] for r in rows],
            color=colour,
            alpha=0.15,
        )
    ax2.set_xlabel("weights pruned by magnitude (%)")
    ax2.set_ylabel("test accuracy (%)")
    ax2.set_title("magnitude pruning of w0, w1, w2")
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
