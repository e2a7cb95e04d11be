"""MIRACLE encoding: candidates scored per second at 16 bits per block (reported).

``ppl_hw.core.coding.encode_blocks`` on blocks of the demo BNN (8 970 weights, the
20 000-bit ``AutoMeanKL`` budget: about 1 250 blocks of 7-8 weights), ``K = 2**16``
candidates per block, ``selection="sample"``, random posterior means and scales of
about 16 bits of KL per block against ``Normal(0, 1)``. A whole encode runs block by
block, so a few blocks of the same mix of sizes are timed (8; 2 in quick mode) and the
figures are per block.

No speed goal is set, so the rate (candidates per second) is in the details; the
ratio is the encode ÷ the generation of its candidates alone
(``candidate_normals``: Philox words, then ``ndtri``), and a second row sets that
generator against NumPy's default standard normals (``Generator.standard_normal``,
same count) -- the cost of a stable, counter-based, decoder-reproducible stream. The
details split a block's time into generation and scoring (the importance weights of
the float32 candidates, the Gumbel noise of the selection and the argmax).
"""

from __future__ import annotations

import numpy as np
from _timing import Result, compare

BITS = 16
NUM_WEIGHTS = 8_970  # the demo BNN 64-64-64-10
TOTAL_BITS = 20_000.0  # the demo's AutoMeanKL budget
BLOCKS = 8
QUICK_BLOCKS = 2


def run(quick: bool = False) -> list[Result]:
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
    members = [blocks.members(b) for b in range(num_blocks)]
    starts = [blocks._bounds(b)[0] for b in range(num_blocks)]
    z_all = [
        cc.candidate_normals(0, s, len(i), k)
        for s, i in zip(starts, members, strict=True)
    ]
    gen = np.random.default_rng(1)
    nu64, rho64 = nu.astype(np.float64), rho.astype(np.float64)

    def encode():
        cc.encode_blocks(mu, sigma, nu, rho, blocks, BITS, 0)

    def generate():
        for s, i in zip(starts, members, strict=True):
            cc.candidate_normals(0, s, len(i), k)

    def numpy_normals():
        for i in members:
            gen.standard_normal((k, len(i)))

    def score():
        # encode_blocks' work on given standard normals: the float32 candidates,
        # their log importance weights, Gumbel-max selection
        for b, (i, z) in enumerate(zip(members, z_all, strict=True)):
            w = (nu64[i] + rho64[i] * z).astype(np.float32)
            logw = cc._gaussian_logpdf_ratio(
                w.astype(np.float64), mu[i], sigma[i], nu64[i], rho64[i]
            )
            u = cc._uniform(cc.philox_raw(1, k, offset=cc._K_MAX * b))
            int(np.argmax(logw - np.log(-np.log(u))))

    reps = (
        dict(repeats=2, number=1, warmup=1)
        if quick
        else dict(repeats=7, number=3, warmup=1)
    )
    t = compare(
        {
            "encode": encode,
            "generate": generate,
            "score": score,
            "numpy": numpy_normals,
        },
        **reps,
    )
    per = {name: 1e3 * s / num_blocks for name, s in t.items()}
    rate = num_blocks * k / t["encode"]
    setting = (
        f"K = 2^{BITS}, {num_blocks} blocks of the digits BNN's "
        f"{all_blocks} (~{NUM_WEIGHTS / all_blocks:.1f} weights each)"
    )
    return [
        Result(
            f"MIRACLE encode_blocks ÷ its candidate generation alone, {setting}",
            t["encode"] / t["generate"],
            details={
                "M candidates/s": rate / 1e6,
                "encode ms/block": per["encode"],
                "generate ms/block": per["generate"],
                "score ms/block": per["score"],
                "whole net s": all_blocks * per["encode"] / 1e3,
            },
            note="score: importance weights + Gumbel-max selection",
        ),
        Result(
            "candidate_normals (Philox + ndtri) ÷ numpy Generator.standard_normal, "
            "same count",
            t["generate"] / t["numpy"],
            details={
                "Philox ms/block": per["generate"],
                "numpy ms/block": per["numpy"],
            },
        ),
    ]
