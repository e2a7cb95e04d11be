"""One SVI step of each ppl_hw guide ÷ ``AutoNormal`` on the same model (goal ≤ 1.25×).

The digits BNN (64-64-10, full batch of 1347 digits) under ``TraceMeanField_ELBO``
for ``AutoMeanKL`` and ``AutoDeviceNoise`` (MTJ shape, 10 000-point table);
``AutoScaleDropout`` on the binary network (``binary_mlp_classifier``) against
``AutoNormal`` on that same network. NumPyro: ``svi.update`` jitted; Pyro: eager
``svi.step`` on one torch thread. Outside ``quick``, the same ratios at hidden widths
256 and 1 024 (two hidden layers) show how the guides' cost grows with the network.
"""

from __future__ import annotations

from functools import partial
from itertools import pairwise

from _timing import Result, compare


def _budget_bits(width: int) -> int:
    """``AutoMeanKL``'s budget: 20 000 bits on the demo's 64-64-10 network (8 970
    weights) and the same bits per weight at other widths."""
    sizes = (64, width, width, 10)
    weights = sum((a + 1) * b for a, b in pairwise(sizes))
    return round(20_000 * weights / 8_970)


GUIDES = (
    ("AutoMeanKL", "AutoNormal"),
    ("AutoDeviceNoise", "AutoNormal"),
    ("AutoScaleDropout", "AutoNormal (binary)"),
)


def _numpyro(width: int, binary_width: int, reps: dict) -> list[Result]:
    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import SVI, TraceMeanField_ELBO
    from numpyro.infer.autoguide import AutoNormal

    from ppl_hw import devices
    from ppl_hw.datasets import load_digits
    from ppl_hw.numpyro.autoguide import AutoDeviceNoise, AutoMeanKL, AutoScaleDropout
    from ppl_hw.numpyro.distributions import EmpiricalNoise
    from ppl_hw.numpyro.models import binary_mlp_classifier, mlp_classifier

    data = load_digits()
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    noise = EmpiricalNoise(devices.mtj_noise(10_000, seed=0))
    real = partial(mlp_classifier, hidden=(width, width))
    binary = partial(binary_mlp_classifier, hidden=(binary_width, binary_width))

    def stepper(model, guide):
        svi = SVI(model, guide, numpyro.optim.Adam(1e-3), TraceMeanField_ELBO())
        state = svi.init(jax.random.PRNGKey(0), x, y)
        update = jax.jit(lambda s: svi.update(s, x, y)[0])
        box = [state]

        def call():
            box[0] = update(box[0])
            jax.block_until_ready(box[0])

        return call

    t = compare(
        {
            "AutoNormal": stepper(real, AutoNormal(real)),
            "AutoMeanKL": stepper(
                real, AutoMeanKL(real, kl_budget_bits=_budget_bits(width))
            ),
            "AutoDeviceNoise": stepper(real, AutoDeviceNoise(real, noise=noise)),
            "AutoNormal (binary)": stepper(binary, AutoNormal(binary)),
            "AutoScaleDropout": stepper(binary, AutoScaleDropout(binary, p=0.5)),
        },
        **reps,
    )
    return _results("NumPyro jit", width, binary_width, t)


def _pyro(width: int, binary_width: int, reps: dict) -> list[Result]:
    import pyro
    import torch
    from pyro.infer import SVI, TraceMeanField_ELBO
    from pyro.infer.autoguide import AutoNormal

    from ppl_hw import devices
    from ppl_hw.datasets import load_digits
    from ppl_hw.pyro.autoguide import AutoDeviceNoise, AutoMeanKL, AutoScaleDropout
    from ppl_hw.pyro.distributions import EmpiricalNoise
    from ppl_hw.pyro.models import binary_mlp_classifier, mlp_classifier

    torch.set_num_threads(1)
    data = load_digits()
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    noise = EmpiricalNoise(devices.mtj_noise(10_000, seed=0))
    real = partial(mlp_classifier, hidden=(width, width))
    binary = partial(binary_mlp_classifier, hidden=(binary_width, binary_width))
    pyro.set_rng_seed(0)

    def stepper(model, guide):
        # each guide gets its own parameter store, swapped in around its step
        with pyro.get_param_store().scope() as store:
            svi = SVI(
                model, guide, pyro.optim.Adam({"lr": 1e-3}), TraceMeanField_ELBO()
            )
            svi.step(x, y)

        def call():
            with pyro.get_param_store().scope(state=store):
                svi.step(x, y)

        return call

    t = compare(
        {
            "AutoNormal": stepper(real, AutoNormal(real)),
            "AutoMeanKL": stepper(
                real, AutoMeanKL(real, kl_budget_bits=_budget_bits(width))
            ),
            "AutoDeviceNoise": stepper(real, AutoDeviceNoise(real, noise=noise)),
            "AutoNormal (binary)": stepper(binary, AutoNormal(binary)),
            "AutoScaleDropout": stepper(binary, AutoScaleDropout(binary, p=0.5)),
        },
        **reps,
    )
    return _results("Pyro, 1 thread", width, binary_width, t)


def _results(backend: str, width: int, binary_width: int, t) -> list[Result]:
    out = []
    for name, base in GUIDES:
        if "binary" in base:
            model = f"binary digits BNN 64-{binary_width}-{binary_width}-10"
        else:
            model = f"digits BNN 64-{width}-{width}-10"
        out.append(
            Result.of(
                f"SVI step {name} ÷ AutoNormal, {model}, {backend}",
                t,
                name,
                base,
                goal=1.25,
                details={f"{name} ms": 1e3 * t[name], "AutoNormal ms": 1e3 * t[base]},
            )
        )
    return out


def run(quick: bool = False) -> list[Result]:
    if quick:
        reps = dict(repeats=2, number=2, warmup=1)
        return _numpyro(64, 128, reps) + _pyro(64, 128, reps)
    results = []
    # the demo's sizes first (the goal's setting), then the scaling rows
    for width, binary_width, reps in (
        (64, 128, dict(repeats=9, number=20, warmup=5)),
        (256, 256, dict(repeats=7, number=10, warmup=3)),
        (1024, 1024, dict(repeats=5, number=3, warmup=2)),
    ):
        results += _numpyro(width, binary_width, reps)
        results += _pyro(width, binary_width, reps)
    return results
