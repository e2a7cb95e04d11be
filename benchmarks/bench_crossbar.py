"""Crossbar ``Predictive`` benchmarks (NumPyro; the Pyro rows live in
``bench_crossbar_pyro.py``).

:func:`run_floor` — the goal row: ``Predictive`` (jitted) under ``crossbar`` with
**every** effect of ``devices.PCM()`` on (programming noise, drift with
compensation, read noise, 7-bit DAC, 9-bit ADC with bound management, output
noise, 512 × 512 tiles) on the digits MLP 64-64-10, 100 posterior samples × 450
inputs: (handler − clean) ÷ (floor − clean) (goal ≤ 1.2), where the **floor**
(:class:`RandomFloor`) is the clean model plus, in the same jitted call, the
standard normals and uniforms the handler draws (same counts, shapes and key
splits: the read noise of every weight site, the output noise of every product),
consumed by adding ``0 ×`` their sum to the logits. The converters' share is
reported separately: full ÷ weight effects only, and each part's (x − clean) ÷
(its own floor − clean). Non-quick: the same at hidden 256 and 1 024 (784
inputs) and at 10 000 inputs (fewer posterior samples for the large ones).

:func:`run_demo`: ``Predictive`` under ``crossbar(PCM)`` (weight effects only:
programming noise, drift, read noise) ÷ the clean model (goal ≤ 1.5×): the demo
BNN, 100 posterior samples on the 450 test digits, the whole call jitted.

:func:`run_tiles`: ``Predictive`` under ``crossbar`` with the weights split into
tiles and the products through the converters (full ``PCM()``) ÷ clean, and with
weight effects only ÷ clean, for a 784-1000-1000-10 MLP on random inputs (batch
1 000), posterior samples given as ``posterior_samples`` (random weights: the
figure is a speed).

Module-level helpers other benchmarks may import: :data:`BATCH`, :data:`MODELS`,
:func:`_layer_sizes`, :func:`_tile_note`, :func:`_samples`, :func:`_devices`,
:func:`_rounds`, :func:`_ratio`."""

from __future__ import annotations

import functools
import itertools
import math
import statistics
from collections.abc import Callable

from _timing import Result, Timings, compare


def _jitted_predictive(model, post, x):
    """A zero-argument call of ``Predictive(model)``'s logits, jitted with the
    posterior samples and the inputs as arguments (not constants baked into the jit)."""
    import jax
    from numpyro.infer import Predictive

    @jax.jit
    def f(key, post, x):
        pred = Predictive(model, posterior_samples=post, return_sites=["logits"])
        return pred(key, x)["logits"]

    return lambda: f(jax.random.PRNGKey(1), post, x).block_until_ready()


def run(quick: bool = False) -> list[Result]:
    return run_floor(quick) + run_demo(quick) + run_tiles(quick)


def run_demo(quick: bool = False) -> list[Result]:
    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.infer import Predictive as NPredictive
    from numpyro.infer.autoguide import AutoNormal as NAutoNormal

    from ppl_hw import devices
    from ppl_hw.datasets import load_digits
    from ppl_hw.numpyro.handlers import crossbar as ncrossbar
    from ppl_hw.numpyro.models import mlp_classifier as nmodel

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
    return [
        Result.of(
            "Predictive under crossbar(PCM) ÷ clean, NumPyro jit",
            tn,
            "crossbar",
            "clean",
            goal=1.5,
            details={
                "clean ms": 1e3 * tn["clean"],
                "crossbar ms": 1e3 * tn["crossbar"],
            },
        ),
        Result.of(
            "the same without read noise (programming + drift) ÷ clean, NumPyro jit",
            tn,
            "no read",
            "clean",
            details={"no-read ms": 1e3 * tn["no read"]},
            note="read noise: 2 fresh Gaussians per weight per sample",
        ),
    ]


# -- the RNG floor -------------------------------------------------------------------

FLOOR_MODEL = (64, (64, 64), 100, 450)  # inputs, hidden, posterior samples, batch
SCALING = [  # (inputs, hidden, samples at 450 inputs, samples at 10 000 inputs)
    (64, (64, 64), 100, 10),
    (784, (256, 256), 20, 2),
    (784, (1024, 1024), 4, 1),
]
QUICK_FLOOR = (15, (15,), 2, 20)


class RandomFloor:
    """The RNG floor of the crossbar handler on ``mlp_classifier``: the model run
    clean, plus the standard draws the handler makes for ``device``, in the same
    call, with the same key splits: for every weight site ``w{i}``/``b{i}`` the
    per-read draws (:attr:`Device.read_draws <ppl_hw.core.device.Device.read_draws>`,
    shapes from :func:`ppl_hw.core.crossbar.draw_shapes`) from one key, and for every
    product (the ``w{i}`` sites) the output noise of
    :func:`~ppl_hw.core.crossbar.out_draw_shape` from another. The draws are kept
    alive by adding ``0 ×`` their sum to the ``logits`` site (a sum fuses with the
    generation: nothing is written to memory). With ``reprogram="once"`` the per-chip
    draws are NumPy constants, not drawn in the call, so they are not in the floor.

    Built lazily as a NumPyro ``Messenger`` (:func:`random_floor`)."""


def random_floor(model, device, batch: int):
    """``model`` (an ``mlp_classifier``) under :class:`RandomFloor` for ``device``
    on ``batch`` inputs."""
    import jax
    import jax.numpy as jnp
    import numpyro
    from numpyro.primitives import Messenger

    from ppl_hw.core import crossbar as cx

    class _Floor(Messenger):
        def __enter__(self):
            self.acc = jnp.zeros((), jnp.float32)
            return super().__enter__()

        def process_message(self, msg):
            # inner handlers run process_message first: the outer trace then
            # records the value with the draws folded in
            if msg["type"] == "deterministic" and msg["name"] == "logits":
                msg["value"] = msg["value"] + 0.0 * self.acc

        def postprocess_message(self, msg):
            if msg["type"] != "sample" or msg["is_observed"]:
                return
            name = msg["name"]
            if name[0] not in "wb":
                return
            value = msg["value"]
            shape, dtype = tuple(value.shape), value.dtype
            if device.read_draws:
                key = numpyro.prng_key()
                shapes = cx.draw_shapes(device.read_draws, shape, device.binary)
                keys = jax.random.split(key, len(shapes))
                for k, (draw, s) in zip(keys, shapes.items(), strict=True):
                    normal = cx.DRAW_KINDS[draw] == "normal"
                    f = jax.random.normal if normal else jax.random.uniform
                    self.acc = self.acc + jnp.sum(f(k, s, dtype))
            if device.out_noise and name[0] == "w":
                s = cx.out_draw_shape((batch, shape[0]), shape, device)
                draw = jax.random.normal(numpyro.prng_key(), s, dtype)
                self.acc = self.acc + jnp.sum(draw)

    _Floor.__doc__ = RandomFloor.__doc__
    return _Floor(model)


def _excess(t: Timings, a: str, floor: str, base: str = "clean") -> tuple:
    """``(a − base) ÷ (floor − base)`` of the medians, and the range of the
    per-round figures (clamped at 1e-9 so a noisy tiny run stays positive)."""

    def r(x: float, f: float, b: float) -> float:
        return max(x - b, 1e-9) / max(f - b, 1e-9)

    per_round = [
        r(x, f, b)
        for x, f, b in zip(t.rounds[a], t.rounds[floor], t.rounds[base], strict=True)
    ]
    return r(t[a], t[floor], t[base]), (min(per_round), max(per_round))


def _floor_candidates(n_in, hidden, num_samples, batch, parts: bool) -> dict:
    import jax
    import jax.numpy as jnp

    from ppl_hw import devices
    from ppl_hw.numpyro.handlers import crossbar
    from ppl_hw.numpyro.models import mlp_classifier

    model = functools.partial(mlp_classifier, hidden=hidden, num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, n_in), jnp.float32)
    post = {k: jnp.asarray(v) for k, v in _samples(n_in, hidden, num_samples).items()}
    full = devices.PCM()
    devs = {"full": full}
    if parts:
        devs["weights"] = full.replace(dac_bits=None, adc_bits=None, out_noise=0.0)
        devs["converters"] = full.replace(
            programming=None, drift=None, read_noise=None, drift_compensation=False
        )

    def fn(m):
        return _jitted_predictive(m, post, x)

    out = {"clean": fn(model)}
    for name, dev in devs.items():
        out[name] = fn(crossbar(model, device=dev, t_inference=86_400.0))
        out[f"{name} floor"] = fn(random_floor(model, dev, batch))
    return out


def run_floor(quick: bool = False) -> list[Result]:
    """The crossbar handler with every effect on ÷ its RNG floor (module doc)."""
    n_in, hidden, num_samples, batch = QUICK_FLOOR if quick else FLOOR_MODEL
    reps = (
        dict(repeats=2, number=1, warmup=1)
        if quick
        else dict(repeats=9, number=2, warmup=2)
    )
    # quick (the smoke test): the full handler and its floor only, on a tiny MLP
    # (each jitted Predictive under the crossbar takes seconds to compile)
    parts = not quick
    t = compare(_floor_candidates(n_in, hidden, num_samples, batch, parts), **reps)
    net = "-".join(map(str, (n_in, *hidden, 10)))
    where = f"MLP {net}, {num_samples} samples × {batch} inputs, NumPyro jit"
    ms = {f"{k} ms": 1e3 * v for k, v in t.items()}
    results = []
    ratio, spread = _excess(t, "full", "full floor")
    results.append(
        Result(
            "crossbar(PCM, every effect): (handler − clean) ÷ (floor − clean), "
            + where,
            ratio,
            goal=1.2,
            details={k: ms[k] for k in ("clean ms", "full ms", "full floor ms")},
            note="floor: the same normals the handler draws, same call",
            spread=spread,
        )
    )
    for part in ("weights", "converters") if parts else ():
        ratio, spread = _excess(t, part, f"{part} floor")
        results.append(
            Result(
                f"{part} only: (x − clean) ÷ (its floor − clean), {where}",
                ratio,
                details={k: ms[k] for k in (f"{part} ms", f"{part} floor ms")},
                spread=spread,
            )
        )
    if parts:
        results += [
            Result.of(
                "crossbar(PCM): full ÷ weight effects only (converters' share), "
                + where,
                t,
                "full",
                "weights",
            ),
            Result.of(
                f"crossbar(PCM weight effects only) ÷ clean, {where}",
                t,
                "weights",
                "clean",
            ),
        ]
    results.append(
        Result.of(f"crossbar(PCM, every effect) ÷ clean, {where}", t, "full", "clean")
    )
    if not quick:
        results += run_scaling()
    return results


def run_scaling() -> list[Result]:
    """(handler − clean) ÷ (floor − clean) and full ÷ clean at three network sizes
    and two batch sizes (fewer posterior samples for the large ones)."""
    results = []
    for n_in, hidden, s450, s10k in SCALING:
        for batch, num_samples in ((450, s450), (10_000, s10k)):
            if (n_in, hidden, batch) == (*FLOOR_MODEL[:2], FLOOR_MODEL[3]):
                continue  # the goal row above
            t = compare(
                _floor_candidates(n_in, hidden, num_samples, batch, False),
                repeats=3,
                number=1,
                warmup=1,
            )
            net = "-".join(map(str, (n_in, *hidden, 10)))
            where = f"MLP {net}, {num_samples} samples × {batch} inputs, NumPyro jit"
            ratio, spread = _excess(t, "full", "full floor")
            tiles = _tile_note(n_in, hidden, _devices(False)["full"])
            results += [
                Result(
                    f"scaling: (handler − clean) ÷ (floor − clean), {where}",
                    ratio,
                    goal=1.2,
                    details={f"{k} ms": 1e3 * v for k, v in t.items()},
                    note=tiles,
                    spread=spread,
                ),
                Result.of(f"scaling: full ÷ clean, {where}", t, "full", "clean"),
            ]
    return results


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


def run_tiles(quick: bool = False, backends=("numpyro",)) -> list[Result]:
    """Predictive under crossbar with tiles and converters (see the module doc): the
    large MLP of :data:`MODELS` (the 64-64-10 one is :func:`run_floor`'s). NumPyro
    only (the Pyro rows are ``bench_crossbar_pyro.py``'s); the quick run skips it
    (compiling a jitted Predictive under the crossbar takes seconds at any size and
    :func:`run_floor` compiles one)."""
    if quick or "numpyro" not in backends:
        return []
    devs = _devices(False)
    results = []
    for n_in, hidden, num_samples in MODELS[1:]:
        model = "-".join(map(str, (n_in, *hidden, 10)))
        model = f"MLP {model}, {num_samples} samples, batch {BATCH}"
        samples = _samples(n_in, hidden, num_samples)
        tiles = _tile_note(n_in, hidden, devs["full"])
        t = _numpyro_tiles(
            n_in, hidden, samples, BATCH, devs, dict(repeats=5, warmup=1)
        )
        results += _tile_results(f"{model}, NumPyro jit", t, tiles)
    return results


def _numpyro_tiles(n_in, hidden, samples, batch, devs, reps) -> dict:
    import jax
    import jax.numpy as jnp

    from ppl_hw.numpyro.handlers import crossbar
    from ppl_hw.numpyro.models import mlp_classifier

    model = functools.partial(mlp_classifier, hidden=hidden, num_classes=10)
    x = jax.random.normal(jax.random.PRNGKey(0), (batch, n_in), jnp.float32)
    post = {k: jnp.asarray(v) for k, v in samples.items()}

    def fn(m):
        return _jitted_predictive(m, post, x)

    candidates = {"clean": fn(model)}
    for name, dev in devs.items():
        candidates[name] = fn(crossbar(model, device=dev, t_inference=86_400.0))
    return _rounds(candidates, **reps)
