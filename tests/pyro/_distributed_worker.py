"""One rank of the two-process gloo runs of ``tests/pyro/test_distributed.py``.

``python tests/pyro/_distributed_worker.py RANK WORLD STORE OUT`` joins the process
group through the file store ``STORE``, runs the data-parallel SVI and SGHMC runs and
the bad-input cases, and saves what it saw to ``OUT`` (``torch.save``). The same run
functions with ``world=1`` and no process group are the single-process references
(the test computes those itself).
"""

from __future__ import annotations

import functools
import sys
from datetime import timedelta
from pathlib import Path

import pyro
import torch

N, D, C, H = 64, 64, 10, 8  # data points, digits' features and classes, hidden units
B = 16  # the global minibatch (8 per rank on 2 ranks)
SVI_STEPS = 8
SGHMC_WARMUP, SGHMC_SAMPLES = 3, 9  # 12 steps: 3 epochs of 4 minibatches


def data() -> tuple[torch.Tensor, torch.Tensor]:
    """Digits-shaped data (64 features in [0, 1], 10 classes), its own generator."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand(N, D, generator=g)
    y = torch.randint(0, C, (N,), generator=g)
    return x, y


def model(world: int, batch: int | None = B):
    """The digits MLP (one hidden layer of ``H``) with the plate's subsample_size the
    per-rank minibatch ``batch / world`` (``None``: full data)."""
    from ppl_hw.pyro.models import mlp_classifier

    share = None if batch is None else batch // world
    return functools.partial(mlp_classifier, hidden=(H,), batch_size=share)


def _snapshot() -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in pyro.get_param_store().named_parameters()}


def run_svi(world: int, make_svi) -> dict:
    """``SVI_STEPS`` steps of ``AutoMeanKL`` on the MLP: the loss and all the
    parameters after every step, then ``evaluate_loss``."""
    from pyro.infer import TraceMeanField_ELBO
    from pyro.optim import Adam

    from ppl_hw.pyro.autoguide import AutoMeanKL

    x, y = data()
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    m = model(world)
    guide = AutoMeanKL(m, kl_budget_bits=2000.0)
    svi = make_svi(m, guide, Adam({"lr": 1e-2}), TraceMeanField_ELBO())
    losses, params = [], []
    for _ in range(SVI_STEPS):
        losses.append(svi.step(x, y))
        params.append(_snapshot())
    evaluated = svi.evaluate_loss(x, y)
    pyro.clear_param_store()
    return {"losses": losses, "params": params, "evaluate_loss": evaluated}


def hand_model(x, y, idx):
    """Softmax regression whose data plate takes the minibatch's indices by hand."""
    import pyro.distributions as dist

    w = pyro.sample("w", dist.Normal(x.new_zeros(()), 1.0).expand([D, C]).to_event(2))
    with pyro.plate("data", N, subsample=idx):
        pyro.sample("y", dist.Categorical(logits=x[idx] @ w), obs=y[idx])


def run_hand(make_svi, share=lambda idx: idx) -> dict:
    """The hand-fed recipe: the global minibatch ``torch.randperm(N)[:B]`` drawn by
    every rank from the shared generator, ``share`` (``rank_slice``) keeps this
    rank's part; the autoguide gets the same plate through ``create_plates``."""
    from pyro.infer import Trace_ELBO
    from pyro.infer.autoguide import AutoNormal
    from pyro.optim import Adam

    x, y = data()
    pyro.clear_param_store()
    pyro.set_rng_seed(2)
    guide = AutoNormal(
        hand_model,
        create_plates=lambda x, y, idx: pyro.plate("data", N, subsample=idx),
    )
    svi = make_svi(hand_model, guide, Adam({"lr": 1e-2}), Trace_ELBO())
    losses = [svi.step(x, y, share(torch.randperm(N)[:B])) for _ in range(3)]
    params = _snapshot()
    pyro.clear_param_store()
    return {"losses": losses, "params": params}


def run_sghmc(world: int, process_group=None, jit_compile: bool = False) -> dict:
    """The SGHMC kernel through ``pyro.infer.MCMC``: the unconstrained sample after
    every step (warm-up included) and the kept samples."""
    from pyro.infer import MCMC

    from ppl_hw.pyro.infer import SGHMC

    x, y = data()
    pyro.set_rng_seed(1)
    kernel = SGHMC(
        model(world),
        step_size=1e-3,
        process_group=process_group,
        jit_compile=jit_compile,
        ignore_jit_warnings=True,
    )
    trail = []

    def hook(kernel, sample, stage, i):
        trail.append({k: v.detach().clone() for k, v in sample.items()})

    mcmc = MCMC(
        kernel,
        num_samples=SGHMC_SAMPLES,
        warmup_steps=SGHMC_WARMUP,
        disable_progbar=True,
        hook_fn=hook,
    )
    mcmc.run(x, y)
    samples = {k: v.detach().clone() for k, v in mcmc.get_samples().items()}
    return {"trail": trail, "samples": samples}


def _error(fn) -> str:
    try:
        fn()
    except Exception as err:  # recorded for the test to check
        return f"{type(err).__name__}: {err}"
    return "no error"


def bad_inputs(world: int) -> dict:
    """The errors of the bad inputs that need an initialised group (every rank runs
    the same cases, so their collectives match)."""
    import torch.distributed as dist
    from pyro.infer import Trace_ELBO
    from pyro.infer.autoguide import AutoNormal
    from pyro.optim import Adam

    from ppl_hw.pyro.distributed import DataParallelSVI, rank_slice
    from ppl_hw.pyro.infer import SGHMC

    x, y = data()
    out = {"rank_slice": _error(lambda: rank_slice(torch.arange(5)))}
    out["rank_slice_share"] = rank_slice(torch.arange(8).reshape(2, 4), dim=1)

    def svi(m):
        pyro.clear_param_store()
        return DataParallelSVI(m, AutoNormal(m), Adam({"lr": 1e-2}), Trace_ELBO())

    # 2 ranks x 40 points of 64
    pyro.set_rng_seed(0)
    out["svi_batch"] = _error(lambda: svi(model(world, 80)).step(x, y))
    pyro.set_rng_seed(dist.get_rank())  # a different seed per rank
    out["svi_seed"] = _error(lambda: svi(model(world)).step(x, y))
    pyro.set_rng_seed(0)
    out["svi_shard_full"] = _error(
        lambda: DataParallelSVI(
            model(1, None),
            AutoNormal(model(1, None)),
            Adam({"lr": 1e-2}),
            Trace_ELBO(),
            shard="data",
        ).step(x, y)
    )

    def sghmc(m, **kw):
        pyro.set_rng_seed(0)
        kernel = SGHMC(m, step_size=1e-3, process_group=dist.group.WORLD, **kw)
        kernel.setup(0, x, y)

    out["sghmc_no_plate"] = _error(lambda: sghmc(model(1, None)))
    out["sghmc_batch"] = _error(lambda: sghmc(model(world, 80)))
    pyro.clear_param_store()
    return out


def main() -> None:
    import torch.distributed as dist

    from ppl_hw.pyro.distributed import DataParallelSVI, rank_slice

    rank, world, store, out = (*map(int, sys.argv[1:3]), *sys.argv[3:5])
    torch.set_num_threads(1)
    pyro.enable_validation(True)  # as the test harness does for the references
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=60),
    )
    try:
        result = {
            "svi": run_svi(world, DataParallelSVI),
            "hand": run_hand(DataParallelSVI, rank_slice),
            "sghmc": run_sghmc(world, dist.group.WORLD),
            "sghmc_jit": run_sghmc(world, dist.group.WORLD, jit_compile=True),
            "errors": bad_inputs(world),
        }
        torch.save(result, out)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
