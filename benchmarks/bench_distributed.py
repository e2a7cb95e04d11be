"""Data parallelism (NumPyro): time per SVI step on a 2-device mesh against one
device, and on 2 ``jax.distributed`` processes against 1.

The workload is one jitted ``update`` of ``DataParallelSVI`` (a mean-field Normal
guide on the digits MLP, hidden (64, 64), minibatch ``B`` drawn by the model's
plate, x and y sharded);
the baseline is the plain ``SVI`` step on one device. The two host devices need
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` before JAX is imported, so the
mesh is timed in a child process (``python bench_distributed.py --mesh``), both
candidates interleaved there (:func:`_timing.compare`). Processes cannot be
interleaved inside one process: rounds alternate a 1-process and a 2-process launch,
each timing its steps after warm-up, and the ratio of the medians is reported with
the per-round range. On the 2-core machine the 2 devices share the 2 cores with
XLA's own intra-op threads, so a ratio near or above 1 is what to expect there.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from _timing import Result, Timings

HERE = Path(__file__).resolve()
HIDDEN = (64, 64)


def _setup(batch: int, mesh):
    import itertools

    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO

    from ppl_hw.common.models import layer_sizes
    from ppl_hw.datasets import load_digits
    from ppl_hw.numpyro.distributed import DataParallelSVI
    from ppl_hw.numpyro.models import mlp_classifier

    def model(x, y=None):
        return mlp_classifier(x, y, hidden=HIDDEN, batch_size=batch)

    shapes = {}
    for i, (a, b) in enumerate(itertools.pairwise(layer_sizes(64, HIDDEN, 10))):
        shapes[f"w{i}"], shapes[f"b{i}"] = (a, b), (b,)

    def guide(x, y=None):
        # mean-field Normal written out (an autoguide's eager set-up costs seconds
        # of compilation that have nothing to do with the step being timed)
        for name, shape in shapes.items():
            loc = numpyro.param(f"{name}_loc", jnp.zeros(shape))
            scale = numpyro.param(
                f"{name}_scale",
                jnp.full(shape, 0.1),
                constraint=dist.constraints.positive,
            )
            numpyro.sample(name, dist.Normal(loc, scale).to_event(len(shape)))

    d = load_digits()
    x, y = d.x_train[:1344], d.y_train[:1344].astype("int32")
    args = (model, guide, numpyro.optim.Adam(1e-3), Trace_ELBO())
    if mesh is None:
        svi = SVI(*args)
    else:
        svi = DataParallelSVI(*args, mesh=mesh, data_argnums=(0, 1))
    return svi, x, y, jax.random.PRNGKey(0)


def _stepper(svi, x, y, key):
    """A zero-argument callable doing ``k`` jitted steps and blocking."""
    import jax

    state = svi.init(key, x, y)
    if hasattr(svi, "place"):
        (x, y), _ = svi.place(x, y)
    update = jax.jit(svi.update)
    box = [state]

    def step() -> None:
        box[0], loss = update(box[0], x, y)
        loss.block_until_ready()

    return step


def _child_mesh(quick: bool) -> None:
    """In the child (two host devices): print the rounds of both candidates."""
    import jax
    from _timing import compare

    mesh = jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))
    out = {}
    for batch in (64,) if quick else (64, 1344):
        t = compare(
            {
                "mesh": _stepper(*_setup(batch, mesh)),
                "one": _stepper(*_setup(batch, None)),
            },
            repeats=3 if quick else 9,
            number=5 if quick else 50,
            warmup=2,
        )
        out[batch] = t.rounds
    print(json.dumps(out))


def _child_process(pid: int, nproc: int, port: str, steps: int) -> None:
    """One process of a 1- or 2-process group: print its median seconds per step."""
    import statistics
    import time

    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if nproc > 1:
        jax.distributed.initialize(
            f"127.0.0.1:{port}",
            num_processes=nproc,
            process_id=pid,
            initialization_timeout=60,
        )
    mesh = jax.make_mesh(
        (jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
    )
    svi, x, y, key = _setup(64, mesh)
    rows = slice(pid * len(x) // nproc, (pid + 1) * len(x) // nproc)
    step = _stepper(svi, x[rows], y[rows], key)
    for _ in range(3):
        step()
    times = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(steps // 5):
            step()
        times.append((time.perf_counter() - start) / (steps // 5))
    if pid == 0:
        print(json.dumps(statistics.median(times)))
    if nproc > 1:
        jax.distributed.shutdown()


def _run_child(args: list[str], timeout: float = 600) -> str:
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent), *sys.path])
    out = subprocess.run(
        [sys.executable, str(HERE), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=True,
    )
    return out.stdout.strip().splitlines()[-1]


def _processes(nproc: int, steps: int) -> float:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent), *sys.path])}
    env.pop("XLA_FLAGS", None)  # one device per process
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                str(HERE),
                "--process",
                str(i),
                str(nproc),
                port,
                str(steps),
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for i in range(nproc)
    ]
    try:
        outs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    if any(p.returncode for p in procs):
        raise RuntimeError(
            f"a benchmark process failed: {[p.returncode for p in procs]}"
        )
    return float(outs[0].strip().splitlines()[-1])


def run(quick: bool = False) -> list[Result]:
    results = []
    rounds = json.loads(_run_child(["--mesh", "1" if quick else "0"]))
    for batch, r in rounds.items():
        t = Timings(r)
        results.append(
            Result.of(
                f"NumPyro SVI step, 2-device mesh ÷ 1 device (B={batch})",
                t,
                "mesh",
                "one",
                details={"1 device ms": 1e3 * t["one"], "mesh ms": 1e3 * t["mesh"]},
            )
        )
    if not quick:
        samples: dict[str, list[float]] = {"two": [], "one": []}
        for _ in range(3):
            samples["one"].append(_processes(1, 200))
            samples["two"].append(_processes(2, 200))
        t = Timings(samples)
        results.append(
            Result.of(
                "NumPyro SVI step, 2 jax.distributed processes ÷ 1 (B=64)",
                t,
                "two",
                "one",
                details={
                    "1 process ms": 1e3 * t["one"],
                    "2 processes ms": 1e3 * t["two"],
                },
                note="gloo CPU collectives; one launch per round",
            )
        )
    return results


if __name__ == "__main__":
    if sys.argv[1] == "--mesh":
        _child_mesh(bool(int(sys.argv[2])))
    elif sys.argv[1] == "--process":
        _child_process(
            int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
        )
