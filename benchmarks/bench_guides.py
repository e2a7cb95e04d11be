"""One SVI step of each ppl_hw guide ÷ ``AutoNormal`` on the same model (goal ≤ 1.25×).

The digits BNN (64-64-10, full batch of 1347 digits) under ``TraceMeanField_ELBO``
for ``AutoMeanKL`` and ``AutoDeviceNoise`` (MTJ shape, 10 000-point table);
``AutoScaleDropout`` on the binary network (``binary_mlp_classifier``) against
``AutoNormal`` on that same network. NumPyro: ``svi.update`` jitted; Pyro: eager
``svi.step``.
"""

from __future__ import annotations

from _timing import Result, compare


def _numpyro(quick: bool, reps: dict) -> list[Result]:
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
            "AutoNormal": stepper(mlp_classifier, AutoNormal(mlp_classifier)),
            "AutoMeanKL": stepper(
                mlp_classifier, AutoMeanKL(mlp_classifier, kl_budget_bits=20_000)
            ),
            "AutoDeviceNoise": stepper(
                mlp_classifier, AutoDeviceNoise(mlp_classifier, noise=noise)
            ),
            "AutoNormal (binary)": stepper(
                binary_mlp_classifier, AutoNormal(binary_mlp_classifier)
            ),
            "AutoScaleDropout": stepper(
                binary_mlp_classifier, AutoScaleDropout(binary_mlp_classifier, p=0.5)
            ),
        },
        **reps,
    )
    return _results("NumPyro jit", t)


def _pyro(quick: bool, reps: dict) -> list[Result]:
    import pyro
    import torch
    from pyro.infer import SVI, TraceMeanField_ELBO
    from pyro.infer.autoguide import AutoNormal

    from ppl_hw import devices
    from ppl_hw.datasets import load_digits
    from ppl_hw.pyro.autoguide import AutoDeviceNoise, AutoMeanKL, AutoScaleDropout
    from ppl_hw.pyro.distributions import EmpiricalNoise
    from ppl_hw.pyro.models import binary_mlp_classifier, mlp_classifier

    data = load_digits()
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    noise = EmpiricalNoise(devices.mtj_noise(10_000, seed=0))
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
            "AutoNormal": stepper(mlp_classifier, AutoNormal(mlp_classifier)),
            "AutoMeanKL": stepper(
                mlp_classifier, AutoMeanKL(mlp_classifier, kl_budget_bits=20_000)
            ),
            "AutoDeviceNoise": stepper(
                mlp_classifier, AutoDeviceNoise(mlp_classifier, noise=noise)
            ),
            "AutoNormal (binary)": stepper(
                binary_mlp_classifier, AutoNormal(binary_mlp_classifier)
            ),
            "AutoScaleDropout": stepper(
                binary_mlp_classifier, AutoScaleDropout(binary_mlp_classifier, p=0.5)
            ),
        },
        **reps,
    )
    return _results("Pyro", t)


def _results(backend: str, t: dict[str, float]) -> list[Result]:
    out = []
    for name, base in (
        ("AutoMeanKL", "AutoNormal"),
        ("AutoDeviceNoise", "AutoNormal"),
        ("AutoScaleDropout", "AutoNormal (binary)"),
    ):
        model = "binary digits BNN" if "binary" in base else "digits BNN"
        out.append(
            Result(
                f"SVI step {name} ÷ AutoNormal, {model}, {backend}",
                t[name] / t[base],
                goal=1.25,
                details={f"{name} ms": 1e3 * t[name], "AutoNormal ms": 1e3 * t[base]},
            )
        )
    return out


def run(quick: bool = False) -> list[Result]:
    reps = (
        dict(repeats=2, number=2, warmup=1)
        if quick
        else dict(repeats=9, number=20, warmup=5)
    )
    return _numpyro(quick, reps) + _pyro(quick, reps)
