"""One PFP training step ÷ one real-valued SVI step of the same network (goal ≤ 3×).

The digits reference network 64-256-256-10 (batch norm, output ``3 h + b``):
``ternary_mlp_classifier`` (ternary ``DiscreteWeight`` priors, sign activations) with
``AutoDiscreteWeight`` under ``PFP_ELBO(kl_weight=0.1)`` against the same architecture
with real weights (``Normal(0, 1)`` priors, tanh activations: the real-valued net the
paper pre-trains) with ``AutoNormal`` under ``Trace_ELBO``. Adam, full batch of 1347
digits and minibatches of 100. NumPyro: ``svi.update`` jitted; Pyro: eager
``svi.step`` on one torch thread. Each ratio carries the range of its per-round
ratios (both steps of a round timed back to back).

Scaling (not in the quick run): the same ratio at full batch for a small 64-64-10 net
(one hidden layer of 64) and for hidden layers of 1 024 units (64-1024-1024-10), with
fewer rounds.

The floor: the PFP must propagate a mean and a variance where the real net
propagates one array, so each dense layer after a sign takes two products forward
(mean, and the variance ``1·Var W + v E[W]²`` whose first term is one all-ones row)
and four backward, against one and two: 2× the real step's matrix products.
"""

from __future__ import annotations

import functools
import itertools

from _timing import Result, compare

HIDDEN = (256, 256)
BATCH_SIZES = (None, 100)
QUICK_BATCH_SIZES = (100,)  # the suite's quick run: one setting, fewer compiles
# scaling rows (non-quick only): full batch, the small net and the wide net
SCALING = ((64,), (1024, 1024))


def _label(batch_size: int | None) -> str:
    return "full batch" if batch_size is None else f"minibatch {batch_size}"


def _net(hidden: tuple[int, ...]) -> str:
    return "-".join(str(n) for n in (64, *hidden, 10))


def _settings(quick: bool) -> list[tuple[tuple[int, ...], int | None]]:
    if quick:
        return [(HIDDEN, bs) for bs in QUICK_BATCH_SIZES]
    return [(HIDDEN, bs) for bs in BATCH_SIZES]


def _numpyro_real_mlp(hidden: tuple[int, ...]):
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist

    from ppl_hw.numpyro import nn

    def real_mlp(x, y=None, *, batch_size=None):
        """ternary_mlp_classifier with real weights and tanh for sign."""
        sizes = (x.shape[-1], *hidden, 10)
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

    return real_mlp


def _numpyro_candidates(settings) -> dict:
    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoNormal

    from ppl_hw.datasets import load_digits
    from ppl_hw.numpyro.autoguide import AutoDiscreteWeight
    from ppl_hw.numpyro.infer import PFP_ELBO
    from ppl_hw.numpyro.models import ternary_mlp_classifier

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
    for hidden, bs in settings:
        pfp = functools.partial(ternary_mlp_classifier, hidden=hidden, batch_size=bs)
        real = functools.partial(_numpyro_real_mlp(hidden), batch_size=bs)
        candidates[("PFP", hidden, bs)] = stepper(
            pfp, AutoDiscreteWeight(pfp), PFP_ELBO(kl_weight=0.1)
        )
        candidates[("real", hidden, bs)] = stepper(real, AutoNormal(real), Trace_ELBO())
    return candidates


def _pyro_real_mlp(hidden: tuple[int, ...]):
    import pyro
    import pyro.distributions as dist
    import torch

    from ppl_hw.pyro import nn

    def real_mlp(x, y=None, *, batch_size=None):
        """ternary_mlp_classifier with real weights and tanh for sign."""
        sizes = (x.shape[-1], *hidden, 10)
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

    return real_mlp


def _pyro_candidates(settings) -> dict:
    import pyro
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoNormal

    from ppl_hw.datasets import load_digits
    from ppl_hw.pyro.autoguide import AutoDiscreteWeight
    from ppl_hw.pyro.infer import PFP_ELBO
    from ppl_hw.pyro.models import ternary_mlp_classifier

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

    candidates = {}
    for hidden, bs in settings:
        pfp = functools.partial(ternary_mlp_classifier, hidden=hidden, batch_size=bs)
        real = functools.partial(_pyro_real_mlp(hidden), batch_size=bs)
        candidates[("PFP", hidden, bs)] = stepper(
            pfp, AutoDiscreteWeight(pfp), PFP_ELBO(kl_weight=0.1)
        )
        candidates[("real", hidden, bs)] = stepper(real, AutoNormal(real), Trace_ELBO())
    return candidates


def _time(candidates: dict, reps: dict):
    """``compare`` on string keys; returns the Timings keyed by those strings."""
    named = {repr(k): fn for k, fn in candidates.items()}
    return compare(named, **reps)


def _results(backend: str, t, settings, note: str = "") -> list[Result]:
    out = []
    for hidden, bs in settings:
        pfp, real = repr(("PFP", hidden, bs)), repr(("real", hidden, bs))
        out.append(
            Result.of(
                "PFP step (ternary, AutoDiscreteWeight) ÷ SVI step (real, AutoNormal), "
                f"digits {_net(hidden)}, {_label(bs)}, {backend}",
                t,
                pfp,
                real,
                goal=3.0,
                details={"PFP ms": 1e3 * t[pfp], "real ms": 1e3 * t[real]},
                note=note,
            )
        )
    return out


def _numpyro(quick: bool, reps: dict, scaling_reps: dict) -> list[Result]:
    settings = _settings(quick)
    out = _results("NumPyro jit", _time(_numpyro_candidates(settings), reps), settings)
    if not quick:
        scaling = [(h, None) for h in SCALING]
        t = _time(_numpyro_candidates(scaling), scaling_reps)
        out += _results("NumPyro jit", t, scaling)
    return out


def _pyro(quick: bool, reps: dict, scaling_reps: dict) -> list[Result]:
    import torch

    # one intra-op thread (as tests/conftest.py under xdist): with two threads on two
    # cores, any other busy process makes every eager op wait for a core and the
    # step 10-40x slower, which swamps the ratio
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    note = "torch 1 thread"
    try:
        settings = _settings(quick)
        t = _time(_pyro_candidates(settings), reps)
        out = _results("Pyro", t, settings, note=note)
        if not quick:
            scaling = [(h, None) for h in SCALING]
            t = _time(_pyro_candidates(scaling), scaling_reps)
            out += _results("Pyro", t, scaling, note=note)
    finally:
        torch.set_num_threads(threads)
    return out


def run(quick: bool = False) -> list[Result]:
    if quick:
        reps = dict(repeats=2, number=2, warmup=1)
        pyro_reps = dict(repeats=2, number=1, warmup=1)
        return _numpyro(True, reps, reps) + _pyro(True, pyro_reps, pyro_reps)
    reps = dict(repeats=9, number=20, warmup=5)
    scaling_reps = dict(repeats=7, number=5, warmup=2)
    # eager Pyro steps of this network take 10-80 ms (hidden 1 024: ~0.5 s): fewer
    # calls per round
    pyro_reps = dict(repeats=9, number=10, warmup=3)
    pyro_scaling_reps = dict(repeats=5, number=2, warmup=1)
    return _numpyro(False, reps, scaling_reps) + _pyro(
        False, pyro_reps, pyro_scaling_reps
    )
