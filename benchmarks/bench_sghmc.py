"""SGHMC: time per gradient evaluation (one step) against blackjax and a hand-written
loop, the cost per step as N grows at fixed B, and the cost of the non-finite check.

The model is a Bayesian linear regression (D = 20 features, Normal priors, a
subsampled plate of B = 100). Each candidate runs ``K`` steps inside one jitted
``lax.fori_loop`` / ``lax.scan`` and the time per step is reported:

* ppl_hw: ``SGHMC(model, step_size=...).sample`` (the NumPyro kernel);
* blackjax: ``blackjax.sgmcmc.diffusions.sghmc`` with the gradient from
  ``blackjax.sgmcmc.gradients.grad_estimator`` on the same index stream (the
  kernel's own ``_next_batch``: a keyed permutation per epoch, sliced), its noise
  from ``jax.random`` as blackjax draws it;
* hand-written (the floor): the same update, index stream and random numbers (the
  kernel's own draws, ``jax.random``'s threefry stream) with the log density written
  in ``jax.numpy``: no tracing machinery, no state bookkeeping, no check.

The Pyro step is timed in ``bench_sghmc_pyro.py``.
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


def _numpyro(quick: bool, reps: dict) -> list[Result]:
    import blackjax
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from jax import lax, random

    from ppl_hw.numpyro import _sghmc
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

    def ours(n: int, check: bool = True):
        x, y = (jnp.asarray(v) for v in _data(n))
        kernel = SGHMC(model, step_size=step_size(n), momentum_decay=a)
        kernel._check_nonfinite = check
        state = kernel.init(random.PRNGKey(0), 0, None, (x, y), {})
        run = jax.jit(
            lambda s: lax.fori_loop(
                0, k_steps, lambda i, s: kernel.sample(s, (x, y), {}), s
            )
        )
        box = [jax.block_until_ready(run(state))]  # compiled for the loop's types

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
        zeros, key2 = jnp.zeros(D), random.PRNGKey(2)
        box = [jax.block_until_ready(run((zeros, zeros, key0, jnp.array(0), key2)))]

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
            # the kernel's draws: jax.random's stream, hash written out
            key, k_noise, k_perm = _sghmc._split(key, 3)
            idx, perm, pos = next_batch(perm, pos, k_perm)
            noise = _sghmc._normal(_sghmc._split(k_noise, 1)[0], (D,), jnp.float32)
            u = (1 - a) * u - eps * grad(w, idx) + scale * noise
            return (w + u, u, perm, pos, key), None

        return scan_runner(body, key0)

    def per_step(t, names):
        return {f"{k} µs": t[k] / k_steps * 1e6 for k in names}

    n0 = 10_000
    t = compare(
        {
            "ours": ours(n0),
            "unchecked": ours(n0, check=False),
            "blackjax": blackjax_loop(n0),
            "hand": hand_loop(n0),
        },
        **reps,
    )
    results = [
        Result.of(
            "SGHMC step ÷ blackjax sghmc (same index stream), NumPyro jit",
            t,
            "ours",
            "blackjax",
            goal=1.0,
            details=per_step(t, ("ours", "blackjax")),
            note=f"linear regression D = {D}, N = {n0}, B = {B}",
        ),
        Result.of(
            "SGHMC step ÷ hand-written lax.scan loop (same draws), NumPyro jit",
            t,
            "ours",
            "hand",
            goal=1.1,
            details=per_step(t, ("ours", "hand")),
        ),
        Result.of(
            "SGHMC step with ÷ without the non-finite check, NumPyro jit",
            t,
            "ours",
            "unchecked",
            goal=1.03,
            details=per_step(t, ("ours", "unchecked")),
        ),
    ]
    sizes = (1_000, 10_000) if quick else (1_000, 10_000, 100_000)
    cands = {f"N={n}": ours(n) for n in sizes}
    cands.update({f"hand N={n}": hand_loop(n) for n in sizes})
    ts = compare(cands, **reps)
    lo, hi = sizes[0], sizes[-1]
    results += [
        Result.of(
            f"SGHMC step at N = {hi:,} ÷ at N = {lo:,} (B = {B}), NumPyro jit",
            ts,
            f"N={hi}",
            f"N={lo}",
            goal=1.2,
            details=per_step(ts, [f"N={n}" for n in sizes]),
        ),
        Result.of(
            f"floor: hand-written step at N = {hi:,} ÷ at N = {lo:,} (B = {B})",
            ts,
            f"hand N={hi}",
            f"hand N={lo}",
            details=per_step(ts, [f"hand N={n}" for n in sizes]),
            note="the same gathers from a larger array",
        ),
    ]
    return results


def run(quick: bool = False) -> list[Result]:
    reps = dict(repeats=3, number=2, warmup=1) if quick else dict(repeats=15, number=3)
    return _numpyro(quick, reps)


if __name__ == "__main__":
    for r in run():
        print(r)
