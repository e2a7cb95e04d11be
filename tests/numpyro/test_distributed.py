"""Data-parallel NumPyro (ppl_hw.numpyro.distributed): SVI and Predictive on a
2-device mesh (the two host devices of tests/conftest.py) and on two processes joined
by ``jax.distributed`` on localhost (gloo CPU collectives), each against the plain
one-device run of the same thing on the same seeds."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro.infer import SVI, Predictive, Trace_ELBO

from ppl_hw.numpyro.distributed import DataParallelSVI, replicate, shard
from ppl_hw.numpyro.models import mlp_classifier

from . import _distributed_worker as w

WORKER = Path(__file__).with_name("_distributed_worker.py")
TIMEOUT = 300  # seconds for the two-process run (a few seconds on a quiet machine)

# Float32 tolerance of a 50-step trajectory. Sharding splits each step's sum over
# the 64-example minibatch into two partial sums and an all-reduce, so the loss and
# the gradient differ from one device's in the last bits (float32 eps 1.2e-7), and
# 50 Adam steps carry that forward. Measured here: relative loss difference 1.7e-7,
# parameters 7e-5 (of values ~1); the bounds leave ~50x and ~10x margin.
LOSS_RTOL = 1e-5
PARAM_ATOL = 1e-3


def _mesh() -> jax.sharding.Mesh:
    assert jax.device_count() >= 2, "tests/conftest.py sets two host devices"
    return jax.make_mesh((2,), ("data",), axis_types=(jax.sharding.AxisType.Auto,))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workers():
    """The two ``jax.distributed`` processes; killed if still running at the end."""
    out = Path(tempfile.mkdtemp(prefix="ppl_hw-dist-"))
    port = str(_free_port())
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(i), "2", port, str(out / f"{i}.npz")],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
        )
        for i in range(2)
    ]
    try:
        yield procs, out
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
            if p.stdout is not None:
                p.stdout.close()
        shutil.rmtree(out, ignore_errors=True)


@pytest.fixture(scope="module")
def reference():
    """The plain one-device SVI run: (svi, losses, params)."""
    x, y = w.digits()
    svi = w.make_svi()
    losses, params, _ = w.train(svi, x, y)
    return svi, losses, params


def _close_to_reference(losses, params, reference) -> None:
    _, ref_losses, ref_params = reference
    assert losses.shape == ref_losses.shape == (w.STEPS,)
    np.testing.assert_allclose(losses, ref_losses, rtol=LOSS_RTOL)
    for k, v in ref_params.items():
        np.testing.assert_allclose(params[k], v, atol=PARAM_ATOL, err_msg=k)


def test_svi_on_a_mesh_equals_one_device(reference):
    """AutoMeanKL on the digits MLP, x and y sharded over 2 devices and the model's
    plate minibatch split over them: the 50 losses and the final parameters are the
    one-device ones, and the parameters come out replicated."""
    x, y = w.digits()
    losses, params, replicated = w.train(w.make_svi(_mesh()), x, y)
    assert replicated
    _close_to_reference(losses, params, reference)


def test_svi_on_two_processes_equals_one_device(workers, reference):
    """The same run on two ``jax.distributed`` processes (one CPU device each, gloo
    collectives), each passing only its half of the rows."""
    procs, out = workers
    logs = []
    for p in procs:
        try:
            log, _ = p.communicate(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            p.kill()
            log, _ = p.communicate()
            pytest.fail(f"jax.distributed worker timed out after {TIMEOUT} s:\n{log}")
        logs.append(log.decode(errors="replace")[-3000:])
        assert p.returncode == 0, f"worker failed:\n{logs[-1]}"
    runs = [np.load(out / f"{i}.npz") for i in range(2)]
    for r in runs:
        assert int(r["devices"]) == 2 and bool(r["replicated"])
        params = {k[6:]: r[k] for k in r.files if k.startswith("param:")}
        _close_to_reference(r["losses"], params, reference)
    # the replicas hold bit-identical parameters and report the same losses
    for k in runs[0].files:
        np.testing.assert_array_equal(runs[0][k], runs[1][k], err_msg=k)


def _regression(x, y=None, *, num_data):
    """Linear regression written for hand-passed minibatches: the plate has the
    full size and the minibatch's size, so the likelihood is scaled by N/B."""
    w_ = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([x.shape[1]]).to_event(1))
    with numpyro.plate("data", num_data, subsample_size=x.shape[0]):
        numpyro.sample("y", dist.Normal(x @ w_, 0.5), obs=y)


def _regression_guide(x, y=None, *, num_data):
    """Mean-field Normal for ``w``, written out (an autoguide's set-up would cost
    seconds of compilation here)."""
    loc = numpyro.param("w_loc", jnp.zeros(x.shape[1]))
    scale = numpyro.param(
        "w_scale", jnp.full(x.shape[1], 0.5), constraint=dist.constraints.positive
    )
    numpyro.sample("w", dist.Normal(loc, scale).to_event(1))


def _regression_data(n=64, d=3):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    return x, (x @ np.array([1.0, -2.0, 0.5], np.float32)).astype(np.float32)


def test_hand_passed_global_minibatch_is_scaled_by_n_over_b():
    """Minibatches of B=16 passed by hand to a plate of size N=64, stepping with a
    jitted ``update``: the losses (scaled by N/B with B the global minibatch, not a
    device's 8) and ``evaluate`` equal one device's."""
    x, y = _regression_data()
    model = partial(_regression, num_data=64)
    guide = partial(_regression_guide, num_data=64)
    runs = []
    for mesh in (None, _mesh()):
        opt = numpyro.optim.Adam(0.05)
        if mesh is None:
            svi = SVI(model, guide, opt, Trace_ELBO())
        else:
            svi = DataParallelSVI(
                model,
                guide,
                opt,
                Trace_ELBO(),
                mesh=mesh,
                data_argnums=0,
                data_argnames="y",
            )
        state = svi.init(jax.random.PRNGKey(1), x[:16], y=y[:16])
        update = jax.jit(svi.update)
        losses = []
        for i in range(8):
            rows = slice(16 * (i % 4), 16 * (i % 4 + 1))
            state, loss = update(state, x[rows], y=y[rows])
            losses.append(float(loss))
        losses.append(float(svi.evaluate(state, x[:16], y=y[:16])))
        runs.append((np.array(losses), svi.get_params(state)))
    np.testing.assert_allclose(runs[1][0], runs[0][0], rtol=1e-5)
    for k, v in runs[0][1].items():
        assert runs[1][1][k].sharding.is_fully_replicated
        np.testing.assert_allclose(runs[1][1][k], v, rtol=1e-5, atol=1e-6)


def test_predictive_with_sharded_samples_or_inputs_equals_unsharded(reference):
    """Predictive of the trained digits MLP on the 450 test images, the recipe of
    the module docs: posterior samples sharded (a jitted call whose outputs are
    constrained to the sample axis with ``shard``), or test inputs sharded (samples
    replicated, eager): the unsharded logits and the same sampled labels."""
    svi, _, params = reference
    x_test = w.load_digits().x_test  # 450 rows
    samples = Predictive(svi.guide, params=params, num_samples=8)(
        jax.random.PRNGKey(2), x_test
    )
    model = partial(mlp_classifier, hidden=w.HIDDEN)
    key = jax.random.PRNGKey(3)

    def predict(key, samples, x):
        pred = Predictive(
            model, posterior_samples=samples, return_sites=["logits", "y"]
        )
        return pred(key, x)

    want = predict(key, samples, x_test)
    mesh = _mesh()
    by_sample = jax.jit(lambda k, s, x: shard(mesh, predict(k, s, x)))
    for got, spec in (
        (by_sample(key, shard(mesh, samples), replicate(mesh, x_test)), ("data",)),
        (predict(key, replicate(mesh, samples), shard(mesh, x_test)), (None, "data")),
    ):
        for site in ("logits", "y"):
            assert tuple(got[site].sharding.spec)[:2] == spec  # the work was split
        np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got["y"], want["y"])


def test_bad_inputs_raise_before_any_work():
    mesh = _mesh()
    x, y = _regression_data()
    model = partial(_regression, num_data=64)
    guide = partial(_regression_guide, num_data=64)
    opt = numpyro.optim.Adam(0.05)
    svi = DataParallelSVI(
        model, guide, opt, Trace_ELBO(), mesh=mesh, data_argnums=(0, 1)
    )
    with pytest.raises(ValueError, match=r"argument 0 has 15 examples .* 2 devices"):
        svi.init(jax.random.PRNGKey(0), x[:15], y[:15])
    with pytest.raises(ValueError, match=r"argument 'y' has 15 .* 'data'"):
        DataParallelSVI(
            model,
            guide,
            opt,
            Trace_ELBO(),
            mesh=mesh,
            data_argnums=0,
            data_argnames="y",
        ).init(jax.random.PRNGKey(0), x[:16], y=y[:15])
    full = partial(_regression, num_data=16)  # no subsampled plate, no data named
    with pytest.raises(ValueError, match="nothing to shard"):
        DataParallelSVI(full, guide, opt, Trace_ELBO(), mesh=mesh).init(
            jax.random.PRNGKey(0), x[:16], y[:16]
        )
    # the model's own minibatch (its plate's indices) must split evenly too
    with pytest.raises(ValueError, match=r"subsampled plate 'data'.* 15 examples"):
        DataParallelSVI(model, guide, opt, Trace_ELBO(), mesh=mesh).init(
            jax.random.PRNGKey(0), x[:15], y[:15]
        )
    with pytest.raises(ValueError, match=r"mesh_axis must be one of .*'model'"):
        DataParallelSVI(model, guide, opt, Trace_ELBO(), mesh=mesh, mesh_axis="model")
    with pytest.raises(TypeError, match=r"mesh must be a jax\.sharding\.Mesh"):
        DataParallelSVI(model, guide, opt, Trace_ELBO(), mesh=jax.devices())
    with pytest.raises(TypeError, match="data_argnums"):
        DataParallelSVI(model, guide, opt, Trace_ELBO(), mesh=mesh, data_argnums="x")
    with pytest.raises(ValueError, match=r"tree\['a'\] has 3 examples"):
        shard(mesh, {"a": np.zeros(3)})
    with pytest.raises(ValueError, match="leading"):
        shard(mesh, np.float32(1.0))
    with pytest.raises(TypeError, match="mesh must be"):
        replicate("data", x)
