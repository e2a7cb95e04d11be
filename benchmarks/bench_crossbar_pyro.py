"""Pyro ``Predictive`` under the crossbar handler against its floor and against aihwkit.

Setting: ``mlp_classifier`` (tanh, ``ppl_hw.pyro.nn.dense`` layers) with random
posterior samples given as ``posterior_samples`` (weights ~ N(0, 1/fan_in); the
figure is a speed), one torch intra-op thread, every candidate timed interleaved in
one process (:func:`_timing.compare`), each ratio with the range of its per-round
ratios. Candidates:

- ``clean``: ``Predictive`` of the model without the handler;
- ``floor``: the clean model, each run also drawing **the standard normals and
  uniforms the handler draws** at a run, same counts and shapes, from torch's
  generator (recorded from one run of the handler: read noise per weight site, output
  noise per routed product; the per-chip draws come from NumPy once per chip and are
  not part of a run);
- ``weights``: under ``crossbar`` with weight effects only
  (``PCM(dac_bits=None, adc_bits=None, out_noise=0.0)``);
- ``full``: under ``crossbar(PCM())``, every effect on.

Rows: ``(full − clean) ÷ (floor − clean)`` (goal ≤ 1.2: the handler may add at most
1.2 × the draws it cannot avoid), the converters' share ``(full − weights) ÷ (full −
clean)``, weights ÷ clean and full ÷ clean; Pyro ÷ IBM aihwkit doing the same reads
(goal ≤ 1.2; skipped, saying so, when aihwkit is not installed — its 1.2 wheels need
Python ≥ 3.12); and the scaling of the floor ratio and of full ÷ clean with the
hidden width (64, 256, 1 024) and the number of inputs (450, 10 000), with fewer
posterior samples for the large settings (given in each row).
"""

from __future__ import annotations

import functools
import importlib.util
import itertools
from collections import Counter

from _timing import Result, Timings, compare

T_INFERENCE = 86_400.0
N_IN = 64  # the digits' features
# (hidden, inputs, posterior samples); the first is the digits MLP of the issue
SIZES = [
    (64, 450, 100),
    (64, 10_000, 10),
    (256, 450, 40),
    (256, 10_000, 4),
    (1024, 450, 10),
    (1024, 10_000, 2),
]
QUICK_SIZES = [(8, 20, 3)]
AIHWKIT_SKIPPED = (
    "aihwkit is not installed: the Pyro ÷ aihwkit row is skipped (aihwkit 1.2 has "
    "wheels for Python ≥ 3.12 only, built against PyPI's CUDA torch)"
)


def run(quick: bool = False) -> list[Result]:
    import torch

    threads = torch.get_num_threads()
    # one intra-op thread (as bench_pfp): on two shared cores a second thread makes
    # eager ops wait for a core
    torch.set_num_threads(1)
    try:
        sizes = QUICK_SIZES if quick else SIZES
        results = _main_rows(*sizes[0], quick)
        row = _aihwkit_row(*sizes[0], quick)
        if row is None:
            print(f"bench_crossbar_pyro: {AIHWKIT_SKIPPED}")
            results[-1].note = "; ".join(
                x for x in (results[-1].note, AIHWKIT_SKIPPED) if x
            )
        else:
            results.append(row)
        for size in sizes[1:]:
            results += _scaling_rows(*size)
        return results
    finally:
        torch.set_num_threads(threads)


# -- setup ------------------------------------------------------------------------


def _model(hidden: int):
    from ppl_hw.pyro.models import mlp_classifier

    return functools.partial(mlp_classifier, hidden=(hidden,), num_classes=10)


def _samples(hidden: int, num_samples: int) -> dict:
    """Random posterior samples (float32 tensors), weights ~ N(0, 1/fan_in)."""
    import numpy as np
    import torch

    rng = np.random.default_rng(0)
    out = {}
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise([N_IN, hidden, 10])):
        w = rng.standard_normal((num_samples, fan_in, fan_out), np.float32)
        out[f"w{i}"] = torch.as_tensor(w / np.float32(np.sqrt(fan_in)))
        b = 0.1 * rng.standard_normal((num_samples, fan_out), np.float32)
        out[f"b{i}"] = torch.as_tensor(b)
    return out


def _inputs(n: int):
    """The 450 test digits, or ``n`` random float32 inputs of 64 features."""
    import torch

    from ppl_hw.datasets import load_digits

    if n == 450:
        return torch.as_tensor(load_digits().x_test, dtype=torch.float32)
    return torch.randn((n, N_IN), generator=torch.Generator().manual_seed(0))


def _devices() -> dict:
    from ppl_hw import devices

    full = devices.PCM()
    return {
        "weights": full.replace(dac_bits=None, adc_bits=None, out_noise=0.0),
        "full": full,
    }


class _DrawLog:
    """Records the shapes of ``torch.randn`` / ``torch.rand`` calls (a torch
    function mode sees factory functions too)."""

    def __init__(self):
        import torch
        from torch.overrides import TorchFunctionMode

        log = self.draws = Counter()
        kinds = {torch.randn: "normal", torch.rand: "uniform"}

        class Mode(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                kwargs = kwargs or {}
                if func in kinds:
                    shape = args[0] if len(args) == 1 else args
                    log[kinds[func], tuple(shape)] += 1
                return func(*args, **kwargs)

        self.mode = Mode()


def _draws_of_one_run(model, x, sample: dict) -> Counter:
    """``(kind, shape) -> count`` of the torch draws of one run of ``model`` with
    the weights ``sample`` (after a first run: the handler's dry trace)."""
    import pyro
    import torch

    conditioned = pyro.poutine.condition(model, data=sample)
    with torch.no_grad():
        conditioned(x)
        log = _DrawLog()
        with log.mode:
            conditioned(x)
    return log.draws


def _floor_model(model, chip, x, sample: dict):
    """The clean model plus, at every run, the draws the handler adds to a run."""
    import torch

    extra = _draws_of_one_run(chip, x, sample) - _draws_of_one_run(model, x, sample)
    draws = [(kind, shape) for (kind, shape), n in extra.items() for _ in range(n)]

    def draw():
        for kind, shape in draws:
            (torch.randn if kind == "normal" else torch.rand)(shape)

    def floor(*args, **kwargs):
        floor.runs += 1
        draw()
        return model(*args, **kwargs)

    floor.draws, floor.draw, floor.runs = draws, draw, 0
    return floor


def _candidates(hidden: int, n: int, num_samples: int) -> tuple[dict, int]:
    import torch
    from pyro.infer import Predictive

    from ppl_hw.pyro.handlers import crossbar

    model, x = _model(hidden), _inputs(n)
    post = _samples(hidden, num_samples)
    devs = _devices()
    chips = {
        name: crossbar(model, device=dev, t_inference=T_INFERENCE)
        for name, dev in devs.items()
    }
    first = {k: v[0] for k, v in post.items()}
    floor = _floor_model(model, chips["full"], x, first)
    count = sum(torch.Size(s).numel() for _, s in floor.draws)

    def fn(m):
        pred = Predictive(m, posterior_samples=post, return_sites=["logits"])

        def call():
            with torch.no_grad():
                return pred(x)["logits"]

        return call

    cands = {
        "clean": fn(model),
        "floor": fn(floor),
        "weights": fn(chips["weights"]),
        "full": fn(chips["full"]),
    }
    cands["floor"]()
    runs = floor.runs  # model runs per Predictive call

    def draws_alone():
        for _ in range(runs):
            floor.draw()

    cands["draws"] = draws_alone
    return cands, count


def _per_round(t: Timings, fn) -> tuple[float, tuple[float, float] | None]:
    """``fn(times)`` of the medians, and its range over the rounds (rounds where
    ``fn`` is undefined — a difference of times lost in the noise — left out)."""
    med = fn({k: t[k] for k in t})
    rounds = [fn({k: t.rounds[k][i] for k in t}) for i in range(len(t.rounds["clean"]))]
    rounds = [r for r in rounds if r == r]
    return med, (min(rounds), max(rounds)) if rounds else None


def _over_floor(t: dict) -> float:
    """``(full − clean) ÷ (floor − clean)``; NaN when the floor's draws are lost in
    the noise of the clean call (``floor <= clean``)."""
    den = t["floor"] - t["clean"]
    return (t["full"] - t["clean"]) / den if den > 0 else float("nan")


def _over_draws(t: dict) -> float:
    """``(full − clean) ÷ draws``: the same with the draws timed alone."""
    return (t["full"] - t["clean"]) / t["draws"]


def _floor_ratio(t: Timings) -> tuple[float, tuple[float, float] | None, str]:
    """The floor ratio, its spread and a note saying which denominator was used."""
    ratio, spread = _per_round(t, _over_floor)
    alone, alone_spread = _per_round(t, _over_draws)
    if ratio == ratio:
        return ratio, spread, f"the same over the draws timed alone {alone:.2f}×"
    return (
        alone,
        alone_spread,
        "floor − clean lost in the noise: the draws timed alone are the denominator",
    )


def _converter_share(t: dict) -> float:
    return (t["full"] - t["weights"]) / max(t["full"] - t["clean"], 1e-12)


def _label(hidden: int, n: int, num_samples: int) -> str:
    return f"MLP 64-{hidden}-10, {num_samples} samples × {n:,} inputs"


def _ms(t: Timings) -> dict:
    return {f"{k} ms": 1e3 * v for k, v in t.items()}


def _main_rows(hidden: int, n: int, num_samples: int, quick: bool) -> list[Result]:
    cands, count = _candidates(hidden, n, num_samples)
    reps = (
        dict(repeats=2, number=1, warmup=1)
        if quick
        else dict(repeats=7, number=1, warmup=2)
    )
    t = compare(cands, **reps)
    where = f"{_label(hidden, n, num_samples)}, Pyro, torch 1 thread"
    ratio, spread, how = _floor_ratio(t)
    share, share_spread = _per_round(t, _converter_share)
    floor_note = (
        f"floor = clean + the handler's {count:,} torch draws per run "
        f"(read noise, output noise); {how}"
    )
    rows = [
        Result(
            f"Predictive under crossbar(PCM), (handler − clean) ÷ (floor − clean), "
            f"{where}",
            ratio,
            goal=1.2,
            details=_ms(t),
            note=floor_note,
            spread=spread,
        )
    ]
    if share > 0:
        rows.append(
            Result(
                f"converters' share of the handler's time, (full − weights only) ÷ "
                f"(full − clean), {where}",
                share,
                note="DAC, ADC with bound management, output noise",
                spread=share_spread,
            )
        )
    else:  # a difference of two noisy times (the smoke size): no ratio to show
        rows[0].note += "; converters' share lost in the noise"
    return [
        *rows,
        Result.of(
            f"Predictive under crossbar(PCM weight effects only) ÷ clean, {where}",
            t,
            "weights",
            "clean",
        ),
        Result.of(
            f"Predictive under crossbar(PCM) ÷ clean, {where}", t, "full", "clean"
        ),
    ]


def _scaling_rows(hidden: int, n: int, num_samples: int) -> list[Result]:
    cands, count = _candidates(hidden, n, num_samples)
    t = compare(cands, repeats=3, number=1, warmup=1)
    where = f"{_label(hidden, n, num_samples)}, Pyro, torch 1 thread"
    ratio, spread, how = _floor_ratio(t)
    share, _ = _per_round(t, _converter_share)
    return [
        Result(
            f"scaling: (handler − clean) ÷ (floor − clean), {where}",
            ratio,
            goal=1.2,
            details=_ms(t),
            note=f"{count:,} draws per run; {how}; converters' share {share:.2f}; "
            "fewer samples at this size, 3 rounds",
            spread=spread,
        ),
        Result.of(f"scaling: full ÷ clean, {where}", t, "full", "clean"),
    ]


# -- aihwkit ----------------------------------------------------------------------


def _aihwkit_row(hidden: int, n: int, num_samples: int, quick: bool) -> Result | None:
    """Pyro ÷ aihwkit on the same reads, or ``None`` when aihwkit is not installed."""
    name = (
        "Pyro Predictive under crossbar(PCM) ÷ IBM aihwkit, the same reads, "
        f"{_label(hidden, n, num_samples)}, torch 1 thread"
    )
    if importlib.util.find_spec("aihwkit") is None:
        return None
    import torch
    from pyro.infer import Predictive

    from ppl_hw.pyro.handlers import crossbar

    model, x = _model(hidden), _inputs(n)
    post = _samples(hidden, num_samples)
    pred = Predictive(
        crossbar(model, device=_devices()["full"], t_inference=T_INFERENCE),
        posterior_samples=post,
        return_sites=["logits"],
    )
    analog = _aihwkit_reads(hidden, post, x, num_samples)

    def ours():
        with torch.no_grad():
            return pred(x)["logits"]

    reps = (
        dict(repeats=2, number=1, warmup=1)
        if quick
        else dict(repeats=7, number=1, warmup=2)
    )
    t = compare({"ppl_hw": ours, "aihwkit": analog}, **reps)
    return Result.of(
        name,
        t,
        "ppl_hw",
        "aihwkit",
        goal=1.2,
        details=_ms(t),
        note="aihwkit: AnalogLinear layers, InferenceRPUConfig with "
        "PCMLikeNoiseModel, GlobalDriftCompensation, 512 × 512 tiles; per sample "
        "set_weights, program_analog_weights, drift_analog_weights(t), forward",
    )


def _aihwkit_reads(hidden: int, post: dict, x, num_samples: int):
    """aihwkit doing the same reads: per posterior sample, the same weights set,
    programmed, drifted to ``T_INFERENCE`` (with 1/f read noise) and read once by a
    forward pass over the inputs."""
    import torch
    from aihwkit.inference import GlobalDriftCompensation, PCMLikeNoiseModel
    from aihwkit.nn import AnalogLinear, AnalogSequential
    from aihwkit.simulator.configs import InferenceRPUConfig

    rpu = InferenceRPUConfig()
    rpu.noise_model = PCMLikeNoiseModel(g_max=25.0)
    rpu.drift_compensation = GlobalDriftCompensation()
    rpu.mapping.max_input_size = 512
    rpu.mapping.max_output_size = 512
    layers = [
        AnalogLinear(N_IN, hidden, bias=True, rpu_config=rpu),
        AnalogLinear(hidden, 10, bias=True, rpu_config=rpu),
    ]
    net = AnalogSequential(layers[0], torch.nn.Tanh(), layers[1]).eval()

    def call():
        out = []
        with torch.no_grad():
            for s in range(num_samples):
                for i, layer in enumerate(layers):
                    layer.set_weights(post[f"w{i}"][s].T, post[f"b{i}"][s])
                net.program_analog_weights()
                net.drift_analog_weights(T_INFERENCE)
                out.append(net(x))
        return torch.stack(out)

    return call
