"""MIRACLE coding on a ``concurrent.futures`` executor: the file is byte for byte the
serial one whatever the executor (processes, threads), its number of workers, the
number of tasks and the order they run in; the workers load no JAX or PyTorch;
bad executors are refused; ``finetune`` stays sequential and says so.

The reference of every comparison is the serial encoder (``executor=None``)."""

import concurrent.futures as cf
import functools
import multiprocessing
import warnings

import numpy as np
import pyro
import pytest
import torch

from ppl_hw import coding
from ppl_hw.core import coding as cc
from ppl_hw.datasets import load_digits
from ppl_hw.pyro import models as pm

DATA = load_digits()
X, Y = DATA.x_train[:50], DATA.y_train[:50]
HIDDEN = (8,)  # 610 weights
BLOCKS = dict(budget_split="blocks", bits_per_block=8, block_seed=5)
TIMEOUT = 120.0  # seconds a task may take before the test fails instead of hanging


class Timed:
    """An executor that only has ``submit`` (the duck type ``encode`` asks for),
    forwarding to ``inner`` with a timeout on every result so nothing can hang."""

    def __init__(self, inner):
        self.inner, self.submitted = inner, 0

    def submit(self, fn, *args):
        self.submitted += 1
        return _TimedFuture(self.inner.submit(fn, *args))


class _TimedFuture:
    def __init__(self, future):
        self.future = future

    def result(self):
        return self.future.result(timeout=TIMEOUT)

    def cancel(self):
        return self.future.cancel()


@pytest.fixture(scope="module")
def processes():
    """Two worker processes started once for the module ("spawn": a fresh
    interpreter, as with JAX loaded in the parent it must be)."""
    pool = cf.ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    try:
        yield pool
    finally:
        procs = list((pool._processes or {}).values())
        pool.shutdown(wait=False, cancel_futures=True)
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()


@pytest.fixture(scope="module")
def threads():
    pools = {n: cf.ThreadPoolExecutor(n) for n in (1, 3)}
    yield pools
    for pool in pools.values():
        pool.shutdown(wait=True, cancel_futures=True)


@functools.cache  # one guide per kind for the module
def _pyro_guide(kind):
    from pyro.infer.autoguide import AutoNormal

    from ppl_hw.pyro.autoguide import AutoMeanKL

    def model(x, y=None):
        return pm.mlp_classifier(x, y, hidden=HIDDEN)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = (
        AutoNormal(model)
        if kind == "autonormal"
        else AutoMeanKL(
            model, kl_budget_bits=2000, **(BLOCKS if kind == "blocks" else {})
        )
    )
    guide(torch.as_tensor(X), torch.as_tensor(Y))
    return guide, dict(pyro.get_param_store().items())


# (guide, encode's options): both selections, the fast scorer (13 bits: blocks of
# >= 2**13 candidate normals) and the exact one (8 bits), a blocks-split guide. Pyro
# guides: the coder is the same for both backends once it has read the guide's
# means and scales (tests/test_coding.py: NumPyro and Pyro code the same bits), and a
# NumPyro guide's set-up costs ~14 s of compilation this module does not need
CASES = {
    "autonormal-13bit-sample": ("autonormal", dict(bits_per_block=13, seed=3)),
    "autonormal-13bit-argmax": (
        "autonormal",
        dict(bits_per_block=13, seed=3, selection="argmax"),
    ),
    "meankl-8bit-argmax": (
        "meankl",
        dict(bits_per_block=8, seed=1, selection="argmax"),
    ),
    "blocks-sample": ("blocks", {}),
    "blocks-argmax": ("blocks", dict(selection="argmax")),
}


@pytest.mark.parametrize("case", list(CASES))
def test_the_file_is_the_serial_one_on_any_executor(case, processes, threads):
    kind, opts = CASES[case]
    guide, params = _pyro_guide(kind)
    serial = coding.encode(guide, params, **opts)
    reference = serial._to_bytes()
    if kind == "blocks":  # the guide's own blocks
        assert serial.num_blocks == 250
    on_processes = Timed(processes)
    runs = {
        "2 processes": dict(executor=on_processes),
        "2 processes, a block per task": dict(
            executor=on_processes, chunks=serial.num_blocks
        ),
        "3 threads, 7 tasks": dict(executor=Timed(threads[3]), chunks=7),
        "1 thread": dict(executor=Timed(threads[1])),
        "no executor, 5 tasks": dict(chunks=5),
    }
    for name, run in runs.items():
        got = coding.encode(guide, params, **opts, **run)
        assert got._to_bytes() == reference, name
    # tasks went to the processes: 64 by default (fewer blocks: one each), then
    # one per block
    expected = min(64, serial.num_blocks) + serial.num_blocks
    assert on_processes.submitted == expected


def test_the_workers_load_numpy_level_code_only(processes):
    guide, params = _pyro_guide("meankl")
    coding.encode(guide, params, bits_per_block=8, executor=processes)
    probe = (
        "sorted(m for m in ('jax', 'torch', 'numpyro', 'pyro', 'ppl_hw.core.coding')"
        " if m in __import__('sys').modules)"
    )
    for _ in range(4):
        assert processes.submit(eval, probe).result(timeout=TIMEOUT) == [
            "ppl_hw.core.coding"
        ]


def _random_case(n, num_blocks, bits, seed):
    rng = np.random.default_rng(seed)
    mu = rng.normal(0.0, 1.1, n)
    sigma = 0.25 * np.exp(rng.normal(0, 0.2, n))
    nu = rng.normal(0, 0.1, n).astype(np.float32)
    rho = np.exp(rng.normal(0, 0.2, n)).astype(np.float32)
    return mu, sigma, nu, rho, cc.make_blocks([n], bits, seed, num_blocks=num_blocks)


def _reversed_map(fn, tasks):
    """Runs the last task first, returns the results in the tasks' order."""
    tasks = list(tasks)
    return [fn(t) for t in tasks[::-1]][::-1]


@pytest.mark.parametrize("selection", ["sample", "argmax"])
@pytest.mark.parametrize("scorer", ["fast", "exact"])
def test_any_cut_of_the_blocks_codes_the_same(selection, scorer):
    mu, sigma, nu, rho, blocks = _random_case(46, 6, 14, 7)
    args = (mu, sigma, nu, rho, blocks, 14, 7)
    opts = dict(selection=selection, scorer=scorer)
    ref_idx, ref_w = cc.encode_blocks(*args, **opts)
    for chunks in (2, 4, 6, 50):
        for how in (map, _reversed_map):
            idx, w = cc.encode_blocks(*args, **opts, map=how, chunks=chunks)
            np.testing.assert_array_equal(idx, ref_idx)
            np.testing.assert_array_equal(w.view(np.uint32), ref_w.view(np.uint32))
    # a task carries its own blocks' parameters only
    tasks = cc.range_tasks(*args, chunks=4, **opts)
    assert [t.first for t in tasks] == [0, 1, 3, 4]
    assert sum(t.mu.size for t in tasks) == 46
    assert tasks[1].mu.size == tasks[1].bounds[-1] - tasks[1].bounds[0]
    with pytest.raises(ValueError, match="chunks must be an int >= 1, got 0"):
        cc.encode_blocks(*args, chunks=0)
    with pytest.raises(ValueError, match="map returned 1 results for 2 tasks"):
        cc.encode_blocks(*args, chunks=2, map=lambda fn, ts: [fn(next(iter(ts)))])
    with pytest.raises(ValueError, match="finetune runs between blocks"):
        cc.encode_blocks(*args, chunks=2, finetune=lambda b, c, w: None)


def test_bad_executor_and_chunks_are_refused_before_any_work():
    guide, params = _pyro_guide("meankl")
    for bad in (object(), 2, "processes", cf.ThreadPoolExecutor):
        with pytest.raises(TypeError, match="executor must be None or a concurrent"):
            coding.encode(guide, params, executor=bad)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="chunks must be None or an int >= 1"):
            coding.encode(guide, params, chunks=bad)


def test_a_failing_task_cancels_the_rest_and_raises():
    guide, params = _pyro_guide("meankl")

    class Failing:
        def __init__(self):
            self.futures = []

        def submit(self, fn, task):
            f = cf.Future()
            if not self.futures:
                f.set_exception(RuntimeError("worker lost"))
            self.futures.append(f)
            return f

    ex = Failing()
    with pytest.raises(RuntimeError, match="worker lost"):
        coding.encode(guide, params, bits_per_block=8, executor=ex)
    assert len(ex.futures) == 64 and all(f.cancelled() for f in ex.futures[1:])


def test_finetune_stays_sequential_and_says_so(threads):
    guide, params = _pyro_guide("autonormal")
    calls = []

    def finetune(block, fixed):
        calls.append(block)
        return None if block % 2 else params

    serial = coding.encode(guide, params, bits_per_block=12, finetune=finetune)
    assert calls == list(range(1, serial.num_blocks))
    calls.clear()
    ex = Timed(threads[3])
    with pytest.warns(UserWarning, match="coded one by one in this process"):
        got = coding.encode(
            guide, params, bits_per_block=12, finetune=finetune, executor=ex
        )
    assert ex.submitted == 0 and calls == list(range(1, serial.num_blocks))
    assert got._to_bytes() == serial._to_bytes()
    # without finetune, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        coding.encode(guide, params, bits_per_block=12, executor=ex)


@pytest.mark.parametrize("path", [0, 1, True, b"model.phw", 3.5])
def test_save_and_load_refuse_a_path_that_is_not_a_file_name(path, tmp_path):
    """An int is a file descriptor to ``open``: ``load(0)`` blocked on stdin and
    ``save(1)`` wrote to stdout and closed it (issue "Nothing silent")."""
    from ppl_hw.coding import CompressedModel

    with pytest.raises(TypeError, match=r"path must be a file name .*got"):
        CompressedModel.load(path)
    with pytest.raises(ValueError, match=r"path '.*none.phw' is not an existing file"):
        CompressedModel.load(tmp_path / "none.phw")


def test_save_refuses_a_file_descriptor(tmp_path):
    from ppl_hw.coding import CompressedModel, encode

    guide, params = _pyro_guide("autonormal")
    compressed = encode(guide, params, bits_per_block=8)
    with pytest.raises(TypeError, match=r"path must be a file name .*got 1"):
        compressed.save(1)
    compressed.save(tmp_path / "m.phw")  # a file name still works
    assert CompressedModel.load(tmp_path / "m.phw").indices.tolist() == (
        compressed.indices.tolist()
    )
