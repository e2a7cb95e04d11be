"""Study: hardware-aware training (HAT) of Bayesian networks for a PCM crossbar.

For each backend and each of two BNNs, the digits MLP (64-64-10, classification) and a
regression BNN (one tanh hidden layer on Ke & Fan's sparse regression, 100 inputs),
trains an ``AutoNormal`` posterior twice, with the same steps, learning rate, seed and
starting point (unconstrained locations 0, scales 0.1, on both backends):

- **off-chip**: ``SVI(model, guide, ...)``;
- **HAT**: ``SVI(crossbar(model, device=..., t_inference=t_train,
  reprogram="per_sample"), guide, ...)``: every ELBO evaluation programs a new chip
  (fresh programming noise, drift exponents and read noise, read ``t_train`` seconds
  after programming, through the converters), so the likelihood is that of the
  weights as a chip returns them. ``--noise-scale k`` multiplies the programming and
  read noise of the training device (aihwkit's ``modifier.std_dev`` for
  ``PCM_NOISE``).

Both posteriors are then deployed on the same chips (seeds 0..C-1, the same draws and
the same read-noise keys for both) with ``ppl_hw.devices.PCM()`` at 1 day and 1 year,
and scored on the test set: accuracy and NLL (classification), RMSE of the predictive
mean and Gaussian-mixture NLL (regression), mean ± sd over chips, with the paired gain
(HAT - off-chip, chip by chip), a paired t-test over the chips and, as the control, the
same difference without a chip (what training under the chip changed in the posterior
itself). Each posterior is one training run: the t-test is over chips, not over
trainings.

    python examples/hardware_aware_training.py            # full size (~12 min, 2 cores)
    python examples/hardware_aware_training.py --smoke    # what the tests run (~2 min)
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ppl_hw import devices, metrics
from ppl_hw.datasets import load_digits, make_sparse_regression

TIMES = {"1 day": 86_400.0, "1 year": 31_536_000.0}
SIZES = {
    "smoke": dict(
        digits_steps=60,
        regression_steps=60,
        samples=8,
        chips=2,
        regression_data=dict(num_features=20, n_train=256, n_test=128),
    ),
    "full": dict(
        digits_steps=3000,
        regression_steps=3000,
        samples=100,
        chips=8,
        regression_data=dict(),  # the "smoke" problem of make_sparse_regression
    ),
}
LR = 1e-2
HIDDEN = 50  # hidden units of the regression BNN
# the crossbar's sites: every weight and bias (what sites=None takes in the MLP);
# the regression BNN lists its own, so that neither sigma nor y is touched
SITES = {"digits": None, "regression": ["w0", "b0", "w1", "b1"]}
METRICS = {"digits": ("accuracy", "nll"), "regression": ("rmse", "nll")}
HIGHER_IS_BETTER = {"accuracy": True, "nll": False, "rmse": False}


# -- the backends ----------------------------------------------------------------
def numpyro_backend():
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Predictive, TraceMeanField_ELBO, init_to_feasible
    from numpyro.infer.autoguide import AutoNormal

    from ppl_hw.numpyro import nn
    from ppl_hw.numpyro.handlers import crossbar
    from ppl_hw.numpyro.models import mlp_classifier

    def regression_bnn(x, y=None):
        w0 = numpyro.sample(
            "w0", dist.Normal(0.0, 1.0).expand([x.shape[-1], HIDDEN]).to_event(2)
        )
        b0 = numpyro.sample("b0", dist.Normal(0.0, 1.0).expand([HIDDEN]).to_event(1))
        w1 = numpyro.sample("w1", dist.Normal(0.0, 1.0).expand([HIDDEN, 1]).to_event(2))
        b1 = numpyro.sample("b1", dist.Normal(0.0, 1.0).expand([1]).to_event(1))
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        with numpyro.plate("data", x.shape[0]):
            h = jnp.tanh(nn.dense(x, w0, b0))
            mean = numpyro.deterministic("mean", nn.dense(h, w1, b1)[..., 0])
            numpyro.sample("y", dist.Normal(mean, sigma), obs=y)

    def fit(model, plain, x, y, steps, seed):
        # Pyro's AutoNormal default (locations 0, scales 0.1): both backends start
        # from the same guide (NumPyro's default, uniform on (-2, 2), saturates the
        # 100-input tanh layer and leaves the regression far from converged)
        guide = AutoNormal(plain, init_loc_fn=init_to_feasible)
        svi = SVI(model, guide, numpyro.optim.Adam(LR), TraceMeanField_ELBO())
        res = svi.run(
            jax.random.PRNGKey(seed),
            steps,
            jnp.asarray(x),
            jnp.asarray(y),
            progress_bar=False,
        )
        return (guide, res.params), np.asarray(res.losses)

    def predict(posterior, model, x, sites, num_samples, seed):
        guide, params = posterior
        # parallel=True vmaps eagerly: the crossbar's jitted pieces compile once per
        # site shape and time and are reused for every chip
        out = Predictive(
            model,
            guide=guide,
            params=params,
            num_samples=num_samples,
            return_sites=list(sites),
            parallel=True,
        )(jax.random.PRNGKey(seed), jnp.asarray(x))
        return {k: np.asarray(v) for k, v in out.items()}

    return SimpleNamespace(
        models={"digits": mlp_classifier, "regression": regression_bnn},
        crossbar=crossbar,
        fit=fit,
        predict=predict,
    )


def pyro_backend():
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, Predictive, TraceMeanField_ELBO
    from pyro.infer.autoguide import AutoNormal

    from ppl_hw.pyro import nn
    from ppl_hw.pyro.models import mlp_classifier
    from ppl_hw.pyro.poutine import crossbar

    # small matrices: more intra-op threads only contend for the cores (Pyro ran
    # 5-10x slower with torch's default of one thread per core on 2 busy cores)
    torch.set_num_threads(1)

    def regression_bnn(x, y=None):
        zero = x.new_zeros(())
        w0 = pyro.sample(
            "w0", dist.Normal(zero, 1.0).expand([x.shape[-1], HIDDEN]).to_event(2)
        )
        b0 = pyro.sample("b0", dist.Normal(zero, 1.0).expand([HIDDEN]).to_event(1))
        w1 = pyro.sample("w1", dist.Normal(zero, 1.0).expand([HIDDEN, 1]).to_event(2))
        b1 = pyro.sample("b1", dist.Normal(zero, 1.0).expand([1]).to_event(1))
        sigma = pyro.sample("sigma", dist.HalfNormal(zero + 1.0))
        with pyro.plate("data", x.shape[0]):
            h = torch.tanh(nn.dense(x, w0, b0))
            mean = pyro.deterministic("mean", nn.dense(h, w1, b1)[..., 0])
            pyro.sample("y", dist.Normal(mean, sigma), obs=y)

    def fit(model, plain, x, y, steps, seed):
        # the posterior lives in the param store: the study scores each one before
        # the next is trained
        pyro.clear_param_store()
        pyro.set_rng_seed(seed)
        guide = AutoNormal(plain)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": LR}), TraceMeanField_ELBO())
        x, y = torch.as_tensor(x), torch.as_tensor(y)
        losses = [svi.step(x, y) for _ in range(steps)]
        return guide, np.asarray(losses)

    def predict(guide, model, x, sites, num_samples, seed):
        pyro.set_rng_seed(seed)
        with torch.no_grad():
            out = Predictive(
                model, guide=guide, num_samples=num_samples, return_sites=list(sites)
            )(torch.as_tensor(x))
        return {k: v.numpy() for k, v in out.items()}

    return SimpleNamespace(
        models={"digits": mlp_classifier, "regression": regression_bnn},
        crossbar=crossbar,
        fit=fit,
        predict=predict,
    )


BACKENDS = {"numpyro": numpyro_backend, "pyro": pyro_backend}


# -- scores ------------------------------------------------------------------------
def _softmax(logits):
    z = logits - logits.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def score(task, pred, y):
    """The task's metrics of one set of posterior predictions on the test set."""
    if task == "digits":
        probs = _softmax(pred["logits"].astype(np.float64)).mean(0)
        return dict(accuracy=metrics.accuracy(probs, y), nll=metrics.nll(probs, y))
    from scipy.special import logsumexp

    mean = pred["mean"].astype(np.float64)  # (S, N)
    sigma = pred["sigma"].astype(np.float64).reshape(-1, 1)  # (S, 1)
    y = np.asarray(y, np.float64)
    rmse = float(np.sqrt(np.mean((mean.mean(0) - y) ** 2)))
    # the predictive is the mixture of the S Gaussians N(mean_s, sigma_s)
    logp = -0.5 * ((y - mean) / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi)
    nll = float(-np.mean(logsumexp(logp, axis=0) - np.log(mean.shape[0])))
    return dict(rmse=rmse, nll=nll)


def paired(off, hat, higher_is_better):
    """Summary of the per-chip values of both posteriors on the same chips."""
    from scipy.stats import ttest_rel

    off, hat = np.asarray(off, float), np.asarray(hat, float)
    gain = hat - off
    if np.ptp(gain) == 0.0:  # identical differences: the t statistic is undefined
        p = 1.0 if gain[0] == 0.0 else 0.0
    else:
        p = float(ttest_rel(hat, off).pvalue)
    better = gain > 0 if higher_is_better else gain < 0
    return dict(
        off=dict(mean=float(off.mean()), sd=float(off.std()), chips=off.tolist()),
        hat=dict(mean=float(hat.mean()), sd=float(hat.std()), chips=hat.tolist()),
        gain=dict(mean=float(gain.mean()), sd=float(gain.std())),
        p_value=p,
        hat_better_on=int(better.sum()),
    )


# -- the study ---------------------------------------------------------------------
def load_task(task, size):
    if task == "digits":
        return load_digits()
    return make_sparse_regression("smoke", **size["regression_data"])


def evaluate(be, task, posterior, data, size, deploy, seed):
    """Scores off-chip (no crossbar) and on chips 0..C-1 at each time."""
    plain = be.models[task]
    sites = ("logits",) if task == "digits" else ("mean", "sigma")
    pred = be.predict(posterior, plain, data.x_test, sites, size["samples"], seed)
    out = {"clean": score(task, pred, data.y_test)}
    for label, t in TIMES.items():
        rows = []
        for chip in range(size["chips"]):
            model = be.crossbar(
                plain, device=deploy, sites=SITES[task], t_inference=t, seed=chip
            )
            # the same read-noise key for every posterior on this chip
            pred = be.predict(
                posterior, model, data.x_test, sites, size["samples"], seed + 1 + chip
            )
            rows.append(score(task, pred, data.y_test))
        out[label] = rows
    return out


def run_task(be, task, size, deploy, train_device, t_train, seed):
    data = load_task(task, size)
    plain = be.models[task]
    steps = size[f"{task}_steps"]
    hat_model = be.crossbar(
        plain,
        device=train_device,
        sites=SITES[task],
        t_inference=t_train,
        reprogram="per_sample",
        seed=seed,
    )
    scores, training = {}, {}
    for method, model in (("off", plain), ("hat", hat_model)):
        start = time.perf_counter()
        posterior, losses = be.fit(
            model, plain, data.x_train, data.y_train, steps, seed
        )
        tail = losses[-max(1, steps // 10) :]
        training[method] = dict(
            seconds=time.perf_counter() - start, final_loss=float(np.mean(tail))
        )
        scores[method] = evaluate(be, task, posterior, data, size, deploy, seed + 1000)
    result = dict(
        training=training,
        clean={m: scores[m]["clean"] for m in ("off", "hat")},
        deployed=[],
    )
    for label in TIMES:
        for metric in METRICS[task]:
            row = paired(
                [r[metric] for r in scores["off"][label]],
                [r[metric] for r in scores["hat"][label]],
                HIGHER_IS_BETTER[metric],
            )
            # the same difference without a chip: what training under the chip
            # changed in the posterior itself, the control for the gain
            clean = result["clean"]
            row["clean_gain"] = clean["hat"][metric] - clean["off"][metric]
            result["deployed"].append(dict(time=label, metric=metric, **row))
    return result


def device_summary(dev):
    keys = (
        "name",
        "programming",
        "programming_scale",
        "drift",
        "drift_compensation",
        "read_noise",
        "read_noise_scale",
        "dac_bits",
        "adc_bits",
        "out_noise",
    )
    return {k: getattr(dev, k, None) for k in keys}


# -- output --------------------------------------------------------------------------
def figure(results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [(task, m) for task in ("digits", "regression") for m in METRICS[task]]
    panels = [p for p in panels if any(p[0] in r for r in results.values())]
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4))
    axes = np.atleast_1d(axes)
    labels = {"accuracy": "test accuracy (%)", "nll": "test NLL", "rmse": "test RMSE"}
    colors = {"numpyro": "C0", "pyro": "C1"}
    for ax, (task, metric) in zip(axes, panels, strict=True):
        scale = 100.0 if metric == "accuracy" else 1.0
        for b, (backend, res) in enumerate(results.items()):
            if task not in res:
                continue
            rows = [r for r in res[task]["deployed"] if r["metric"] == metric]
            for k, method in enumerate(("off", "hat")):
                x = np.arange(len(rows)) + 0.12 * (2 * b + k) - 0.18
                ax.errorbar(
                    x,
                    [scale * r[method]["mean"] for r in rows],
                    [scale * r[method]["sd"] for r in rows],
                    fmt="o" if method == "hat" else "s",
                    mfc=colors[backend] if method == "hat" else "white",
                    color=colors[backend],
                    capsize=3,
                    label=f"{backend}, {'HAT' if method == 'hat' else 'off-chip'}",
                )
            clean = scale * res[task]["clean"]["off"][metric]
            ax.axhline(clean, color=colors[backend], lw=0.8, ls=":")
        ax.set_xticks(range(len(TIMES)), list(TIMES))
        ax.set_xlim(-0.5, len(TIMES) - 0.5)
        ax.set_title(f"{task}: {metric}")
        ax.set_ylabel(labels[metric])
    axes[0].legend(fontsize=7)
    fig.suptitle(
        "Off-chip vs hardware-aware training on PCM (mean ± sd over chips; "
        "dotted: off-chip posterior without a chip)",
        fontsize=9,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_table(results):
    print(
        "| backend | model | t | metric | off-chip trained | HAT | gain (HAT - off) "
        "| p (paired t) | HAT better | gain without a chip |"
    )
    print("|---|---|---|---|---:|---:|---:|---:|---:|---:|")
    for backend, res in results.items():
        if backend == "settings":
            continue
        for task in ("digits", "regression"):
            if task not in res:
                continue
            for r in res[task]["deployed"]:
                s = 100.0 if r["metric"] == "accuracy" else 1.0
                unit, nd = (" %", 1) if r["metric"] == "accuracy" else ("", 3)

                def fmt(d, s=s, unit=unit, nd=nd):
                    return f"{s * d['mean']:.{nd}f} ± {s * d['sd']:.{nd}f}{unit}"

                wins = f"{r['hat_better_on']}/{len(r['off']['chips'])}"
                print(
                    f"| {backend} | {task} | {r['time']} | {r['metric']} | "
                    f"{fmt(r['off'])} | {fmt(r['hat'])} | {fmt(r['gain'])} | "
                    f"{r['p_value']:.3g} | {wins} | "
                    f"{s * r['clean_gain']:+.{nd}f}{unit} |"
                )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny size, for the tests")
    p.add_argument("--backend", choices=("numpyro", "pyro", "both"), default="both")
    p.add_argument("--task", choices=("digits", "regression", "both"), default="both")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--t-train",
        type=float,
        default=TIMES["1 day"],
        help="seconds since programming of the chips HAT trains on (default 1 day)",
    )
    p.add_argument(
        "--noise-scale",
        type=float,
        default=1.0,
        help="multiplies the programming and read noise of the training chips",
    )
    p.add_argument("--chips", type=int, default=None, help="override the chip count")
    p.add_argument(
        "--output", type=Path, default=Path("examples/output/hardware_aware_training")
    )
    args = p.parse_args(argv)
    size = dict(SIZES["smoke" if args.smoke else "full"])
    if args.chips is not None:
        size["chips"] = args.chips
    # the deployment device: the PCM preset's defaults, whatever they are today
    deploy = devices.PCM()
    train_device = deploy.replace(
        programming_scale=args.noise_scale * deploy.programming_scale,
        read_noise_scale=args.noise_scale * deploy.read_noise_scale,
    )
    print(
        f"deployment device: PCM(), drift_compensation={deploy.drift_compensation}; "
        f"HAT: t_train = {args.t_train:g} s, noise scale {args.noise_scale:g}"
    )
    backends = ("numpyro", "pyro") if args.backend == "both" else (args.backend,)
    tasks = ("digits", "regression") if args.task == "both" else (args.task,)
    results = {}
    for backend in backends:
        be = BACKENDS[backend]()
        results[backend] = {}
        for task in tasks:
            start = time.perf_counter()
            results[backend][task] = run_task(
                be, task, size, deploy, train_device, args.t_train, args.seed
            )
            print(f"{backend} {task}: {time.perf_counter() - start:.0f} s", flush=True)
    results["settings"] = dict(
        size="smoke" if args.smoke else "full",
        **{k: v for k, v in size.items() if k != "regression_data"},
        regression_data=size["regression_data"],
        lr=LR,
        seed=args.seed,
        t_train=args.t_train,
        noise_scale=args.noise_scale,
        deploy_device=device_summary(deploy),
        train_device=device_summary(train_device),
    )
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    figure(
        {b: r for b, r in results.items() if b != "settings"},
        args.output / "hardware_aware_training.png",
    )
    print_table(results)
    print(f"written to {args.output.resolve()}")
    return results


if __name__ == "__main__":
    main()
