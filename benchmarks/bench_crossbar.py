"""``Predictive`` under ``crossbar(PCM)`` (weight effects only: programming noise,
drift, read noise) ÷ the clean model (goal ≤ 1.5×): the demo BNN, 100 posterior
samples on the 450 test digits. NumPyro: the whole ``Predictive`` call jitted;
Pyro: eager, one model run per sample (``Predictive``'s default).

:func:`run_tiles`: ``Predictive`` under ``crossbar`` with the weights split into
tiles and the products through the converters (full ``PCM()``: 512 × 512 tiles, DAC,
ADC, output noise) ÷ clean, and with weight effects only ÷ clean, for the 64-64-10
digits MLP and a 784-1000-1000-10 MLP on random inputs (batch 1 000), posterior
samples given as ``posterior_samples`` (random weights: the figure is a speed)."""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from collections.abc import Callable

from _timing import Result, compare


def run(quick: bool = False) -> list[Result]:
    return run_demo(quick) + run_tiles(quick)


def run_demo(quick: bool = False) -> list[Result]:
    import jax
    import jax.numpy as jnp
    import numpyro
    import pyro
    import torch
    from numpyro.infer import Predictive as NPredictive
    from numpyro.infer.autoguide import AutoNormal as NAutoNormal
    from pyro.infer import Predictive as PPredictive
    from pyro.infer.autoguide import AutoNormal as PAutoNormal

    from ppl_hw import devices
    from ppl_hw.datasets import load_digits
    from ppl_hw.numpyro.handlers import crossbar as ncrossbar
    from ppl_hw.numpyro.models import mlp_classifier as nmodel
    from ppl_hw.pyro.models import mlp_classifier as pmodel
    from ppl_hw.pyro.poutine import crossbar as pcrossbar

    data = load_digits()
    num_samples = 10 if quick else 100
    device = devices.PCM(dac_bits=None, adc_bits=None, out_noise=0.0)
    reps = (
        dict(repeats=2, number=1, warmup=1)
        if quick
        else dict(repeats=7, number=5, warmup=2)
    )

    x, y, x_test = (jnp.asarray(a) for a in (data.x_train, data.y_train, data.x_test))
    guide = NAutoNormal(nmodel)
    svi = numpyro.infer.SVI(
        nmodel, guide, numpyro.optim.Adam(1e-2), numpyro.infer.Trace_ELBO()
    )
    params = svi.get_params(svi.init(jax.random.PRNGKey(0), x, y))

    def numpyro_fn(model):
        pred = NPredictive(
            model,
            guide=guide,
            params=params,
            num_samples=num_samples,
            return_sites=["logits"],
        )
        f = jax.jit(lambda key: pred(key, x_test)["logits"])
        return lambda: f(jax.random.PRNGKey(1)).block_until_ready()

    chip = ncrossbar(nmodel, device=device, t_inference=86_400.0)
    quiet = ncrossbar(
        nmodel, device=device.replace(read_noise=None), t_inference=86_400.0
    )
    tn = compare(
        {
            "clean": numpyro_fn(nmodel),
            "crossbar": numpyro_fn(chip),
            "no read": numpyro_fn(quiet),
        },
        **reps,
    )

    pyro.clear_param_store()
    pguide = PAutoNormal(pmodel)
    xt = torch.as_tensor(data.x_test)
    pguide(torch.as_tensor(data.x_train), torch.as_tensor(data.y_train))

    def pyro_fn(model):
        pred = PPredictive(
            model,
            guide=pguide,
            num_samples=num_samples,
            return_sites=["logits"],
        )

        def call():
            with torch.no_grad():
                return pred(xt)["logits"]

        return call

    pchip = pcrossbar(pmodel, device=device, t_inference=86_400.0)
    tp = compare({"clean": pyro_fn(pmodel), "crossbar": pyro_fn(pchip)}, **reps)
    return [
        Result(
            "Predictive under crossbar(PCM) ÷ clean, NumPyro jit",
            tn["crossbar"] / tn["clean"],
            goal=1.5,
            details={
                "clean ms": 1e3 * tn["clean"],
                "crossbar ms": 1e3 * tn["crossbar"],
            },
        ),
        Result(
            "the same without read noise (programming + drift) ÷ clean, NumPyro jit",
            tn["no read"] / tn["clean"],
            details={"no-read ms": 1e3 * tn["no read"]},
            note="read noise: 2 fresh Gaussians per weight per sample",
        ),
        Result(
            "Predictive under crossbar(PCM) ÷ clean, Pyro",
            tp["crossbar"] / tp["clean"],
            goal=1.5,
            details={
                "clean ms": 1e3 * tp["clean"],
                "crossbar ms": 1e3 * tp["crossbar"],
            },
        ),
    ]


# -- tiles and converters -------------------------------------------------------------

BATCH = 1000
MODELS = [(64, (64,), 50), (784, (1000, 1000), 10)]  # inputs, hidden, samples
# quick (the smoke test): one tiny model on 10 x 10 tiles (2 x 2 and 2 x 1 tiles).
# NumPyro there runs the clean model only: compiling a jitted Predictive under the
# crossbar takes 5-10 s of CPU at any size (the demo benchmark's quick run covers
# one), and the smoke test must stay under 5 s
QUICK_MODELS = [(15, (15,), 2)]
QUICK_TILE, QUICK_BATCH = 10, 20


def _rounds(
    candidates: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int,
    number: int | None = None,
    min_round: float = 0.2,
) -> dict[str, list[float]]:
    """Seconds per call of each candidate in each of ``repeats`` interleaved rounds
    (``_timing.compare`` one round at a time, after the warm-up), so the spread of
    the per-round ratios can be reported. ``number=None``: calls per round such that
    the fastest candidate's round takes about ``min_round`` seconds."""
    fastest = min(compare(candidates, repeats=1, number=1, warmup=warmup).values())
    if number is None:
        number = max(1, min(20, math.ceil(min_round / fastest)))
    out: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, v in compare(candidates, repeats=1, number=number, warmup=0).items():
            out[name].append(v)
    return out


def _ratio(t: dict[str, list[float]], a: str, b: str) -> tuple[float, str]:
    """median(a) / median(b) and the range of the per-round ratios."""
    per_round = [x / y for x, y in zip(t[a], t[b], strict=True)]
    ratio = statistics.median(t[a]) / statistics.median(t[b])
    return ratio, f"per-round {min(per_round):.2f}–{max(per_round):.2f}×"


def _layer_sizes(n_in: int, hidden: tuple[int, ...]) -> list[tuple[int, int]]:
    return list(itertools.pairwise([n_in, *hidden, 10]))


def _tile_note(n_in: int, hidden: tuple[int, ...], device) -> str:
    """``w0 2×2, w1 2×2, w2 2×1 = 10 tiles`` (rows × columns of tiles per layer)."""
    from ppl_hw.core.crossbar import num_tiles, tile_bounds

    parts, total = [], 0
    for i, (fan_in, fan_out) in enumerate(_layer_sizes(n_in, hidden)):
        r = len(tile_bounds(fan_in, device.max_input_size))
        c = len(tile_bounds(fan_out, device.max_output_size))
        n = num_tiles((fan_in, fan_out), "io", device)
        assert n == r * c
        parts.append(f"w{i} {r}×{c}")
        total += n
    return f"tiles {', '.join(parts)} = {total}"


def _samples(n_in: int, hidden: tuple[int, ...], num_samples: int) -> dict:
    """Random posterior samples (NumPy float32), weights ~ N(0, 1/fan_in)."""
    import numpy as np

    rng = np.random.default_rng(0)
    out = {}
    for i, (fan_in, fan_out) in enumerate(_layer_sizes(n_in, hidden)):
        w = rng.standard_normal((num_samples, fan_in, fan_out), np.float32)
        out[f"w{i}"] = w / np.float32(np.sqrt(fan_in))
        out[f"b{i}"] = 0.1 * rng.standard_normal((num_samples, fan_out), np.float32)
    return out


def _devices(quick: bool) -> dict:
    from ppl_hw import devices

    tile = QUICK_TILE if quick else 512
    full = devices.PCM(max_input_size=tile, max_output_size=tile)
    return {
        "weights": full.replace(dac_bits=None, adc_bits=None, out_noise=0.0),
        "full": full,
    }


def _tile_results(where: str, t: dict[str, list[float]], note: str) -> list[Result]:
    ms = {f"{k} ms": 1e3 * statistics.median(v) for k, v in t.items()}
    out = []
    for label, a, b in (
        ("crossbar(PCM weight effects only) ÷ clean", "weights", "clean"),
        ("crossbar(PCM: tiles + converters) ÷ clean", "full", "clean"),
        ("crossbar(PCM: tiles + converters) ÷ weight effects only", "full", "weights"),
    ):
        if a not in t or b not in t:  # not run (quick)
            continue
        ratio, spread = _ratio(t, a, b)
        out.append(
            Result(
                f"Predictive under {label}, {where}",
                ratio,
                details={f"{a} ms": ms[f"{a} ms"], f"{b} ms": ms[f"{b} ms"]},
                note="; ".join(x for x in (spread, note) if x),
            )
        )
    return out


def run_tiles(quick: bool = False, backends=("numpyro", "pyro")) -> list[Result]:
    """Predictive under crossbar with tiles and converters (see the module doc)."""
    models = QUICK_MODELS if quick else MODELS
    batch = QUICK_BATCH if quick else BATCH
    reps = dict(repeats=2, number=1, warmup=1) if quick else dict(repeats=7, warmup=2)
    devs = _devices(quick)
    results = []
    for n_in, hidden, num_samples in models:
        model = "-".join(map(str, (n_in, *hidden, 10)))
        model = f"MLP {model}, {num_samples} samples, batch {batch}"
        samples = _samples(n_in, hidden, num_samples)
        tiles = _tile_note(n_in, hidden, devs["full"])
        if "numpyro" in backends:
            ndevs = {} if quick else devs
            t = _numpyro_tiles(n_in, hidden, samples, batch, ndevs, reps)
            results += _tile_results(f"{model}, NumPyro jit", t, tiles)
        if "pyro" in backends:
            t = _pyro_tiles(n_in, hidden, samples, batch, devs, reps)
            results += _tile_results(f"{model}, Pyro", t, f"{tiles}; torch 1 thread")
    return results


def _numpyro_tiles(n_in, hidden, samples, batch, devs, reps) -> dict:
    import jax
    import jax.numpy as jnp
    from numpyro.infer import Predictive

    from ppl_hw.numpyro.handlers import crossbar
    from ppl_hw.numpyro.models import mlp_classifier

    model = functools.partial(mlp_classifier, hidden=hidden, num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, n_in), jnp.float32)
    post = {k: jnp.asarray(v) for k, v in samples.items()}

    def fn(m):
        # the samples and the inputs are arguments, not constants baked into the jit
        @jax.jit
        def f(key, post, x):
            pred = Predictive(m, posterior_samples=post, return_sites=["logits"])
            return pred(key, x)["logits"]

        return lambda: f(jax.random.PRNGKey(1), post, x).block_until_ready()

    candidates = {"clean": fn(model)}
    for name, dev in devs.items():
        candidates[name] = fn(crossbar(model, device=dev, t_inference=86_400.0))
    return _rounds(candidates, **reps)


def _pyro_tiles(n_in, hidden, samples, batch, devs, reps) -> dict:
    import torch
    from pyro.infer import Predictive

    from ppl_hw.pyro.handlers import crossbar
    from ppl_hw.pyro.models import mlp_classifier

    model = functools.partial(mlp_classifier, hidden=hidden, num_classes=10)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((batch, n_in), generator=gen)
    post = {k: torch.as_tensor(v) for k, v in samples.items()}

    def fn(m):
        pred = Predictive(m, posterior_samples=post, return_sites=["logits"])

        def call():
            with torch.no_grad():
                return pred(x)["logits"]

        return call

    # one intra-op thread, as bench_pfp: on two shared cores a second thread makes
    # eager ops wait for a core
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        candidates = {"clean": fn(model)}
        for name, dev in devs.items():
            candidates[name] = fn(crossbar(model, device=dev, t_inference=86_400.0))
        return _rounds(candidates, **reps)
    finally:
        torch.set_num_threads(threads)
