"""Shared set-up of tests/numpyro/test_distributed.py, and one process of its
two-process ``jax.distributed`` test:
``python _distributed_worker.py PROCESS_ID NUM_PROCESSES PORT OUT.npz``.

As a script it joins the process group on localhost with the gloo CPU collectives,
builds a mesh over the devices of all processes and trains the digits MLP with
``DataParallelSVI``, this process passing only **its own rows** of the training
data; it writes the losses and the final parameters as this process sees them.
"""

from __future__ import annotations

import os
import sys
from functools import partial

if __name__ == "__main__":
    os.environ.pop("XLA_FLAGS", None)  # one CPU device per process

import jax
import numpy as np
import numpyro
from numpyro.infer import SVI, TraceMeanField_ELBO

from ppl_hw.datasets import load_digits
from ppl_hw.numpyro.autoguide import AutoMeanKL
from ppl_hw.numpyro.distributed import DataParallelSVI
from ppl_hw.numpyro.models import mlp_classifier

N, B, HIDDEN, STEPS, SEED = 1344, 64, (16,), 50, 0
model = partial(mlp_classifier, hidden=HIDDEN, batch_size=B)


def digits() -> tuple[np.ndarray, np.ndarray]:
    """The first N (even) training images of the digits split, and their labels."""
    d = load_digits()
    return d.x_train[:N], d.y_train[:N].astype(np.int32)


def make_svi(mesh: jax.sharding.Mesh | None = None, optim: object = None) -> SVI:
    """AutoMeanKL on the digits MLP (minibatches of B drawn by the model's plate);
    with a mesh the data arguments x, y are sharded over its first axis."""
    guide = AutoMeanKL(model, kl_budget_bits=4000, budget_split="equal")
    # eps=1e-3, not Adam's 1e-8: AutoMeanKL's KL is constant by construction, so
    # its gradient is float32 rounding noise (~1e-7), and so is the likelihood
    # gradient of the border pixels that are (almost) always 0; Adam with eps=1e-8
    # turns such noise into full steps of size lr, which makes those coordinates
    # differ between *any* two compilations. With 1e-3 they barely move.
    optim = numpyro.optim.Adam(1e-2, eps=1e-3) if optim is None else optim
    args = (model, guide, optim, TraceMeanField_ELBO())
    if mesh is None:
        return SVI(*args)
    return DataParallelSVI(*args, mesh=mesh, data_argnums=(0, 1))


def train(svi: SVI, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, dict, bool]:
    """STEPS steps from PRNGKey(SEED): the losses, the final parameters and whether
    every parameter is replicated on all devices."""
    r = svi.run(jax.random.PRNGKey(SEED), STEPS, x, y, progress_bar=False)
    replicated = all(
        v.sharding.is_fully_replicated
        and all(
            np.array_equal(s.data, v.addressable_shards[0].data)
            for s in v.addressable_shards
        )
        for v in r.params.values()
    )
    params = {k: np.asarray(v) for k, v in r.params.items()}
    return np.asarray(r.losses), params, replicated


def main() -> None:
    pid, nproc, port, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        f"127.0.0.1:{port}",
        num_processes=nproc,
        process_id=pid,
        initialization_timeout=60,
    )
    mesh = jax.make_mesh(
        (jax.device_count(),), ("data",), axis_types=(jax.sharding.AxisType.Auto,)
    )
    x, y = digits()
    rows = slice(pid * N // nproc, (pid + 1) * N // nproc)
    svi = make_svi(mesh)
    losses, params, replicated = train(svi, x[rows], y[rows])
    np.savez(
        out,
        losses=losses,
        devices=jax.device_count(),
        replicated=replicated,
        **{f"param:{k}": v for k, v in params.items()},
    )
    jax.distributed.shutdown()


if __name__ == "__main__":
    main()
