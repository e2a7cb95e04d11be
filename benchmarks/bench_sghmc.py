"""SGHMC: time per gradient evaluation (one step) against blackjax and a hand-written
loop, the cost per step as N grows at fixed B, and Pyro ÷ NumPyro.

The model is a Bayesian linear regression (D = 20 features, Normal priors, a
subsampled plate of B = 100). Each candidate runs ``K`` steps inside one jitted
``lax.fori_loop`` / ``lax.scan`` and the time per step is reported:

* ppl_hw: ``SGHMC(model, step_size=...).sample`` (the NumPyro kernel);
* blackjax: ``blackjax.sgmcmc.diffusions.sghmc`` with the gradient from
  ``blackjax.sgmcmc.gradients.grad_estimator`` on the same index stream (the
  kernel's own ``_next_batch``: a keyed permutation per epoch, sliced);
* hand-written: the same update and index stream with the log density written in
  ``jax.numpy`` (no tracing machinery at all).
"""

from __future__ import annotations

import math

from _timing import Result, compare

D, B = 20, 100


def _data(n: int):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, D)).astype(np.float32)
    y = (x @ rng.normal(size=D) + 0.5 * rng.normal(size=n)).astype(np.float32)
    return x, y


def _numpyro(quick: bool, reps: dict) -> tuple[list[Result], float]:
    import blackjax
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from jax import lax, random

    from ppl_hw.numpyro.infer import SGHMC

    k_steps = 200 if quick else 1000
    a = 0.1

    def step_size(n: int) -> float:
        # stable for every N: eps times the potential's curvature (~4 N) is 0.004
        return 1e-3 / n

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        with numpyro.plate("data", x.shape[0], subsample_size=B) as idx:
            numpyro.sample("y", dist.Normal(x[idx] @ w, 0.5), obs=y[idx])

    def ours(n: int):
        x, y = (jnp.asarray(v) for v in _data(n))
        kernel = SGHMC(model, step_size=step_size(n), momentum_decay=a)
        state = kernel.init(random.PRNGKey(0), 0, None, (x, y), {})
        run = jax.jit(
            lambda s: lax.fori_loop(
                0, k_steps, lambda i, s: kernel.sample(s, (x, y), {}), s
            )
        )
        box = [state]

        def call():
            box[0] = run(box[0])
            jax.block_until_ready(box[0].z)

        return call

    def index_stream(n: int):
        """The kernel's own index stream (the same code for every candidate)."""
        x, y = (jnp.asarray(v) for v in _data(n))
        kernel = SGHMC(model, step_size=step_size(n))
        state = kernel.init(random.PRNGKey(0), 0, None, (x, y), {})
        return kernel._next_batch, state.epoch_key

    def scan_runner(body, key0):
        """``k_steps`` of ``body`` in one jitted scan, from w = u = 0."""
        run = jax.jit(lambda c: lax.scan(body, c, None, length=k_steps)[0])
        zeros = jnp.zeros(D)
        box = [(zeros, zeros, key0, jnp.array(0), random.PRNGKey(2))]

        def call():
            box[0] = run(box[0])
            jax.block_until_ready(box[0][0])

        return call

    def blackjax_loop(n: int):
        x, y = (jnp.asarray(v) for v in _data(n))

        def logprior(w):
            return dist.Normal(0.0, 1.0).log_prob(w).sum()

        def loglik(w, batch):
            xb, yb = batch
            return dist.Normal(xb @ w, 0.5).log_prob(yb)

        grad_est = blackjax.sgmcmc.gradients.grad_estimator(logprior, loglik, n)
        next_batch, key0 = index_stream(n)
        h = math.sqrt(step_size(n))
        step = blackjax.sgmcmc.diffusions.sghmc(alpha=a / h)

        def body(carry, _):
            w, p, perm, pos, key = carry
            key, k_perm, k_noise = random.split(key, 3)
            idx, perm, pos = next_batch(perm, pos, k_perm)
            g = grad_est(w, (x[idx], y[idx]))
            w, p = step(k_noise, w, p, g, h)
            return (w, p, perm, pos, key), None

        return scan_runner(body, key0)

    def hand_loop(n: int):
        x, y = (jnp.asarray(v) for v in _data(n))

        def potential(w, idx):
            r = (y[idx] - x[idx] @ w) / 0.5
            return 0.5 * jnp.sum(w * w) + (n / B) * 0.5 * jnp.sum(r * r)

        grad = jax.grad(potential)
        next_batch, key0 = index_stream(n)
        eps = step_size(n)
        scale = math.sqrt(2 * a * eps)

        def body(carry, _):
            w, u, perm, pos, key = carry
            key, k_perm, k_noise = random.split(key, 3)
            idx, perm, pos = next_batch(perm, pos, k_perm)
            u = (1 - a) * u - eps * grad(w, idx) + scale * random.normal(k_noise, (D,))
            return (w + u, u, perm, pos, key), None

        return scan_runner(body, key0)

    n0 = 10_000
    t = compare(
        {"ours": ours(n0), "blackjax": blackjax_loop(n0), "hand": hand_loop(n0)},
        **reps,
    )
    per = {k: v / k_steps * 1e6 for k, v in t.items()}
    results = [
        Result(
            "SGHMC step ÷ blackjax sghmc (same index stream), NumPyro jit",
            t["ours"] / t["blackjax"],
            1.0,
            {"ours µs": per["ours"], "blackjax µs": per["blackjax"]},
            note=f"linear regression D = {D}, N = {n0}, B = {B}",
        ),
        Result(
            "SGHMC step ÷ hand-written lax.scan loop, NumPyro jit",
            t["ours"] / t["hand"],
            1.1,
            {"ours µs": per["ours"], "hand µs": per["hand"]},
        ),
    ]
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    ts = compare({n: ours(n) for n in sizes}, **reps)
    results.append(
        Result(
            f"SGHMC step at N = {sizes[-1]:,} ÷ at N = {sizes[0]:,} (B = {B}), "
            "NumPyro jit",
            ts[sizes[-1]] / ts[sizes[0]],
            None,
            {f"N={n} µs": ts[n] / k_steps * 1e6 for n in sizes},
            note="goal: flat",
        )
    )
    return results, per["ours"]


def _pyro(quick: bool, reps: dict, numpyro_us: float) -> Result:
    import pyro
    import pyro.distributions as dist
    import torch

    from ppl_hw.pyro.infer import SGHMC

    n = 10_000
    x, y = (torch.as_tensor(v) for v in _data(n))

    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        with pyro.plate("data", x.shape[0], subsample_size=B) as idx:
            pyro.sample("y", dist.Normal(x[idx] @ w, 0.5), obs=y[idx])

    kernel = SGHMC(model, step_size=1e-3 / n)
    kernel.setup(0, x, y)
    box = [kernel.initial_params]

    def call():
        box[0] = kernel.sample(box[0])

    t = compare({"pyro": call}, **reps)["pyro"]
    return Result(
        "Pyro ÷ NumPyro, SGHMC step",
        t * 1e6 / numpyro_us,
        None,
        {"pyro µs": t * 1e6, "numpyro µs": numpyro_us},
    )


def run(quick: bool = False) -> list[Result]:
    reps = dict(repeats=3, number=2, warmup=1) if quick else dict(repeats=7, number=5)
    results, numpyro_us = _numpyro(quick, reps)
    pyro_reps = dict(repeats=3, number=20, warmup=2) if quick else dict(number=200)
    results.append(_pyro(quick, pyro_reps, numpyro_us))
    return results


if __name__ == "__main__":
    for r in run():
        print(r)
