"""Pyro ``Predictive`` under the crossbar handler does its per-chip work once per chip:
the chip's NumPy draws become tensors once per chip and site, and the core's weight
and converter functions are recorded once per kind of site / product
(``torch.jit.trace``) and replayed at every sample — with values equal, bit for bit,
to the eager core on the same seed, and the cache invalidated by a re-seeded chip or
a new read time."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pyro
import pytest
import torch
from pyro.infer import Predictive

from ppl_hw import devices
from ppl_hw.common import handlers as cc
from ppl_hw.core import crossbar as cx
from ppl_hw.pyro import handlers as H
from ppl_hw.pyro.models import mlp_classifier

N_IN, HIDDEN, BATCH = 12, (8,), 7
MODEL = functools.partial(mlp_classifier, hidden=HIDDEN, num_classes=3)
SITES = ("w0", "b0", "w1", "b1")


def _samples(num_samples: int, dtype=torch.float32) -> dict:
    g = np.random.default_rng(0)
    sizes = [N_IN, *HIDDEN, 3]
    out = {}
    for i, (a, b) in enumerate(itertools.pairwise(sizes)):
        out[f"w{i}"] = torch.as_tensor(g.standard_normal((num_samples, a, b)) / a**0.5)
        out[f"b{i}"] = torch.as_tensor(0.1 * g.standard_normal((num_samples, b)))
    return {k: v.to(dtype) for k, v in out.items()}


def _x(dtype=torch.float32) -> torch.Tensor:
    g = np.random.default_rng(1)
    return torch.as_tensor(g.standard_normal((BATCH, N_IN))).to(dtype)


def _predict(chip, samples, x, rng_seed=3, sites=("logits",)):
    pyro.set_rng_seed(rng_seed)
    with torch.no_grad():
        return Predictive(chip, posterior_samples=samples, return_sites=list(sites))(x)


DEVICES = {
    "PCM": devices.PCM(),
    "PCM tiles 5x5": devices.PCM(max_input_size=5, max_output_size=5),
    "PCM weights only": devices.PCM(dac_bits=None, adc_bits=None, out_noise=0.0),
    "PCM column, IR drop": devices.PCM(mapping="column", ir_drop=1.0),
    "RRAM": devices.RRAM(),
    "MTJ binarize": devices.MTJ(binarize=True),
}


def _eager(monkeypatch):
    monkeypatch.setattr(H, "_traceable", lambda args: False)


@pytest.mark.parametrize("name", list(DEVICES))
def test_cached_path_equals_the_eager_core_bit_for_bit(name, monkeypatch):
    device = DEVICES[name]
    samples, x = _samples(6), _x()
    record = [f"{s}_chip" for s in SITES]
    fast = H.crossbar(MODEL, device=device, t_inference=3600.0, seed=2, record=True)
    a = _predict(fast, samples, x, sites=("logits", *record))
    assert len(fast.handler._traced) > 0  # the recorded programs were used
    with monkeypatch.context() as m:
        _eager(m)
        slow = H.crossbar(MODEL, device=device, t_inference=3600.0, seed=2, record=True)
        b = _predict(slow, samples, x, sites=("logits", *record))
    assert len(slow.handler._traced) == 0
    for k in a:
        assert a[k].dtype == torch.float32, k
        assert torch.equal(a[k], b[k]), k


def test_the_random_stream_is_that_of_the_eager_path(monkeypatch):
    samples, x = _samples(4), _x()
    fast = H.crossbar(MODEL, device=devices.PCM(), t_inference=60.0)
    _predict(fast, samples, x)
    after_fast = torch.randn(5)
    with monkeypatch.context() as m:
        _eager(m)
        _predict(H.crossbar(MODEL, device=devices.PCM(), t_inference=60.0), samples, x)
        after_slow = torch.randn(5)
    assert torch.equal(after_fast, after_slow)


def test_float64_stays_float64_and_equals_eager(monkeypatch):
    samples, x = _samples(3, torch.float64), _x(torch.float64)
    fast = H.crossbar(MODEL, device=devices.PCM(), t_inference=60.0)
    a = _predict(fast, samples, x)["logits"]
    with monkeypatch.context() as m:
        _eager(m)
        slow = H.crossbar(MODEL, device=devices.PCM(), t_inference=60.0)
        b = _predict(slow, samples, x)["logits"]
    assert a.dtype == torch.float64 and torch.equal(a, b)


def _counting(monkeypatch, module, name):
    calls = []
    orig = getattr(module, name)

    def spy(*args, **kwargs):
        calls.append(name)
        return orig(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)
    return calls


@pytest.mark.parametrize("num_samples", [3, 12])
def test_per_chip_work_runs_once_per_chip_not_per_sample(num_samples, monkeypatch):
    monkeypatch.setattr(H, "_PROGRAMS", H._Programs())  # nothing recorded yet
    numpy_draws = _counting(monkeypatch, cc, "chip_draws_numpy")
    weights = _counting(monkeypatch, cx, "crossbar_weights")
    matvec = _counting(monkeypatch, cx, "analog_matvec")
    chip = H.crossbar(MODEL, device=devices.PCM(), t_inference=86_400.0)
    samples, x = _samples(num_samples), _x()
    _predict(chip, samples, x)
    cache = dict(chip.handler._chip_cache)
    _predict(chip, samples, x)  # a second call: nothing new
    # one NumPy draw and one conversion per site (the chip), whatever the samples
    assert len(numpy_draws) == len(SITES)
    assert len(cache) == len(SITES)
    assert all(chip.handler._chip_cache[k] is v for k, v in cache.items())
    for draws in cache.values():
        assert all(v.dtype == torch.float32 for v in draws.values())
    # the core runs only to record, and once more to check the recording: one
    # weight program per site shape (w0, b0, w1, b1 all differ), one converter
    # program per product shape (two layers)
    assert len(weights) == 2 * len(SITES)
    assert len(matvec) == 2 * 2
    assert chip.applications["w0"] >= 2 * num_samples  # every sample was programmed


def test_chips_of_other_seeds_replay_the_same_recordings(monkeypatch):
    monkeypatch.setattr(H, "_PROGRAMS", H._Programs())
    samples, x = _samples(3), _x()
    _predict(H.crossbar(MODEL, device=devices.PCM(), t_inference=60.0), samples, x)
    weights = _counting(monkeypatch, cx, "crossbar_weights")
    matvec = _counting(monkeypatch, cx, "analog_matvec")
    other = H.crossbar(MODEL, device=devices.PCM(), t_inference=60.0, seed=5)
    _predict(other, samples, x)
    assert not weights and not matvec  # a deployment sweep's chips record nothing
    assert len(other.handler._traced) == len(SITES) + 2
    # a new read time is a new recording (the drift factor is one of its constants)
    _predict(H.crossbar(MODEL, device=devices.PCM(), t_inference=61.0), samples, x)
    assert len(weights) == 2 * len(SITES) and not matvec  # recorded and checked


def test_a_reseeded_chip_or_a_new_read_time_invalidates_the_cache():
    samples, x = _samples(5), _x()
    chip = H.crossbar(MODEL, device=devices.PCM(), t_inference=60.0, seed=0)
    before = _predict(chip, samples, x)["logits"]
    old = {k: v["prog"] for k, v in chip.handler._chip_cache.items()}

    chip.handler.spec.seed = 7
    got = _predict(chip, samples, x)["logits"]
    fresh = H.crossbar(MODEL, device=devices.PCM(), t_inference=60.0, seed=7)
    assert torch.equal(got, _predict(fresh, samples, x)["logits"])
    assert not torch.equal(got, before)
    assert all(
        not torch.equal(chip.handler._chip_cache[k]["prog"], v) for k, v in old.items()
    )

    chip.handler.spec.t_inference = 31_536_000.0
    got = _predict(chip, samples, x)["logits"]
    fresh = H.crossbar(MODEL, device=devices.PCM(), t_inference=31_536_000.0, seed=7)
    assert torch.equal(got, _predict(fresh, samples, x)["logits"])

    chip.handler.spec.seed = 0
    chip.handler.spec.t_inference = 60.0
    assert torch.equal(_predict(chip, samples, x)["logits"], before)


def test_gradients_take_the_eager_path_and_flow():
    x = _x()
    samples = {k: v[0].clone().requires_grad_(True) for k, v in _samples(1).items()}
    chip = H.crossbar(
        pyro.poutine.condition(MODEL, data=samples),
        device=devices.PCM(),
        t_inference=60.0,
        reprogram="per_sample",
    )
    tr = pyro.poutine.trace(chip).get_trace(x)
    tr.nodes["logits"]["value"].sum().backward()
    assert samples["w0"].grad is not None and torch.isfinite(samples["w0"].grad).all()
    assert len(chip.handler._traced) == 0  # nothing recorded for a differentiated call


def test_reprogram_per_sample_replays_with_fresh_chip_draws(monkeypatch):
    samples, x = _samples(4), _x()
    fast = H.crossbar(
        MODEL, device=devices.PCM(), t_inference=60.0, reprogram="per_sample"
    )
    a = _predict(fast, samples, x)["logits"]
    with monkeypatch.context() as m:
        _eager(m)
        slow = H.crossbar(
            MODEL, device=devices.PCM(), t_inference=60.0, reprogram="per_sample"
        )
        b = _predict(slow, samples, x)["logits"]
    assert torch.equal(a, b)
    assert not fast.handler._chip_cache  # no per-chip draws to keep


def test_a_recording_that_fails_or_differs_falls_back_to_the_eager_core(monkeypatch):
    monkeypatch.setattr(H, "_PROGRAMS", H._Programs())
    samples, x = _samples(3), _x()
    with monkeypatch.context() as m:
        _eager(m)
        want = _predict(H.crossbar(MODEL, device=devices.PCM()), samples, x)["logits"]

    def wrong(fn, args, check_trace=False):
        return lambda *a: fn(*a) + 1.0  # not what the core computes

    monkeypatch.setattr(torch.jit, "trace", wrong)
    chip = H.crossbar(MODEL, device=devices.PCM())
    assert torch.equal(_predict(chip, samples, x)["logits"], want)
    assert all(H._PROGRAMS.get(k) is H._EAGER for k in chip.handler._traced)

    def broken(fn, args, check_trace=False):
        raise RuntimeError("cannot record")

    monkeypatch.setattr(H, "_PROGRAMS", H._Programs())
    monkeypatch.setattr(torch.jit, "trace", broken)
    chip = H.crossbar(MODEL, device=devices.PCM())
    assert torch.equal(_predict(chip, samples, x)["logits"], want)
