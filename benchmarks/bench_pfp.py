"""One PFP training step ÷ one real-valued SVI step of the same network (goal ≤ 3×).

The digits reference network 64-256-256-10 (batch norm, output ``3 h + b``):
``ternary_mlp_classifier`` (ternary ``DiscreteWeight`` priors, sign activations) with
``AutoDiscreteWeight`` under ``PFP_ELBO(kl_weight=0.1)`` against the same architecture
with real weights (``Normal(0, 1)`` priors, tanh activations: the real-valued net the
paper pre-trains) with ``AutoNormal`` under ``Trace_ELBO``. Adam, full batch of 1347
digits and minibatches of 100. NumPyro: ``svi.update`` jitted; Pyro: eager
``svi.step`` on one torch thread.
"""

from __future__ import annotations

import functools
import itertools

from _timing import Result, compare

HIDDEN = (256, 256)
BATCH_SIZES = (None, 100)
QUICK_BATCH_SIZES = (100,)  # the suite's quick run: one setting, fewer compiles


def _label(batch_size: int | None) -> str:
    return "full batch" if batch_size is None else f"minibatch {batch_size}"


def _numpyro(quick: bool, reps: dict) -> list[Result]:
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    from ppl_hw.datasets import load_digits
    from ppl_hw.numpyro import nn
    from ppl_hw.numpyro.autoguide import AutoDiscreteWeight
    from ppl_hw.numpyro.infer import PFP_ELBO
    from ppl_hw.numpyro.models import ternary_mlp_classifier

    def real_mlp(x, y=None, *, batch_size=None):
        """ternary_mlp_classifier with real weights and tanh for sign."""
        sizes = (x.shape[-1], *HIDDEN, 10)
        ws = [
            numpyro.sample(f"w{i}", dist.Normal(0.0, 1.0).expand([a, b]).to_event(2))
            for i, (a, b) in enumerate(itertools.pairwise(sizes))
        ]
        b = numpyro.sample(
            f"b{len(ws) - 1}", dist.Normal(0.0, 1.0).expand([sizes[-1]]).to_event(1)
        )
        with numpyro.plate("data", x.shape[0], subsample_size=batch_size):
            h = numpyro.subsample(x, event_dim=1)
            for i, w in enumerate(ws):
                h = nn.dense(h, w) * sizes[i] ** -0.5
                if i < len(ws) - 1:
                    h = jnp.tanh(nn.batch_norm(h))
            logits = numpyro.deterministic("logits", 3.0 * h + b)
            obs = None if y is None else numpyro.subsample(y, event_dim=0)
            numpyro.sample("y", dist.Categorical(logits=logits), obs=obs)

    data = load_digits()
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

    def stepper(model, guide, elbo):
        svi = SVI(model, guide, numpyro.optim.Adam(1e-2), elbo)
        state = svi.init(jax.random.PRNGKey(0), x, y)
        update = jax.jit(lambda s: svi.update(s, x, y)[0])
        box = [state]

        def call():
            box[0] = update(box[0])
            jax.block_until_ready(box[0])

        return call

    candidates = {}
    for bs in QUICK_BATCH_SIZES if quick else BATCH_SIZES:
        pfp = functools.partial(ternary_mlp_classifier, hidden=HIDDEN, batch_size=bs)
        real = functools.partial(real_mlp, batch_size=bs)
        candidates[f"PFP {bs}"] = stepper(
            pfp, AutoDiscreteWeight(pfp), PFP_ELBO(kl_weight=0.1)
        )
        candidates[f"real {bs}"] = stepper(real, AutoNormal(real), Trace_ELBO())
    return _results("NumPyro jit", compare(candidates, **reps))


def _pyro(quick: bool, reps: dict) -> list[Result]:
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    from ppl_hw.datasets import load_digits
    from ppl_hw.pyro import nn
    from ppl_hw.pyro.autoguide import AutoDiscreteWeight
    from ppl_hw.pyro.infer import PFP_ELBO
    from ppl_hw.pyro.models import ternary_mlp_classifier

    def real_mlp(x, y=None, *, batch_size=None):
        """ternary_mlp_classifier with real weights and tanh for sign."""
        sizes = (x.shape[-1], *HIDDEN, 10)
        zero = x.new_zeros(())
        ws = [
            pyro.sample(f"w{i}", dist.Normal(zero, 1.0).expand([a, b]).to_event(2))
            for i, (a, b) in enumerate(itertools.pairwise(sizes))
        ]
        b = pyro.sample(
            f"b{len(ws) - 1}", dist.Normal(zero, 1.0).expand([sizes[-1]]).to_event(1)
        )
        with pyro.plate("data", x.shape[0], subsample_size=batch_size):
            h = pyro.subsample(x, event_dim=1)
            for i, w in enumerate(ws):
                h = nn.dense(h, w) * sizes[i] ** -0.5
                if i < len(ws) - 1:
                    h = torch.tanh(nn.batch_norm(h))
            logits = pyro.deterministic("logits", 3.0 * h + b)
            obs = None if y is None else pyro.subsample(y, event_dim=0)
            pyro.sample("y", dist.Categorical(logits=logits), obs=obs)

    data = load_digits()
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    pyro.set_rng_seed(0)

    def stepper(model, guide, elbo):
        # each guide gets its own parameter store, swapped in around its step
        with pyro.get_param_store().scope() as store:
            svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), elbo)
            svi.step(x, y)

        def call():
            with pyro.get_param_store().scope(state=store):
                svi.step(x, y)

        return call

    # one intra-op thread (as tests/conftest.py under xdist): with two threads on two
    # cores, any other busy process makes every eager op wait for a core and the
    # step 10-40x slower, which swamps the ratio
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        candidates = {}
        for bs in QUICK_BATCH_SIZES if quick else BATCH_SIZES:
            pfp = functools.partial(
                ternary_mlp_classifier, hidden=HIDDEN, batch_size=bs
            )
            real = functools.partial(real_mlp, batch_size=bs)
            candidates[f"PFP {bs}"] = stepper(
                pfp, AutoDiscreteWeight(pfp), PFP_ELBO(kl_weight=0.1)
            )
            candidates[f"real {bs}"] = stepper(real, AutoNormal(real), Trace_ELBO())
        t = compare(candidates, **reps)
    finally:
        torch.set_num_threads(threads)
    return _results("Pyro", t, note="torch 1 thread")


def _results(backend: str, t: dict[str, float], note: str = "") -> list[Result]:
    out = []
    for bs in BATCH_SIZES:
        if f"PFP {bs}" not in t:  # not run (quick)
            continue
        pfp, real = t[f"PFP {bs}"], t[f"real {bs}"]
        out.append(
            Result(
                "PFP step (ternary, AutoDiscreteWeight) ÷ SVI step (real, AutoNormal), "
                f"digits 64-256-256-10, {_label(bs)}, {backend}",
                pfp / real,
                goal=3.0,
                details={"PFP ms": 1e3 * pfp, "real ms": 1e3 * real},
                note=note,
            )
        )
    return out


def run(quick: bool = False) -> list[Result]:
    reps = (
        dict(repeats=2, number=2, warmup=1)
        if quick
        else dict(repeats=9, number=20, warmup=5)
    )
    # eager Pyro steps of this network take 10-80 ms: fewer calls per round
    pyro_reps = (
        dict(repeats=2, number=1, warmup=1)
        if quick
        else dict(repeats=9, number=10, warmup=3)
    )
    return _numpyro(quick, reps) + _pyro(quick, pyro_reps)
