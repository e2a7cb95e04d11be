"""Study: Mean-KL reaches annealed Mean-Var's performance in about half the training
steps (Lin, Flamich & Hernández-Lobato 2023).

The digits BNN (64-64-10, Normal(0, 1) priors, the MIRACLE coding distribution) is
trained at the same total KL budget two ways:

* Mean-Var (MIRACLE): ``AutoNormal`` + ``MeanVarAnnealing`` (per-block KL penalties
  annealed by 1 ± ε, blocks of ``bits_per_block`` bits);
* Mean-KL: ``AutoMeanKL`` with the budget fixed by construction (learned split).

The test NLL of the posterior predictive is recorded every ``eval_every`` steps. The
figure of merit is the first step at which Mean-KL reaches Mean-Var's final test NLL,
divided by Mean-Var's total number of steps (the paper reports about 0.5).

MIRACLE anneals with ε = 1e-4 over 200 000 steps; β must grow from 1e-8 to ~1e-2
before the KL meets the budget, i.e. ~14 / ε steps, so at our step counts we use
ε = 1e-3 (full, 30 000 steps) and 2e-2 (smoke).

    python examples/meankl_vs_meanvar.py          # full size (~10 min on 2 cores)
    python examples/meankl_vs_meanvar.py --smoke  # what the tests run
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from ppl_hw import metrics
from ppl_hw.datasets import load_digits

SIZES = {
    "smoke": dict(steps=800, eval_every=100, epsilon=2e-2, samples=20, bits=20_000),
    "full": dict(steps=30_000, eval_every=500, epsilon=1e-3, samples=100, bits=20_000),
}


def study(size: dict, seed: int = 0) -> dict:
    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import SVI, Predictive, TraceMeanField_ELBO
    from numpyro.infer.autoguide import AutoNormal

    from ppl_hw.numpyro.autoguide import AutoMeanKL
    from ppl_hw.numpyro.infer import MeanVarAnnealing
    from ppl_hw.numpyro.models import mlp_classifier

    data = load_digits()
    x, y, x_test = (jnp.asarray(a) for a in (data.x_train, data.y_train, data.x_test))

    def nll_fn(guide):
        """A jitted test-NLL evaluator for ``guide`` (traced once)."""

        def probs(params):
            pred = Predictive(
                mlp_classifier,
                guide=guide,
                params=params,
                num_samples=size["samples"],
                return_sites=["logits"],
            )
            logits = pred(jax.random.PRNGKey(seed + 7), x_test)["logits"]
            return jax.nn.softmax(logits, -1).mean(0)

        jitted = jax.jit(probs)
        return lambda params: metrics.nll(jitted(params), data.y_test)

    # Mean-Var
    g_mv = AutoNormal(mlp_classifier)
    mv = MeanVarAnnealing(
        mlp_classifier,
        g_mv,
        numpyro.optim.Adam(1e-3),
        kl_budget_bits=size["bits"],
        bits_per_block=10.0,
        epsilon=size["epsilon"],
        seed=seed,
    )
    state = mv.init(jax.random.PRNGKey(seed), x, y)
    step = jax.jit(lambda s: mv.update(s, x, y))
    test_nll = nll_fn(g_mv)
    curve_mv, kl_mv = [], []
    for i in range(1, size["steps"] + 1):
        state, _ = step(state)
        if i % size["eval_every"] == 0:
            params = mv.get_params(state)
            curve_mv.append((i, test_nll(params)))
            kl_mv.append(float(mv.block_kl(params).sum()))
    # Mean-KL
    g_mk = AutoMeanKL(mlp_classifier, kl_budget_bits=size["bits"])
    svi = SVI(mlp_classifier, g_mk, numpyro.optim.Adam(1e-3), TraceMeanField_ELBO())
    svi_state = svi.init(jax.random.PRNGKey(seed), x, y)
    update = jax.jit(lambda s: svi.update(s, x, y))
    test_nll = nll_fn(g_mk)
    curve_mk = []
    for i in range(1, size["steps"] + 1):
        svi_state, _ = update(svi_state)
        if i % size["eval_every"] == 0:
            curve_mk.append((i, test_nll(svi.get_params(svi_state))))
    final_mv = curve_mv[-1][1]
    reach = next((i for i, v in curve_mk if v <= final_mv), None)
    kl_mk = float(g_mk.kl(svi.get_params(svi_state))[0])
    return dict(
        budget_nats=mv.settings.budget,
        meanvar=dict(curve=curve_mv, kl=kl_mv, final_nll=final_mv),
        meankl=dict(curve=curve_mk, kl=kl_mk, final_nll=curve_mk[-1][1]),
        first_step_reaching=reach,
        ratio=None if reach is None else reach / size["steps"],
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--output", type=Path, default=Path("examples/output/meankl_vs_meanvar")
    )
    args = p.parse_args(argv)
    size = SIZES["smoke" if args.smoke else "full"]
    start = time.perf_counter()
    res = study(size, args.seed)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    _figure(res, args.output / "meankl_vs_meanvar.png")
    print(f"{time.perf_counter() - start:.0f} s; budget {res['budget_nats']:.0f} nats")
    print(
        f"Mean-Var final test NLL {res['meanvar']['final_nll']:.4f} "
        f"(KL {res['meanvar']['kl'][-1]:.0f} nats)"
    )
    print(
        f"Mean-KL final test NLL {res['meankl']['final_nll']:.4f} "
        f"(KL {res['meankl']['kl']:.0f})"
    )
    print(
        f"Mean-KL reaches Mean-Var's final NLL at step {res['first_step_reaching']} "
        f"= {res['ratio']} of Mean-Var's {size['steps']} steps"
    )
    print(f"written to {args.output.resolve()}")
    return res


def _figure(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for name, label in (("meanvar", "Mean-Var (annealed)"), ("meankl", "Mean-KL")):
        steps, nll = zip(*res[name]["curve"], strict=True)
        ax.plot(steps, nll, label=label)
    ax.axhline(res["meanvar"]["final_nll"], color="0.6", lw=0.8)
    ax.set_xlabel("training step")
    ax.set_ylabel("test NLL")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title(f"Digits BNN at {res['budget_nats'] / np.log(2):.0f} bits of KL")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
