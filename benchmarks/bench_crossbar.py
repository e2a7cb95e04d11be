"""``Predictive`` under ``crossbar(PCM)`` (weight effects only: programming noise,
drift, read noise) ÷ the clean model (goal ≤ 1.5×): the demo BNN, 100 posterior
samples on the 450 test digits. NumPyro: the whole ``Predictive`` call jitted;
Pyro: eager, one model run per sample (``Predictive``'s default)."""

from __future__ import annotations

from _timing import Result, compare


def run(quick: bool = False) -> list[Result]:
    import jax
    import jax.numpy as jnp
    import numpyro
    import pyro
    import torch
    from numpyro.infer import Predictive as NPredictive
    from numpyro.infer.autoguide import AutoNormal as NAutoNormal
    from pyro.infer import Predictive as PPredictive
    from pyro.infer.autoguide import AutoNormal as PAutoNormal

    from ppl_hw import devices
    from ppl_hw.datasets import load_digits
    from ppl_hw.numpyro.handlers import crossbar as ncrossbar
    from ppl_hw.numpyro.models import mlp_classifier as nmodel
    from ppl_hw.pyro.models import mlp_classifier as pmodel
    from ppl_hw.pyro.poutine import crossbar as pcrossbar

    data = load_digits()
    num_samples = 10 if quick else 100
    device = devices.PCM(dac_bits=None, adc_bits=None, out_noise=0.0)
    reps = (
        dict(repeats=2, number=1, warmup=1)
        if quick
        else dict(repeats=7, number=5, warmup=2)
    )

    x, y, x_test = (jnp.asarray(a) for a in (data.x_train, data.y_train, data.x_test))
    guide = NAutoNormal(nmodel)
    svi = numpyro.infer.SVI(
        nmodel, guide, numpyro.optim.Adam(1e-2), numpyro.infer.Trace_ELBO()
    )
    params = svi.get_params(svi.init(jax.random.PRNGKey(0), x, y))

    def numpyro_fn(model):
        pred = NPredictive(
            model,
            guide=guide,
            params=params,
            num_samples=num_samples,
            return_sites=["logits"],
        )
        f = jax.jit(lambda key: pred(key, x_test)["logits"])
        return lambda: f(jax.random.PRNGKey(1)).block_until_ready()

    chip = ncrossbar(nmodel, device=device, t_inference=86_400.0)
    quiet = ncrossbar(
        nmodel, device=device.replace(read_noise=None), t_inference=86_400.0
    )
    tn = compare(
        {
            "clean": numpyro_fn(nmodel),
            "crossbar": numpyro_fn(chip),
            "no read": numpyro_fn(quiet),
        },
        **reps,
    )

    pyro.clear_param_store()
    pguide = PAutoNormal(pmodel)
    xt = torch.as_tensor(data.x_test)
    pguide(torch.as_tensor(data.x_train), torch.as_tensor(data.y_train))

    def pyro_fn(model):
        pred = PPredictive(
            model,
            guide=pguide,
            num_samples=num_samples,
            return_sites=["logits"],
        )

        def call():
            with torch.no_grad():
                return pred(xt)["logits"]

        return call

    pchip = pcrossbar(pmodel, device=device, t_inference=86_400.0)
    tp = compare({"clean": pyro_fn(pmodel), "crossbar": pyro_fn(pchip)}, **reps)
    return [
        Result(
            "Predictive under crossbar(PCM) ÷ clean, NumPyro jit",
            tn["crossbar"] / tn["clean"],
            goal=1.5,
            details={
                "clean ms": 1e3 * tn["clean"],
                "crossbar ms": 1e3 * tn["crossbar"],
            },
        ),
        Result(
            "the same without read noise (programming + drift) ÷ clean, NumPyro jit",
            tn["no read"] / tn["clean"],
            details={"no-read ms": 1e3 * tn["no read"]},
            note="read noise: 2 fresh Gaussians per weight per sample",
        ),
        Result(
            "Predictive under crossbar(PCM) ÷ clean, Pyro",
            tp["crossbar"] / tp["clean"],
            goal=1.5,
            details={
                "clean ms": 1e3 * tp["clean"],
                "crossbar ms": 1e3 * tp["crossbar"],
            },
        ),
    ]
