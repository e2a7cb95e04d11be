"""Study: one-shot pruning with SGHMC-within-EM on Ke & Fan's (2022) Example 1.

P inputs of which five matter, ``y = tanh(2 tanh(2 x1 - x2)) + 2 tanh(tanh(x3 - 2 x4))
- tanh(2 x5) + N(0, 1)`` (``ppl_hw.datasets.make_sparse_regression``); a ReLU MLP
P-5-3-1 with ``SpikeAndSlab`` priors on the weight matrices and Normal priors on the
biases, squared-error likelihood (``Normal(f, 1/sqrt 2)``: their ``MSELoss``), trained
with ``SGHMC.ke_fan`` and ``SpikeSlabEM`` under NumPyro's ``MCMC`` with the authors'
settings: batch 1024, 3 000 epochs, C^2_0 = 0.01 with 6 cosine cycles, T = N^-1/2,
lambda1 = 2e-4 and lambda0 = 1e-2 (slab and spike scales 1/sqrt(N lambda)), soft
threshold 1e-2, hard threshold 1e-3, warm-up 50 epochs, the EM once per epoch,
PyTorch's default ``Linear`` initialisation. Reported: the share of parameters
pruned, the test MSE of the posterior mean prediction (last 100 samples) against the
noisy test targets, and the surviving inputs. The authors' stored run: 98.97 %, 1.108,
the five true inputs.

    python examples/sghmc_sparse_regression.py          # full size (P = 1000)
    python examples/sghmc_sparse_regression.py --smoke  # what the tests run

The smoke size (P = 100, N = 2 048, 300 epochs of batches of 256, the first layer
initialised at the full size's fan-in, so that an input's weights must grow to
survive as they must at full size) passes when the five true inputs are kept and at
least 90 % of the other input groups are pruned.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np

from ppl_hw.datasets import make_sparse_regression

SIZES = {
    "smoke": dict(data="smoke", batch=256, epochs=300, init_fan_in=1000),
    "full": dict(data="full", batch=1024, epochs=3000, init_fan_in=None),
}
LAMBDA1, LAMBDA0 = 2e-4, 1e-2
TRUE_INPUTS = (0, 1, 2, 3, 4)


def make_model(num_inputs: int, num_data: int):
    import jax
    import numpyro
    import numpyro.distributions as dist

    from ppl_hw.numpyro.distributions import SpikeAndSlab

    slab = 1 / math.sqrt(num_data * LAMBDA1)
    spike = 1 / math.sqrt(num_data * LAMBDA0)

    def model(x, y=None, batch=None):
        prior = SpikeAndSlab(0.5, spike, slab)
        params = []
        for i, (fan_in, fan_out) in enumerate([(num_inputs, 5), (5, 3), (3, 1)], 1):
            w = numpyro.sample(f"w{i}", prior.expand([fan_in, fan_out]).to_event(2))
            b = numpyro.sample(
                f"b{i}", dist.Normal(0.0, slab).expand([fan_out]).to_event(1)
            )
            params.append((w, b))
        (w1, b1), (w2, b2), (w3, b3) = params
        with numpyro.plate("data", x.shape[0], subsample_size=batch) as idx:
            a = jax.nn.relu(jax.nn.relu(x[idx] @ w1 + b1) @ w2 + b2)
            obs = None if y is None else y[idx]
            numpyro.sample("y", dist.Normal((a @ w3 + b3)[:, 0], 0.5**0.5), obs=obs)

    return model


def torch_like_init(num_inputs: int, fan_in_first: int | None, seed: int) -> dict:
    """PyTorch's default ``nn.Linear`` initialisation, U(-1/sqrt(fan_in), ...)."""
    rng = np.random.default_rng(seed)
    init = {}
    for i, (fi, fo) in enumerate([(num_inputs, 5), (5, 3), (3, 1)], 1):
        bound = 1 / math.sqrt(fan_in_first if (i == 1 and fan_in_first) else fi)
        init[f"w{i}"] = rng.uniform(-bound, bound, (fi, fo)).astype(np.float32)
        init[f"b{i}"] = rng.uniform(-bound, bound, (fo,)).astype(np.float32)
    return init


def study(size: dict, seed: int = 0, progress_bar: bool = False) -> dict:
    import jax
    import jax.numpy as jnp
    from numpyro.infer import MCMC, Predictive, init_to_value

    from ppl_hw.numpyro.infer import SGHMC, SpikeSlabEM

    data = make_sparse_regression(size["data"], seed=seed)
    x, y = (jnp.asarray(a, jnp.float32) for a in (data.x_train, data.y_train))
    n, p = x.shape
    steps_per_epoch = n // size["batch"]
    num_steps = size["epochs"] * steps_per_epoch
    model = make_model(p, n)
    em = SpikeSlabEM(
        every=steps_per_epoch,
        warmup=50 * steps_per_epoch,
        soft_threshold=1e-2,
        hard_threshold=1e-3,
    )
    kernel = SGHMC.ke_fan(
        model,
        num_data=n,
        c2=0.01,
        em=em,
        schedule="cyclical",
        num_cycles=6,
        num_steps=num_steps,
        init_strategy=init_to_value(
            values=torch_like_init(p, size["init_fan_in"], seed)
        ),
    )
    mcmc = MCMC(kernel, num_warmup=0, num_samples=num_steps, progress_bar=progress_bar)
    start = time.perf_counter()
    mcmc.run(
        jax.random.PRNGKey(seed), x, y, batch=size["batch"], extra_fields=("sparsity",)
    )
    seconds = time.perf_counter() - start
    samples = mcmc.get_samples()
    last = {k: v[-100:] for k, v in samples.items()}
    pred = Predictive(model, posterior_samples=last, return_sites=["y"])
    x_test = jnp.asarray(data.x_test, jnp.float32)
    # the mean prediction: the likelihood noise averages out over 100 draws x 100
    f = np.asarray(pred(jax.random.PRNGKey(seed + 1), x_test)["y"]).mean(0)
    mse = float(np.mean((f - data.y_test) ** 2))
    w1 = np.asarray(samples["w1"][-1])
    kept = np.flatnonzero(np.abs(w1).sum(1) > 0).tolist()
    params = sum(int(np.prod(v.shape[1:])) for v in samples.values())
    zeros = sum(int(np.sum(np.asarray(v[-1]) == 0)) for v in samples.values())
    return dict(
        num_inputs=p,
        num_train=n,
        steps=num_steps,
        seconds=seconds,
        pruned_share=zeros / params,
        kernel_sparsity=float(mcmc.get_extra_fields()["sparsity"][-1]),
        test_mse=mse,
        kept_inputs=kept,
        true_inputs_kept=all(i in kept for i in TRUE_INPUTS),
        other_inputs_pruned=1 - len(set(kept) - set(TRUE_INPUTS)) / (p - 5),
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument(
        "--output", type=Path, default=Path("examples/output/sghmc_sparse_regression")
    )
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    res = study(SIZES["smoke" if args.smoke else "full"], progress_bar=args.progress)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.json").write_text(json.dumps(res, indent=2) + "\n")
    print(
        f"P = {res['num_inputs']}, N = {res['num_train']}, {res['steps']} steps, "
        f"{res['seconds']:.0f} s: {100 * res['pruned_share']:.2f} % of parameters "
        f"pruned, test MSE {res['test_mse']:.3f}, inputs kept {res['kept_inputs']}"
    )
    print(f"written to {args.output.resolve()}")
    return res


if __name__ == "__main__":
    main()
