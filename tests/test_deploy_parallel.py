"""The deployment sweep in parallel, on both backends: the table (every column but
``seconds``, the predictives bit for bit, the settings) of a sweep over 8 chips × 3
read times is the serial one on a pool of two spawned processes and as two shards
merged by ``DeploymentSweep.concat``; bad ``shard`` and ``executor`` arguments (a
thread pool, a pool that forks, an unpicklable model) are refused before any work.

The reference of every comparison is the serial sweep (``executor=None``,
``shard=None``) in this process. The models are module-level functions: the spawned
workers import them from this module."""

import concurrent.futures as cf
import functools
import multiprocessing
import threading

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import pytest
import torch

import ppl_hw.numpyro.nn as nnn
import ppl_hw.pyro.nn as pnn
from ppl_hw import devices
from ppl_hw.common.deploy import DeploymentSweep
from ppl_hw.numpyro.deploy import deployment_sweep as nsweep
from ppl_hw.pyro.deploy import deployment_sweep as psweep

BACKENDS = [
    pytest.param("numpyro", marks=pytest.mark.numpyro),
    pytest.param("pyro", marks=pytest.mark.pyro),
]
RNG = np.random.default_rng(1)
X = RNG.normal(size=(12, 4)).astype(np.float32)
W = RNG.normal(size=(4, 3)).astype(np.float32)
Y = np.argmax(X @ W + RNG.normal(size=(12, 3)), axis=-1)
KW = dict(
    device=devices.PCM(),
    times=[1.0, 3600.0, 31_536_000.0],
    chips=8,
    num_samples=3,
    seed=11,
    rng_seed=5,
    keep_predictions=True,
)
TIMEOUT = 120.0  # seconds a cell may take before the test fails instead of hanging


def nmodel(x, y=None):
    w = numpyro.sample("w", ndist.Normal(0.0, 1.0).expand([4, 3]).to_event(2))
    with numpyro.plate("data", x.shape[0]):
        logits = numpyro.deterministic("logits", nnn.dense(x, w))
        numpyro.sample("y", ndist.Categorical(logits=logits), obs=y)


def pmodel(x, y=None):
    w = pyro.sample("w", pdist.Normal(0.0, 1.0).expand([4, 3]).to_event(2))
    with pyro.plate("data", x.shape[0]):
        logits = pyro.deterministic("logits", pnn.dense(x, w))
        pyro.sample("y", pdist.Categorical(logits=logits), obs=y)


def nguide(x, y=None):
    loc = numpyro.param("loc", jnp.zeros(W.shape))
    numpyro.sample("w", ndist.Normal(loc, 0.5).to_event(2))


def pguide(x, y=None):
    loc = pyro.param("loc", torch.zeros(W.shape))
    pyro.sample("w", pdist.Normal(loc, 0.5).to_event(2))


def sweep(backend, **kw):
    kw = KW | kw
    if backend == "numpyro":
        return nsweep(nmodel, nguide, X, Y, params={"loc": jnp.asarray(W)}, **kw)
    pyro.get_param_store().clear()
    pyro.param("loc", torch.as_tensor(W))
    return psweep(pmodel, pguide, X, Y, **kw)


class Timed:
    """An executor forwarding to ``inner`` with a timeout on every result, so that
    nothing can hang."""

    def __init__(self, inner):
        self.inner = inner

    def submit(self, fn, *args):
        return _TimedFuture(self.inner.submit(fn, *args))


class _TimedFuture:
    def __init__(self, future):
        self.future = future

    def result(self):
        return self.future.result(timeout=TIMEOUT)

    def cancel(self):
        return self.future.cancel()


@pytest.fixture(scope="module")
def pool():
    """Two worker processes started once for the module ("spawn": with JAX or
    torch loaded here, a forked child hangs)."""
    inner = cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    try:
        # the workers start (and import this module, so JAX, NumPyro, torch and
        # Pyro) while this process computes the serial reference
        for _ in range(2):
            inner.submit(int)
        yield Timed(inner)
    finally:
        procs = list((inner._processes or {}).values())
        inner.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()


@pytest.fixture(scope="module")
def serial():
    """The reference: each backend's serial sweep."""
    return {}


def reference(serial, backend):
    if backend not in serial:
        serial[backend] = sweep(backend)
    return serial[backend]


def assert_same_table(a, b):
    assert len(a.rows) == len(b.rows) == 1 + 3 * 8
    for ra, rb in zip(a.rows, b.rows, strict=True):
        assert set(ra) == set(rb)
        assert {k: v for k, v in ra.items() if k != "seconds"} == {
            k: v for k, v in rb.items() if k != "seconds"
        }
    for pa, pb in zip(a.predictions, b.predictions, strict=True):
        assert pa.dtype == pb.dtype and pa.shape == pb.shape
        assert pa.tobytes() == pb.tobytes()  # bit for bit
    assert a.settings == b.settings


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_processes_give_the_serial_table(backend, pool, serial):
    ref = reference(serial, backend)
    # the chips differ: the table would not catch a worker repeating one chip
    assert len({p.tobytes() for p in ref.predictions}) == len(ref.predictions)
    assert_same_table(sweep(backend, executor=pool), ref)


@pytest.mark.parametrize("backend", BACKENDS)
def test_shards_merged_give_the_serial_table(backend, pool, serial):
    ref = reference(serial, backend)
    # in any order; a shard may use a pool itself
    shards = [sweep(backend, shard=(1, 2)), sweep(backend, shard=(0, 2), executor=pool)]
    assert [len(s) for s in shards] == [13, 12]
    assert shards[0].settings[0]["shard"] == [1, 2]
    assert_same_table(DeploymentSweep.concat(shards), ref)
    # a shard recomputes exactly the serial rows of its block
    for a, b in zip(shards[1].rows, ref.rows[:12], strict=True):
        assert a["read_seed"] == b["read_seed"] and a["nll"] == b["nll"]
    # an incomplete set of shards is left as it is
    lone = DeploymentSweep.concat(shards[:1])
    assert lone.rows == shards[0].rows and lone.settings == shards[0].settings


def test_shards_of_two_methods_merge_each_in_place():
    order = [("a", 1), ("b", 0), ("a", 0), ("b", 1)]
    sweeps = [
        DeploymentSweep(
            [dict(label=k, t=None, chip=j, accuracy=0.5, nll=1.0, ece=0.1)],
            settings=[dict(label=k, shard=[j, 2])],
        )
        for k, j in order
    ]
    merged = DeploymentSweep.concat(sweeps)
    assert [(r["label"], r["chip"]) for r in merged.rows] == sorted(order)
    assert merged.settings == [dict(label="a"), dict(label="b")]


def _with_lock(model, x, y=None, lock=None):
    with lock:
        return model(x, y)


# models holding a lock: not picklable
_locked = functools.partial(_with_lock, nmodel, lock=threading.Lock())
_plocked = functools.partial(_with_lock, pmodel, lock=threading.Lock())


def _guide_must_not_run(x, y=None):
    raise AssertionError("the guide ran")


BAD = [
    (dict(shard=(2, 2)), ValueError, r"shard must be \(index, count\) with 0 <= in"),
    (dict(shard=(-1, 2)), ValueError, r"0 <= index < count, got \(-1, 2\)"),
    (dict(shard=(0, 0)), ValueError, r"0 <= index < count, got \(0, 0\)"),
    (dict(shard=(0, 26)), ValueError, r"at most the sweep's 25 cells.*\(0, 26\)"),
    (dict(shard=(0, 2.0)), TypeError, "shard must be None or a pair of ints"),
    (dict(shard=(True, 2)), TypeError, "shard must be None or a pair of ints"),
    (dict(shard=(0, 1, 2)), TypeError, "shard must be None or a pair of ints"),
    (dict(shard="0/2"), TypeError, r"pair of ints \(index, count\), got '0/2'"),
    (dict(executor=2), TypeError, "executor must be None or a concurrent.futures"),
    (dict(executor="threads"), ValueError, "got a ThreadPoolExecutor"),
    (dict(executor="fork"), ValueError, "ProcessPoolExecutor that forks"),
    (dict(executor="spawn", model=_locked), TypeError, "must be picklable"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("change", "error", "match"), BAD)
def test_bad_arguments_raise_before_any_work(backend, change, error, match):
    change = dict(change)
    kinds = {
        "threads": lambda: cf.ThreadPoolExecutor(1),
        "fork": lambda: cf.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("fork")
        ),
        "spawn": lambda: cf.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")
        ),
    }
    executor = change.get("executor")
    if isinstance(executor, str):
        executor = change["executor"] = kinds[executor]()  # no process starts
    model = change.pop("model", nmodel if backend == "numpyro" else pmodel)
    if backend == "pyro" and model is _locked:
        model = _plocked
    fn = nsweep if backend == "numpyro" else psweep
    try:
        with pytest.raises(error, match=match):
            fn(model, _guide_must_not_run, X, Y, **(KW | change))
    finally:
        if executor is not None and not isinstance(executor, int):
            executor.shutdown(wait=True)
