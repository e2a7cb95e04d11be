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

``--recipe`` runs the second study instead: Roth & Pernkopf's training recipe on
MNIST-1D, each part alone and all together (``RECIPE_ROWS``): initialisation from a
real-valued twin pretrained as the paper does (dropout 0.2/0.4/0.4, annealed learning
rate, twice the steps), the annealed learning rate (Adam, 1e-2 for the logits and 1e-3
for the real parameters, halved four times over the run), dropout on the PFP moments
before each layer (0.1/0.2/0.3), and twice the steps; over several seeds, with mean ±
sd, a paired t-test against the baseline and a figure (``ternary_recipe.png``).

    python examples/ternary_pfp.py          # full size (~9 min on 2 cores)
    python examples/ternary_pfp.py --smoke  # what the tests run
    python examples/ternary_pfp.py --recipe --seeds 0 1 2  # the recipe ablation
    python examples/ternary_pfp.py --recipe --hidden 128 128 --steps 1000 --seeds 0 1 2
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


def _dropout(h, p):
    """``nn.dropout`` (inverted: kept units scaled by 1/(1 - p); on PFP moments the
    same mask multiplies mean and variance) when ``p`` > 0."""
    from ppl_hw.numpyro import nn

    return nn.dropout(h, p) if p else h


def real_mlp_classifier(
    x,
    y=None,
    *,
    hidden=(256, 256),
    num_classes=10,
    out_scale=3.0,
    batch_size=None,
    dropout=None,
):
    """The real-valued twin of ``ternary_mlp_classifier``: the same sites, scaling and
    batch norm, Normal(0, 1) weights and tanh for sign. ``dropout``: drop
    probabilities before each layer (training only; ``None`` for prediction)."""
    import jax.numpy as jnp
    import numpyro.distributions as dist

    sizes = (x.shape[-1], *hidden, num_classes)
    drops = _check_dropout(dropout, len(sizes) - 1)
    _mlp(x, y, sizes, dist.Normal(0.0, 1.0), drops, jnp.tanh, out_scale, batch_size)


def _mlp(x, y, sizes, prior, drops, activation, out_scale, batch_size, logits=None):
    """The body both example models share: weights ``prior`` per layer (scaled by
    1/sqrt(fan-in)), dropout ``drops`` before each layer, ``activation(BN(.))`` on the
    hidden layers, ``out_scale * h + b`` with a real Normal(0, 1) output bias (through
    ``logits``, e.g. ``nn.sample_logits`` for PFP moments)."""
    import numpyro
    import numpyro.distributions as dist

    from ppl_hw.numpyro import nn

    num_classes = sizes[-1]
    ws = [
        numpyro.sample(f"w{i}", prior.expand([a, b]).to_event(2))
        for i, (a, b) in enumerate(itertools.pairwise(sizes))
    ]
    b = numpyro.sample(
        f"b{len(ws) - 1}", dist.Normal(0.0, 1.0).expand([num_classes]).to_event(1)
    )
    with numpyro.plate("data", x.shape[0], subsample_size=batch_size):
        h = numpyro.subsample(x, event_dim=1)
        for i, w in enumerate(ws):
            h = nn.dense(_dropout(h, drops[i]), w) * sizes[i] ** -0.5
            if i < len(ws) - 1:
                h = activation(nn.batch_norm(h))
        out = out_scale * h + b
        out = numpyro.deterministic("logits", out if logits is None else logits(out))
        obs = None if y is None else numpyro.subsample(y, event_dim=0)
        numpyro.sample("y", dist.Categorical(logits=out), obs=obs)


def _check_dropout(dropout, layers: int) -> tuple[float, ...]:
    """``dropout``: ``None`` (no dropout) or one drop probability in [0, 1) per
    layer."""
    if dropout is None:
        return (0.0,) * layers
    drops = tuple(dropout)
    if len(drops) != layers or not all(
        isinstance(p, int | float) and 0 <= p < 1 for p in drops
    ):
        raise ValueError(
            f"dropout must be None or {layers} probabilities in [0, 1), got {dropout!r}"
        )
    return tuple(float(p) for p in drops)


def ternary_dropout_classifier(
    x,
    y=None,
    *,
    hidden=(256, 256),
    num_classes=10,
    p0=0.5,
    out_scale=3.0,
    batch_size=None,
    dropout=None,
):
    """``ternary_mlp_classifier`` (ternary weights, sign(BN(.)) hidden layers, real
    output bias) with dropout before each layer, as in Roth & Pernkopf's MNIST-PI
    script (0.1 / 0.2 / 0.3). Under ``PFP_ELBO`` the units are moments and one
    Bernoulli mask per unit multiplies mean and variance (``nn.dropout``). The
    library's dropout is inverted (kept units scaled by 1/(1 - p), none at
    prediction); the paper's is not (prediction multiplies by 1 - p): the two differ
    by a constant factor on each layer's pre-activation, which batch norm and the sign
    remove in the hidden layers and which in the output layer amounts to an output
    scale 3/(1 - p) instead of 3. With ``dropout=None`` this is the library model."""
    import jax.numpy as jnp

    from ppl_hw.common.models import discrete_prior_probs
    from ppl_hw.numpyro import nn
    from ppl_hw.numpyro.distributions import DiscreteWeight
    from ppl_hw.numpyro.models import ternary_mlp_classifier

    sizes = (x.shape[-1], *hidden, num_classes)
    drops = _check_dropout(dropout, len(sizes) - 1)
    if not any(drops):
        return ternary_mlp_classifier(
            x,
            y,
            hidden=hidden,
            num_classes=num_classes,
            p0=p0,
            out_scale=out_scale,
            batch_size=batch_size,
        )
    values = (-1.0, 0.0, 1.0)
    prior = DiscreteWeight(values, probs=jnp.asarray(discrete_prior_probs(values, p0)))
    _mlp(
        x,
        y,
        sizes,
        prior,
        drops,
        nn.sign,
        out_scale,
        batch_size,
        logits=nn.sample_logits,
    )


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


# -- Roth & Pernkopf's training recipe, ablated ---------------------------------------

RECIPE_PARTS = ("init", "anneal", "dropout", "longer")
# the ablation: the baseline, each part alone, all of them (the full recipe)
RECIPE_ROWS = {
    "baseline": (),
    "+ init real": ("init",),
    "+ anneal": ("anneal",),
    "+ dropout": ("dropout",),
    "+ longer": ("longer",),
    "full recipe": RECIPE_PARTS,
}
TWINS = ("twin", "twin, recipe")  # real-valued: plain, and the paper's pretraining
RECIPE = dict(
    p0=0.5,
    lr=1e-2,  # constant: the baseline's learning rate for every parameter
    lr_logits=1e-2,  # anneal: the paper's learning rates, logits and real parameters
    lr_real=1e-3,
    halvings=4,  # anneal: lr x 0.5 at every fifth of the run (500 epochs, x0.5 / 100)
    dropout=(0.1, 0.2, 0.3),  # before each layer (the MNIST-PI script)
    twin_dropout=(0.2, 0.4, 0.4),  # the paper's real-valued pretraining
)
RECIPE_SIZES = {
    "smoke": dict(
        datasets=("digits",),
        hidden=(16, 16),
        steps={"mnist1d": 30, "digits": 30},
        twin_steps=30,
        longer=2,
        samples=2,
    ),
    "full": dict(
        datasets=("mnist1d",),
        hidden=(256, 256),
        steps={"mnist1d": 2000, "digits": 1000},
        twin_steps=1000,
        longer=2,  # "longer": this many times the steps (250 epochs on MNIST-1D)
        samples=10,
    ),
}


def recipe_optimizer(steps: int, anneal: bool, lr_real: float | None = None):
    """Adam: ``RECIPE["lr"]`` for every parameter, or (``anneal``) the paper's
    learning rates, ``lr_logits`` for the guide's logits (parameters named
    ``*_logits``) and ``lr_real`` (or the argument) for the real ones, each halved
    ``halvings`` times at equal intervals of the run (``optax.multi_transform`` on the
    parameter names)."""
    import numpyro
    import optax

    if not anneal:
        return numpyro.optim.Adam(RECIPE["lr"])

    def schedule(lr):
        return optax.exponential_decay(
            lr,
            transition_steps=max(steps // (RECIPE["halvings"] + 1), 1),
            decay_rate=0.5,
            staircase=True,
        )

    tx = optax.multi_transform(
        {
            "logits": optax.adam(schedule(RECIPE["lr_logits"])),
            "real": optax.adam(schedule(lr_real or RECIPE["lr_real"])),
        },
        lambda params: {
            k: "logits" if k.endswith("_logits") else "real" for k in params
        },
    )
    return numpyro.optim.optax_to_numpyro(tx)


def _train(guide, elbo, optim, steps, seed, x, y):
    import jax
    from numpyro.infer import SVI

    svi = SVI(guide.model, guide, optim, elbo)
    res = svi.run(jax.random.PRNGKey(seed), steps, x, y, progress_bar=False)
    return res.params, np.asarray(res.losses)


def run_recipe(
    name: str, size: dict, seed: int, rows=None, on_record=None
) -> list[dict]:
    """The ablation of Roth & Pernkopf's recipe on one data set and seed: the two
    real-valued twins (plain, and the paper's pretraining with dropout and the longer
    annealed run), then the ternary rows of ``RECIPE_ROWS`` (all, or those named in
    ``rows``). Each record holds the most probable network's test and training
    accuracy, the sampled networks' mean accuracy and their ensemble's, the share of
    zero weights, the final loss (mean of the last 5 % of steps) and the time;
    ``on_record(records)`` is called after each run."""
    import functools

    import jax
    import jax.numpy as jnp
    from numpyro.infer import Trace_ELBO
    from numpyro.infer.autoguide import AutoDelta

    from ppl_hw.numpyro.autoguide import AutoDiscreteWeight
    from ppl_hw.numpyro.infer import PFP_ELBO

    rows = list(TWINS + tuple(RECIPE_ROWS)) if rows is None else list(rows)
    unknown = set(rows) - set(TWINS) - set(RECIPE_ROWS)
    if unknown:
        raise ValueError(
            f"rows must be among {list(TWINS + tuple(RECIPE_ROWS))}, "
            f"got {sorted(unknown)}"
        )
    # the pretrained twin is trained (and recorded) whenever a row starts from it
    need = {t for t in TWINS if t in rows}
    if any("init" in RECIPE_ROWS.get(r, ()) for r in rows):
        need.add("twin, recipe")
    cfg = DATASETS[name]
    data = load(name)
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    x_test = jnp.asarray(data.x_test)
    hidden, bs = size["hidden"], cfg["batch_size"]
    base_steps = size["steps"][name]

    def accuracy(logits, labels):
        return metrics.accuracy(np.asarray(jax.nn.softmax(logits, -1)), labels)

    def tail(losses):
        return float(np.mean(losses[-max(len(losses) // 20, 1) :]))

    out = []
    twins = {}
    predict_real, _ = _predictor(functools.partial(real_mlp_classifier, hidden=hidden))
    for twin, dropout, parts in (
        ("twin", None, ()),
        ("twin, recipe", RECIPE["twin_dropout"], ("anneal", "dropout", "longer")),
    ):
        if twin not in need:
            continue
        start = time.perf_counter()
        steps = size["twin_steps"] * (size["longer"] if "longer" in parts else 1)
        model = functools.partial(
            real_mlp_classifier, hidden=hidden, batch_size=bs, dropout=dropout
        )
        guide = AutoDelta(model)
        params, losses = _train(
            guide,
            Trace_ELBO(),
            # the twin's own learning rate (1e-3, the paper's for real parameters,
            # leaves a 1 000-step run far from converged), annealed in the recipe
            recipe_optimizer(steps, "anneal" in parts, lr_real=RECIPE["lr"]),
            steps,
            seed,
            x,
            y,
        )
        weights = guide.median(params)
        twins[twin] = {k: v for k, v in weights.items() if k[0] == "w"}
        out.append(
            dict(
                dataset=name,
                row=twin,
                seed=seed,
                parts=list(parts),
                dropout=dropout,
                steps=steps,
                accuracy=accuracy(predict_real(weights, x_test), data.y_test),
                train_accuracy=accuracy(predict_real(weights, x), data.y_train),
                sampled_accuracy=None,
                ensemble_accuracy=None,
                sparsity=None,
                final_loss=tail(losses),
                time=time.perf_counter() - start,
            )
        )
        print(
            f"  {name} seed {seed} {twin}: {100 * out[-1]['accuracy']:.1f} % "
            f"(train {100 * out[-1]['train_accuracy']:.1f} %), "
            f"{out[-1]['time']:.0f} s",
            flush=True,
        )
        if on_record is not None:
            on_record(out)

    predict, predict_many = _predictor(
        functools.partial(ternary_dropout_classifier, hidden=hidden)
    )
    for i, row in enumerate(r for r in rows if r in RECIPE_ROWS):
        parts = RECIPE_ROWS[row]
        start = time.perf_counter()
        steps = base_steps * (size["longer"] if "longer" in parts else 1)
        dropout = RECIPE["dropout"] if "dropout" in parts else None
        model = functools.partial(
            ternary_dropout_classifier,
            hidden=hidden,
            p0=RECIPE["p0"],
            batch_size=bs,
            dropout=dropout,
        )
        guide = AutoDiscreteWeight(
            model,
            init_weights=twins["twin, recipe"] if "init" in parts else None,
            seed=seed,
        )
        params, losses = _train(
            guide,
            PFP_ELBO(kl_weight=cfg["kl_weight"]),
            recipe_optimizer(steps, "anneal" in parts),
            steps,
            seed,
            x,
            y,
        )
        best = guide.most_probable(params)
        sampled = guide.sample_posterior(
            jax.random.PRNGKey(1000 + 10 * seed + i),
            params,
            sample_shape=(size["samples"],),
        )
        logits = predict_many(sampled, x_test)
        per_layer = guide.sparsity(params)
        n = {k: v.size for k, v in best.items() if k in per_layer}
        out.append(
            dict(
                dataset=name,
                row=row,
                seed=seed,
                parts=list(parts),
                dropout=dropout,
                steps=steps,
                accuracy=accuracy(predict(best, x_test), data.y_test),
                train_accuracy=accuracy(predict(best, x), data.y_train),
                sampled_accuracy=float(
                    np.mean([accuracy(lg, data.y_test) for lg in logits])
                ),
                ensemble_accuracy=metrics.accuracy(
                    np.asarray(jax.nn.softmax(logits, -1)).mean(0), data.y_test
                ),
                sparsity=sum(per_layer[k] * n[k] for k in n) / sum(n.values()),
                final_loss=tail(losses),
                time=time.perf_counter() - start,
            )
        )
        print(
            f"  {name} seed {seed} {row}: {100 * out[-1]['accuracy']:.1f} % "
            f"(train {100 * out[-1]['train_accuracy']:.1f} %), "
            f"{out[-1]['time']:.0f} s",
            flush=True,
        )
        if on_record is not None:
            on_record(out)
    return out


def summarise(records: list[dict]) -> dict:
    """Per data set and row: mean and sd over seeds (sd with n - 1) of each
    accuracy, and for the ternary rows the paired t-test against the baseline over the
    seeds both have (``scipy.stats.ttest_rel``, two-sided)."""
    from scipy import stats

    keys = ("accuracy", "train_accuracy", "sampled_accuracy", "ensemble_accuracy")
    keys += ("sparsity", "time")
    by_data: dict = {}
    for r in records:
        by_data.setdefault(r["dataset"], {}).setdefault(r["row"], []).append(r)
    out: dict = {}
    for name, by_row in by_data.items():
        out[name] = {}
        base = {r["seed"]: r["accuracy"] for r in by_row.get("baseline", [])}
        for row, rs in by_row.items():
            s: dict = {"seeds": [r["seed"] for r in rs], "steps": rs[0]["steps"]}
            for k in keys:
                v = [r[k] for r in rs if r[k] is not None]
                if v:
                    s[k] = float(np.mean(v))
                    s[k + "_sd"] = float(np.std(v, ddof=1)) if len(v) > 1 else None
            common = [r for r in rs if r["seed"] in base]
            if row in RECIPE_ROWS and row != "baseline" and len(common) > 1:
                diff = [r["accuracy"] - base[r["seed"]] for r in common]
                s["vs_baseline"] = float(np.mean(diff))
                s["vs_baseline_p"] = (
                    float(
                        stats.ttest_rel(
                            [r["accuracy"] for r in common],
                            [base[r["seed"]] for r in common],
                        ).pvalue
                    )
                    if np.std(diff) > 0
                    else None
                )
            out[name][row] = s
    return out


def recipe_figure(
    summary: dict, records: list[dict], path: Path, note: str = ""
) -> None:
    """Test accuracy of each ternary row: per-seed points and mean ± sd, with the
    training accuracy (mean, open squares); the twins' test accuracy as bands (mean ±
    sd). ``note`` is added to the titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summary)
    fig, axes = plt.subplots(1, len(names), figsize=(9.0 * len(names), 4.0))
    axes = np.atleast_1d(axes)
    for ax, name in zip(axes, names, strict=True):
        rows = [r for r in RECIPE_ROWS if r in summary[name]]
        for j, row in enumerate(rows):
            s = summary[name][row]
            pts = [
                100 * r["accuracy"]
                for r in records
                if r["dataset"] == name and r["row"] == row
            ]
            ax.plot([j + 0.15] * len(pts), pts, "o", color="0.5", ms=3)
            ax.errorbar(
                j,
                100 * s["accuracy"],
                yerr=100 * (s["accuracy_sd"] or 0),
                fmt="s",
                color="C0",
                capsize=4,
                label="test (mean ± sd; dots: seeds)" if j == 0 else None,
            )
            ax.plot(
                j,
                100 * s["train_accuracy"],
                "s",
                mfc="none",
                color="C3",
                label="training set (mean)" if j == 0 else None,
            )
        for twin, color in (("twin", "C1"), ("twin, recipe", "C2")):
            if twin in summary[name]:
                s = summary[name][twin]
                m, sd = 100 * s["accuracy"], 100 * (s["accuracy_sd"] or 0)
                ax.axhspan(m - sd, m + sd, color=color, alpha=0.2, lw=0)
                ax.axhline(
                    m,
                    color=color,
                    lw=1,
                    label=f"real-valued {twin}: {m:.1f} ± {sd:.1f} %",
                )
        ax.set_xticks(range(len(rows)), rows, rotation=20, fontsize=8)
        ax.set_ylabel("accuracy (%)")
        ax.set_title(
            f"{name}{note}: most probable ternary network",
            fontsize=9,
        )
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def recipe_table(summary: dict) -> str:
    """The ablation as a markdown table (mean ± sd over seeds)."""

    def pm(s, k):
        if k not in s:
            return "—"
        sd = s.get(k + "_sd")
        return f"{100 * s[k]:.1f}" + ("" if sd is None else f" ± {100 * sd:.1f}") + " %"

    lines = [
        "| data | row | steps | seeds | most probable (test) | most probable (train) "
        "| sampled (mean) | ensemble | zeros | vs baseline (paired t, p) | time (s) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, by_row in summary.items():
        order = [r for r in ("twin", "twin, recipe", *RECIPE_ROWS) if r in by_row]
        for row in order:
            s = by_row[row]
            vs = "—"
            if "vs_baseline" in s:
                p = s["vs_baseline_p"]
                vs = f"{100 * s['vs_baseline']:+.1f} pt" + (
                    "" if p is None else f" (p = {p:.2g})"
                )
            lines.append(
                f"| {name} | {row} | {s['steps']} | {len(s['seeds'])} "
                f"| {pm(s, 'accuracy')} | {pm(s, 'train_accuracy')} "
                f"| {pm(s, 'sampled_accuracy')} | {pm(s, 'ensemble_accuracy')} "
                f"| {pm(s, 'sparsity')} | {vs} | {s['time']:.0f} |"
            )
    return "\n".join(lines)


def recipe_main(args) -> dict:
    """``--recipe``: run the ablation for each seed (each seed's records written to
    ``recipe_seed<k>.json`` after every run), then summarise every seed file of the
    same sizes (``--hidden``, ``--steps``) in the output directory into
    ``recipe.json`` and the figure."""
    size_name = "smoke" if args.smoke else "full"
    size = dict(RECIPE_SIZES[size_name])
    if args.hidden is not None:
        size["hidden"] = tuple(args.hidden)
    if args.steps is not None:
        size["steps"] = {n: args.steps for n in size["steps"]}
    names = size["datasets"]
    if args.dataset is not None:
        names = ("mnist1d", "digits") if args.dataset == "both" else (args.dataset,)
    args.output.mkdir(parents=True, exist_ok=True)
    # a JSON round trip, so that the saved sizes compare equal to this run's
    config = json.loads(json.dumps(dict(size=size_name, recipe=RECIPE, sizes=size)))
    for seed in args.seeds:
        path = args.output / f"recipe_seed{seed}{args.tag}.json"
        done: list[dict] = []

        def save(records, path=path, done=done):
            path.write_text(
                json.dumps(dict(config=config, records=done + records), indent=2)
            )

        for name in names:
            done += run_recipe(name, size, seed, args.rows, on_record=save)
    found: dict = {}  # (data set, row, seed) -> record; the newest file wins
    for path in sorted(
        args.output.glob("recipe_seed*.json"), key=lambda f: f.stat().st_mtime
    ):
        saved = json.loads(path.read_text())
        if saved["config"]["sizes"] == config["sizes"]:
            for r in saved["records"]:
                found[r["dataset"], r["row"], r["seed"]] = r
    order = {row: i for i, row in enumerate(TWINS + tuple(RECIPE_ROWS))}
    records = sorted(
        found.values(), key=lambda r: (r["dataset"], r["seed"], order[r["row"]])
    )
    summary = summarise(records)
    text = json.dumps(dict(config=config, summary=summary, records=records), indent=2)
    (args.output / "recipe.json").write_text(text + "\n")
    result = json.loads(text)  # what the file holds (lists for tuples)
    hidden = "-".join(str(h) for h in size["hidden"])
    steps = "/".join(str(v) for k, v in size["steps"].items() if k in names)
    recipe_figure(
        summary,
        records,
        args.output / "ternary_recipe.png",
        note=f" (hidden {hidden}, {steps} steps)",
    )
    print(recipe_table(summary))
    print(f"written to {args.output.resolve()}")
    return result


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
    p.add_argument(
        "--recipe",
        action="store_true",
        help="the ablation of Roth & Pernkopf's recipe instead of the p0 study",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs="*",
        default=None,
        help="--recipe: seeds to run (none: summarise the saved runs)",
    )
    p.add_argument(
        "--rows",
        nargs="+",
        choices=list(TWINS + tuple(RECIPE_ROWS)),
        default=None,
        help="--recipe: the rows to run, in this order (default: all)",
    )
    p.add_argument(
        "--tag",
        default="",
        help="--recipe: suffix of the per-seed files (runs of one seed in parallel)",
    )
    p.add_argument(
        "--hidden",
        type=int,
        nargs="+",
        default=None,
        help="--recipe: hidden layer widths (default: the size's)",
    )
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="--recipe: steps of a ternary run before 'longer' (default: the size's)",
    )
    args = p.parse_args(argv)
    if args.recipe:
        if args.seeds is None:
            args.seeds = [args.seed]
        return recipe_main(args)
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
