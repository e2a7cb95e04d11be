"""``EmpiricalNoise.log_prob`` ÷ ``Normal.log_prob`` on 10^6 values (goal ≤ 3×).

NumPyro: both jitted, on the same float32 array. Pyro (reported): eager torch.
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

    n = 10_000 if quick else 1_000_000
    samples = devices.mtj_noise(10_000, seed=0)
    x = np.random.default_rng(0).normal(size=n).astype(np.float32) * 1.5

    noise_j, normal_j = nd.EmpiricalNoise(samples), ndist.Normal(0.0, 1.0)
    xj = jnp.asarray(x)
    lp_emp = jax.jit(lambda v: noise_j.log_prob(v))
    lp_norm = jax.jit(lambda v: normal_j.log_prob(v))
    reps = (
        dict(repeats=2, number=2, warmup=1)
        if quick
        else dict(repeats=9, number=10, warmup=3)
    )
    log_only = jax.jit(jnp.log)
    tj = compare(
        {
            "empirical": lambda: lp_emp(xj).block_until_ready(),
            "normal": lambda: lp_norm(xj).block_until_ready(),
            "log": lambda: log_only(xj).block_until_ready(),
        },
        **reps,
    )
    noise_t, normal_t = pd.EmpiricalNoise(samples), pdist.Normal(0.0, 1.0)
    xt = torch.as_tensor(x)
    tt = compare(
        {
            "empirical": lambda: noise_t.log_prob(xt),
            "normal": lambda: normal_t.log_prob(xt),
        },
        **reps,
    )
    return [
        Result(
            "EmpiricalNoise.log_prob ÷ Normal.log_prob, 10^6 values, NumPyro jit",
            tj["empirical"] / tj["normal"],
            goal=3.0,
            details={
                "empirical ms": 1e3 * tj["empirical"],
                "normal ms": 1e3 * tj["normal"],
            },
        ),
        Result(
            "floor of the above: jnp.log alone ÷ Normal.log_prob, NumPyro jit",
            tj["log"] / tj["normal"],
            details={"log ms": 1e3 * tj["log"]},
            note="log g(x) needs one log; Normal.log_prob needs none",
        ),
        Result(
            "EmpiricalNoise.log_prob ÷ Normal.log_prob, 10^6 values, Pyro eager",
            tt["empirical"] / tt["normal"],
            details={
                "empirical ms": 1e3 * tt["empirical"],
                "normal ms": 1e3 * tt["normal"],
            },
        ),
    ]
