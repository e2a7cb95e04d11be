"""MIRACLE encoding at 16 bits per block: the encoder against its floor, and its rate.

``ppl_hw.core.coding.encode_blocks`` on blocks of the demo BNN (8 970 weights, the
20 000-bit ``AutoMeanKL`` budget: about 1 250 blocks of 7-8 weights), ``K = 2**16``
candidates per block, ``selection="sample"``, random posterior means and scales of
about 16 bits of KL per block against ``Normal(0, 1)``. A whole encode runs block by
block, so a few blocks of the same mix of sizes are timed (8; 2 in quick mode) and the
figures are per block.

The **floor** is what any encoder of this candidate stream must do: draw the block's
``K n`` Philox-4x64 words and turn each into a standard normal -- here with the
cheapest transform the encoder has (the float32 table of
``ppl_hw.core.coding._table_normals``), in the same chunks. The encoder adds the
scoring (two float32 matrix-vector products per chunk), the Gumbel noise of the
selection (``K`` more words, two float64 logs each) and the exact rescoring of the
few candidates near the best. Rows:

* encode ÷ floor (goal ≤ 3×);
* the rate goal, 7 M candidates/s per core: encode ÷ the time 7 M/s would take for the
  same candidates (goal ≤ 1×, i.e. at least 7 M/s);
* the fast scorer ÷ the exact scorer (every candidate through float64 ``ndtri``: the
  previous encoder), the same indices (reported: a machine-independent speed-up);
* ``candidate_normals`` (Philox + exact ``ndtri``, the decoder's generator) ÷ NumPy's
  ``Generator.standard_normal`` of the same count (reported).

The per-block cost does not depend on the network's width (a block holds ~7 weights
whatever the layer sizes), so the whole-network times in the details are the measured
per-block time × the blocks of the digits MLP (64-64-64-10) and of the same MLP with
256 and 1 024 hidden units at the same bits per weight.

**On an executor** (``encode(..., executor=)``): the whole digits network -- a Pyro
``AutoMeanKL(kl_budget_bits=20_000, budget_split="blocks", bits_per_block=16)`` of the
digits MLP trained for 300 full-batch Adam steps, 1 250 blocks -- coded by the public
``ppl_hw.coding.encode`` in this process (serial), on a ``ProcessPoolExecutor`` of 1
and of 2 ``"spawn"`` workers, timed interleaved with the pools already started (their
start-up, the first encode on a fresh pool less a later one, is in the details, with
the load average). Every run's file is checked byte-identical to the serial one. Rows:
2 workers ÷ serial (goal ≤ 1/1.7: ≥ 1.7× faster on 2 cores) and 2 workers ÷ 1 worker
(reported), with the time per encoded block of each. Quick mode: the same with one
hidden layer of 4 units (310 weights, 43 blocks of 16 bits).
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor

import numpy as np
from _timing import Result, Timings, compare

BITS = 16
NUM_WEIGHTS = 8_970  # the demo BNN 64-64-64-10
TOTAL_BITS = 20_000.0  # the demo's AutoMeanKL budget
BLOCKS = 8
QUICK_BLOCKS = 2
GOAL_RATE = 7e6  # candidates per second per core
#: weights of the digits MLP 64-h-h-10 for h = 64, 256, 1024
WIDTHS = {h: 64 * h + h + h * h + h + h * 10 + 10 for h in (64, 256, 1024)}


def run(quick: bool = False) -> list[Result]:
    return _encode_blocks_rows(quick) + _executor_rows(quick)


def _encode_blocks_rows(quick: bool) -> list[Result]:
    from ppl_hw.core import coding as cc

    num_blocks = QUICK_BLOCKS if quick else BLOCKS
    all_blocks = int(np.ceil(TOTAL_BITS / BITS))  # 1 250
    # a Blocks of ``num_blocks`` blocks with the whole network's mix of sizes
    weights = round(num_blocks * NUM_WEIGHTS / all_blocks)
    blocks = cc.make_blocks((weights,), BITS, 0, num_blocks=num_blocks)
    rng = np.random.default_rng(0)
    # about 16 bits (11.1 nats) of KL per block of ~7.2 weights against N(0, 1)
    mu = rng.normal(0.0, 1.1, weights)
    sigma = 0.25 * np.exp(rng.normal(0.0, 0.2, weights))
    nu = np.zeros(weights, np.float32)
    rho = np.ones(weights, np.float32)
    k = 1 << BITS
    sizes = [len(blocks.members(b)) for b in range(num_blocks)]
    starts = [blocks._bounds(b)[0] for b in range(num_blocks)]
    gen = np.random.default_rng(1)

    def encode():
        return cc.encode_blocks(mu, sigma, nu, rho, blocks, BITS, 0)

    def exact():
        return cc.encode_blocks(mu, sigma, nu, rho, blocks, BITS, 0, scorer="exact")

    def floor(transform=True):
        # the encoder's own chunking: ~2**15 words, then the table transform
        for s, n in zip(starts, sizes, strict=True):
            bitgen = cc._philox_at(0, cc._K_MAX * s)
            rows = max(1, cc._CHUNK_WORDS // n)
            for lo in range(0, k, rows):
                words = bitgen.random_raw(min(rows, k - lo) * n)
                if transform:
                    cc._table_normals(words)

    def generate():
        for s, n in zip(starts, sizes, strict=True):
            cc.candidate_normals(0, s, n, k)

    def numpy_normals():
        for n in sizes:
            gen.standard_normal((k, n))

    # the fast scorer must pick the exact scorer's candidates (tests assert it too)
    np.testing.assert_array_equal(encode()[0], exact()[0])
    reps = (
        dict(repeats=2, number=1, warmup=1)
        if quick
        else dict(repeats=9, number=3, warmup=1)
    )
    t = compare(
        {
            "encode": encode,
            "floor": floor,
            "philox": lambda: floor(transform=False),
            "exact": exact,
            "generate": generate,
            "numpy": numpy_normals,
        },
        **reps,
    )
    count = num_blocks * k
    # the same encode timed in CPU seconds of this process: less sensitive to a
    # machine shared with other work than the wall-clock rounds above
    calls = reps["repeats"]
    cpu = time.process_time()
    for _ in range(calls):
        encode()
    cpu_rate = calls * count / (time.process_time() - cpu)
    # the time GOAL_RATE would take for the same candidates, every round
    budget = Timings(
        {"encode": t.rounds["encode"], "goal": [count / GOAL_RATE] * reps["repeats"]}
    )
    per = {name: 1e3 * s / num_blocks for name, s in t.items()}
    rate = count / t["encode"]
    rates = [count / s for s in t.rounds["encode"]]
    setting = (
        f"K = 2^{BITS}, {num_blocks} blocks of the digits BNN's "
        f"{all_blocks} (~{NUM_WEIGHTS / all_blocks:.1f} weights each)"
    )
    bits_per_weight = TOTAL_BITS / NUM_WEIGHTS
    whole = {
        f"whole net s, hidden {h}": math.ceil(d * bits_per_weight / BITS)
        * per["encode"]
        / 1e3
        for h, d in WIDTHS.items()
    }
    return [
        Result.of(
            f"MIRACLE encode_blocks ÷ floor (Philox words + table normal transform, "
            f"same count), {setting}",
            t,
            "encode",
            "floor",
            goal=3.0,
            details={
                "encode ms/block": per["encode"],
                "floor ms/block": per["floor"],
                "Philox alone ms/block": per["philox"],
                "M candidates/s": rate / 1e6,
            },
            note="encode adds float32 scoring, Gumbel noise, exact rescoring of "
            "the candidates near the best",
        ),
        Result.of(
            "MIRACLE encode rate goal ≥ 7 M candidates/s per core: encode ÷ the "
            "time at 7 M/s, same candidates (≤ 1× = goal met)",
            budget,
            "encode",
            "goal",
            goal=1.0,
            details={
                "M candidates/s": rate / 1e6,
                "M candidates/s min": min(rates) / 1e6,
                "M candidates/s max": max(rates) / 1e6,
                "goal M/s": GOAL_RATE / 1e6,
                "M candidates/s, CPU time": cpu_rate / 1e6,
                **whole,
            },
        ),
        Result.of(
            "MIRACLE encode, fast scorer ÷ exact scorer (float64 ndtri for every "
            "candidate), same indices",
            t,
            "encode",
            "exact",
            details={
                "exact ms/block": per["exact"],
                "exact M candidates/s": count / t["exact"] / 1e6,
            },
        ),
        Result.of(
            "candidate_normals (Philox + ndtri) ÷ numpy Generator.standard_normal, "
            "same count",
            t,
            "generate",
            "numpy",
            details={
                "Philox + ndtri ms/block": per["generate"],
                "numpy ms/block": per["numpy"],
            },
        ),
    ]


#: the executor rows: (hidden layers, KL budget in bits, Adam steps)
EXECUTOR_NET = {False: ((64, 64), TOTAL_BITS, 300), True: ((4,), 43 * BITS, 5)}
SPEEDUP_GOAL = 1.7  # 2 workers on 2 cores


def _digits_guide(quick: bool):
    """A Pyro ``AutoMeanKL`` of the digits MLP with 16-bit coding blocks, trained
    briefly (the coder's work does not depend on how long), and its parameters."""
    import pyro
    import torch

    from ppl_hw.datasets import load_digits
    from ppl_hw.pyro import models as pm
    from ppl_hw.pyro.autoguide import AutoMeanKL

    torch.set_num_threads(1)
    hidden, budget, steps = EXECUTOR_NET[quick]
    data = load_digits()
    x, y = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)

    def model(x, y=None):
        return pm.mlp_classifier(x, y, hidden=hidden)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    guide = AutoMeanKL(
        model,
        kl_budget_bits=budget,
        budget_split="blocks",
        bits_per_block=BITS,
        block_seed=0,
    )
    svi = pyro.infer.SVI(
        model, guide, pyro.optim.Adam({"lr": 1e-2}), pyro.infer.TraceMeanField_ELBO()
    )
    for _ in range(steps):
        svi.step(x, y)
    return guide, dict(pyro.get_param_store().items())


def _loadavg() -> tuple[float, float, float]:
    """The 1, 5 and 15 minute load averages (NaN where the OS has none)."""
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return (math.nan,) * 3


def _executor_rows(quick: bool) -> list[Result]:
    from ppl_hw import coding

    guide, params = _digits_guide(quick)
    reference = coding.encode(guide, params)
    ref_bytes = reference._to_bytes()
    num_blocks = reference.num_blocks
    spawn = multiprocessing.get_context("spawn")
    load_before = _loadavg()
    pools, startup = {}, {}
    try:
        for workers in (1, 2):
            start = time.perf_counter()
            pools[workers] = ProcessPoolExecutor(workers, mp_context=spawn)
            first = coding.encode(guide, params, executor=pools[workers])
            startup[workers] = time.perf_counter() - start
            assert first._to_bytes() == ref_bytes, f"{workers} workers"

        def on(workers):
            def encode():
                out = coding.encode(guide, params, executor=pools[workers])
                assert out._to_bytes() == ref_bytes, f"{workers} workers"

            return encode

        t = compare(
            {
                "serial": lambda: coding.encode(guide, params),
                "1 worker": on(1),
                "2 workers": on(2),
            },
            **(
                dict(repeats=2, number=1, warmup=0)
                if quick
                else dict(repeats=5, number=1, warmup=0)
            ),
        )
    finally:
        for pool in pools.values():
            pool.shutdown(wait=True, cancel_futures=True)
    load_after = _loadavg()
    per = {name: 1e3 * s / num_blocks for name, s in t.items()}
    speedups = [
        a / b for a, b in zip(t.rounds["serial"], t.rounds["2 workers"], strict=True)
    ]
    hidden = "-".join(str(h) for h in (64, *EXECUTOR_NET[quick][0], 10))
    setting = (
        f"digits MLP {hidden} AutoMeanKL, {num_blocks} blocks of {BITS} bits, "
        "byte-identical files"
    )
    load = {
        "load avg 1 min before": load_before[0],
        "load avg 1 min after": load_after[0],
        "load avg 5 min after": load_after[1],
    }
    return [
        Result.of(
            f"MIRACLE encode on ProcessPoolExecutor(2) ÷ serial encode, {setting} "
            f"(goal ≥ {SPEEDUP_GOAL}× faster)",
            t,
            "2 workers",
            "serial",
            goal=round(1.0 / SPEEDUP_GOAL, 3),
            details={
                "speed-up": t["serial"] / t["2 workers"],
                "speed-up min": min(speedups),
                "speed-up max": max(speedups),
                "serial ms/block": per["serial"],
                "2 workers ms/block": per["2 workers"],
                "serial s": t["serial"],
                "2 workers s": t["2 workers"],
                "pool(2) start-up + first encode s": startup[2],
                "pool(2) start-up s": startup[2] - t["2 workers"],
                **load,
            },
            note="pools started before timing; the start-up is the first encode on "
            "a fresh pool less the median one",
        ),
        Result.of(
            f"MIRACLE encode, time per block on 2 ÷ 1 worker processes, {setting}",
            t,
            "2 workers",
            "1 worker",
            details={
                "1 worker ms/block": per["1 worker"],
                "2 workers ms/block": per["2 workers"],
                "serial ms/block": per["serial"],
                "1 worker ÷ serial": t["1 worker"] / t["serial"],
                "pool(1) start-up s": startup[1] - t["1 worker"],
                **load,
            },
        ),
    ]
