"""Pyro on ``torch.distributed``: time per SVI step on 2 gloo processes against 1.

Two local processes (torch on one thread each) join a gloo group. Rank 0 times,
interleaved round by round with :func:`_timing.compare`:

* 1 process: plain ``pyro.infer.SVI`` on rank 0 alone, the global minibatch of ``B``
  points (rank 1 meanwhile waits in its next collective, which sleeps: measured at
  ~0 CPU);
* 1 process, B/2: the same on half the minibatch: the floor of a perfect split with
  no communication; its ratio to the first is the ``ideal ratio`` detail (the
  replicated per-step work, the guide's and Pyro's, keeps it above 0.5);
* 2 processes: :class:`ppl_hw.pyro.distributed.DataParallelSVI`, ``B / 2`` points
  per rank, the gradients all-reduced (rank 1 runs the same steps in lockstep).

Both train ``AutoMeanKL`` on the digits MLP (``mlp_classifier``, digits-shaped
data: 1 347 points, 64 features, 10 classes) with ``TraceMeanField_ELBO`` and Adam;
the ratio is time(2 processes) / time(1 process) per step, so below 1 is a speed-up
(the guide, the KL and Pyro's per-step bookkeeping are replicated on every rank; only
the minibatch's forward and backward passes split).
Full run: hidden (256, 256), ``B = 512``; ``--quick``: hidden (16,), ``B = 32``.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

from _timing import Result, Timings

HERE = Path(__file__).resolve().parent
N, D, C = 1347, 64, 10
TIMEOUT = 900.0


def _sizes(quick: bool) -> dict:
    if quick:
        return {"hidden": [16], "batch": 32, "steps": 2, "repeats": 2, "warmup": 1}
    return {"hidden": [256, 256], "batch": 512, "steps": 5, "repeats": 7, "warmup": 2}


def _rank(rank: int, world: int, store: str, out: str, quick: bool) -> None:
    """One rank: rank 0 times both candidates, rank 1 mirrors the 2-process calls."""
    import functools

    import pyro
    import torch
    import torch.distributed as dist
    from _timing import compare
    from pyro.infer import SVI, TraceMeanField_ELBO
    from pyro.optim import Adam

    from ppl_hw.pyro.autoguide import AutoMeanKL
    from ppl_hw.pyro.distributed import DataParallelSVI
    from ppl_hw.pyro.models import mlp_classifier

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{store}",
        rank=rank,
        world_size=world,
        timeout=timedelta(seconds=TIMEOUT),
    )
    size = _sizes(quick)
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(N, D, generator=g), torch.randint(0, C, (N,), generator=g)
    dims = [D, *size["hidden"], C]
    bits = 4.0 * sum(a * b + b for a, b in itertools.pairwise(dims))

    def svi(cls, batch: int, name: str):
        model = functools.partial(
            mlp_classifier, hidden=tuple(size["hidden"]), batch_size=batch
        )
        guide = AutoMeanKL(model, kl_budget_bits=bits)
        guide._pyro_name = name  # its own parameters in the param store
        return cls(model, guide, Adam({"lr": 1e-3}), TraceMeanField_ELBO())

    pyro.set_rng_seed(0)
    dp = svi(DataParallelSVI, size["batch"] // world, "dp")

    def two() -> None:
        for _ in range(size["steps"]):
            dp.step(x, y)

    try:
        if rank != 0:
            for _ in range(size["warmup"] + size["repeats"]):
                two()
            return

        def single(batch: int, name: str):
            base = svi(SVI, batch, name)

            def one() -> None:
                # its own random stream: rank 0's generator stays the shared one
                with torch.random.fork_rng(devices=[]):
                    for _ in range(size["steps"]):
                        base.step(x, y)

            return one

        t = compare(
            {
                "1 process": single(size["batch"], "single"),
                "1 process, B/2": single(size["batch"] // world, "half"),
                "2 processes": two,
            },
            repeats=size["repeats"],
            number=1,
            warmup=size["warmup"],
        )
        rounds = {k: [s / size["steps"] for s in v] for k, v in t.rounds.items()}
        Path(out).write_text(json.dumps(rounds))
    finally:
        dist.destroy_process_group()


def run(quick: bool = False) -> list[Result]:
    size = _sizes(quick)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(HERE.parent), str(HERE), env.get("PYTHONPATH")) if p
    )
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-dist-pyro-") as tmp:
        out = Path(tmp) / "rounds.json"
        procs = [
            subprocess.Popen(
                [sys.executable, __file__, str(r), "2", f"{tmp}/store", str(out)]
                + (["--quick"] if quick else []),
                env=env,
            )
            for r in range(2)
        ]
        try:
            deadline = time.monotonic() + TIMEOUT
            for p in procs:
                p.wait(timeout=max(deadline - time.monotonic(), 1.0))
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
                    p.wait()
        if any(p.returncode for p in procs):
            raise RuntimeError("a benchmark rank failed (its output is above)")
        timings = Timings(json.loads(out.read_text()))
    hidden = "x".join(map(str, size["hidden"]))
    return [
        Result.of(
            f"Pyro SVI step, 2 gloo processes ÷ 1 (AutoMeanKL, MLP {hidden}, "
            f"B={size['batch']})",
            timings,
            "2 processes",
            "1 process",
            details={
                "1 process ms": 1e3 * timings["1 process"],
                "2 processes ms": 1e3 * timings["2 processes"],
                "ideal ratio": timings.ratio("1 process, B/2", "1 process")[0],
                "load avg": load,
            },
        )
    ]


if __name__ == "__main__":
    args = sys.argv[1:]
    quick = "--quick" in args
    args = [a for a in args if a != "--quick"]
    if args:  # a rank started by run()
        _rank(int(args[0]), int(args[1]), args[2], args[3], quick)
    else:
        for r in run(quick=quick):
            print(r)
