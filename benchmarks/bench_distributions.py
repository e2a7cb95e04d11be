"""``EmpiricalNoise`` ÷ ``Normal`` on 10^6 float32 values (goal: log_prob ≤ 3×).

NumPyro: every candidate jitted, on the same float32 array, timed interleaved. Pyro:
eager torch on one thread, interleaved likewise. Besides the goal row:

* the floor: computing each value's cell and fetching its table entry (one gather,
  the ``(log-density, slope)`` pair stored as one complex64 word) — what any
  tabulated density must do per value, and what ``Normal.log_prob`` never does;
* ``jnp.log`` alone, the operation the previous (linear-in-density) model added on
  top of its two gathers and which the log-linear model no longer needs;
* ``cdf`` and ``sample`` (inverse cdf of a uniform: a binary search of the cumulative
  table) against the same calls of ``Normal``.
"""

from __future__ import annotations

from _timing import Result, compare


def run(quick: bool = False) -> list[Result]:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro.distributions as ndist
    import pyro.distributions as pdist
    import torch

    import ppl_hw.numpyro.distributions as nd
    import ppl_hw.pyro.distributions as pd
    from ppl_hw import devices
    from ppl_hw.core.backend import uniform_cell
    from ppl_hw.numpyro._backend import BACKEND

    n = 10_000 if quick else 1_000_000
    samples = devices.mtj_noise(10_000, seed=0)
    x = np.random.default_rng(0).normal(size=n).astype(np.float32) * 1.5

    noise_j, normal_j = nd.EmpiricalNoise(samples), ndist.Normal(0.0, 1.0)
    table = noise_j.table
    xj = jnp.asarray(x)
    key = jax.random.PRNGKey(0)
    reps = (
        dict(repeats=2, number=2, warmup=1)
        if quick
        else dict(repeats=15, number=10, warmup=3)
    )

    lp_emp = jax.jit(lambda v: noise_j.log_prob(v))
    lp_norm = jax.jit(lambda v: normal_j.log_prob(v))
    log_only = jax.jit(jnp.log)

    @jax.jit
    def lookup_only(v):
        # the cell of each value and its table entry: the floor of a table lookup
        k, _, _ = uniform_cell(jnp, v, table.z0, table.dz, table.num_knots)
        return jnp.real(BACKEND.special.take(noise_j._cells, k))

    tj = compare(
        {
            "empirical": lambda: lp_emp(xj).block_until_ready(),
            "normal": lambda: lp_norm(xj).block_until_ready(),
            "lookup": lambda: lookup_only(xj).block_until_ready(),
            "log": lambda: log_only(xj).block_until_ready(),
        },
        **reps,
    )

    cdf_emp = jax.jit(lambda v: noise_j.cdf(v))
    cdf_norm = jax.jit(lambda v: normal_j.cdf(v))
    sample_emp = jax.jit(lambda k: noise_j.sample(k, (n,)))
    sample_norm = jax.jit(lambda k: normal_j.sample(k, (n,)))
    tc = compare(
        {
            "cdf empirical": lambda: cdf_emp(xj).block_until_ready(),
            "cdf normal": lambda: cdf_norm(xj).block_until_ready(),
            "sample empirical": lambda: sample_emp(key).block_until_ready(),
            "sample normal": lambda: sample_norm(key).block_until_ready(),
        },
        **reps,
    )

    noise_t, normal_t = pd.EmpiricalNoise(samples), pdist.Normal(0.0, 1.0)
    xt = torch.as_tensor(x)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        tt = compare(
            {
                "empirical": lambda: noise_t.log_prob(xt),
                "normal": lambda: normal_t.log_prob(xt),
            },
            **reps,
        )
    finally:
        torch.set_num_threads(threads)

    def ms(timings, *names):
        return {f"{name} ms": 1e3 * timings[name] for name in names}

    size = "10^4 (quick)" if quick else "10^6"
    return [
        Result.of(
            f"EmpiricalNoise.log_prob ÷ Normal.log_prob, {size} values, NumPyro jit",
            tj,
            "empirical",
            "normal",
            goal=3.0,
            details=ms(tj, "empirical", "normal"),
        ),
        Result.of(
            "floor of the above: cell index + one table gather ÷ Normal.log_prob, "
            "NumPyro jit",
            tj,
            "lookup",
            "normal",
            details=ms(tj, "lookup"),
            note="any tabulated density fetches one entry per value; Normal none",
        ),
        Result.of(
            "EmpiricalNoise.log_prob ÷ its floor (cell + one gather), NumPyro jit",
            tj,
            "empirical",
            "lookup",
        ),
        Result.of(
            "jnp.log alone ÷ Normal.log_prob, NumPyro jit",
            tj,
            "log",
            "normal",
            details=ms(tj, "log"),
            note="the log the linear-density model took; the log-linear one needs none",
        ),
        Result.of(
            f"EmpiricalNoise.cdf ÷ Normal.cdf, {size} values, NumPyro jit",
            tc,
            "cdf empirical",
            "cdf normal",
            details=ms(tc, "cdf empirical", "cdf normal"),
        ),
        Result.of(
            f"EmpiricalNoise.sample ÷ Normal.sample, {size} values, NumPyro jit",
            tc,
            "sample empirical",
            "sample normal",
            details=ms(tc, "sample empirical", "sample normal"),
            note="inverse cdf: a binary search of the cumulative table per value",
        ),
        Result.of(
            f"EmpiricalNoise.log_prob ÷ Normal.log_prob, {size} values, Pyro eager, "
            "1 thread",
            tt,
            "empirical",
            "normal",
            details=ms(tt, "empirical", "normal"),
        ),
    ]
