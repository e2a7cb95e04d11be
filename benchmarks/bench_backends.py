"""Pyro ÷ NumPyro: one SVI step of the demo model (Bayesian MLP 64-64-10, AutoNormal,
TraceMeanField_ELBO, Adam, full batch of the 1 347 training digits); both steps timed
interleaved in one process, Pyro eager on one torch thread, NumPyro jitted."""

from __future__ import annotations

from _timing import Result, compare


def _numpyro_step(x, y):
    import jax
    import numpyro
    from numpyro.infer import SVI, TraceMeanField_ELBO
    from numpyro.infer.autoguide import AutoNormal

    from ppl_hw.numpyro.models import mlp_classifier

    x, y = jax.numpy.asarray(x), jax.numpy.asarray(y)
    svi = SVI(
        mlp_classifier,
        AutoNormal(mlp_classifier),
        numpyro.optim.Adam(1e-2),
        TraceMeanField_ELBO(),
    )
    state = svi.init(jax.random.PRNGKey(0), x, y)
    update = jax.jit(svi.update)

    def step():
        nonlocal state
        state, loss = update(state, x, y)
        jax.block_until_ready(loss)

    return step


def _pyro_step(x, y):
    import pyro
    import torch
    from pyro.infer import SVI, TraceMeanField_ELBO
    from pyro.infer.autoguide import AutoNormal

    from ppl_hw.pyro.models import mlp_classifier

    torch.set_num_threads(1)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    svi = SVI(
        mlp_classifier,
        AutoNormal(mlp_classifier),
        pyro.optim.Adam({"lr": 1e-2}),
        TraceMeanField_ELBO(),
    )

    def step():
        svi.step(x, y)

    return step


def run(quick: bool = False) -> list[Result]:
    from ppl_hw.datasets import load_digits

    data = load_digits()
    times = compare(
        {
            "numpyro": _numpyro_step(data.x_train, data.y_train),
            "pyro": _pyro_step(data.x_train, data.y_train),
        },
        repeats=2 if quick else 7,
        number=2 if quick else 50,
        warmup=1 if quick else 5,
    )
    return [
        Result.of(
            "Pyro (1 thread) ÷ NumPyro (jit), SVI step of the demo BNN",
            times,
            "pyro",
            "numpyro",
            details={
                "numpyro ms": 1e3 * times["numpyro"],
                "pyro ms": 1e3 * times["pyro"],
            },
        )
    ]
