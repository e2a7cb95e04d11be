"""The crossbar's chip seed: every int in [0, 2**64 - 1] is its own chip (no silent
truncation to 32 bits), seeds below 2**32 program the chips they always did, and
seeds outside the range are refused naming ``seed``. Both backends."""

import zlib

import numpy as np
import pytest

from ppl_hw import devices
from ppl_hw.common.handlers import CrossbarSpec, chip_draws_numpy
from ppl_hw.numpyro.handlers import crossbar as ncrossbar
from ppl_hw.pyro.poutine import crossbar as pcrossbar

from .test_crossbar_handlers import QUIET_PCM, nmodel, ntrace, pmodel, ptrace

PCM = devices.PCM()


def _old_rule(seed, name, shape, device):
    """The draws as keyed before 64-bit seeds: Philox(key=[seed, crc32(name)])."""
    rng = np.random.Generator(np.random.Philox(key=[seed, zlib.crc32(name.encode())]))
    spec = CrossbarSpec(device, None, 0.0, 0, "once")
    ref = chip_draws_numpy(spec, name, shape, device)  # for the kinds and order only
    out = {}
    from ppl_hw.core import crossbar as cx

    for draw, draw_shape in cx.draw_shapes(
        device.chip_draws, shape, device.binary
    ).items():
        kind = cx.DRAW_KINDS[draw]
        out[draw] = (
            rng.standard_normal(draw_shape)
            if kind == "normal"
            else rng.random(draw_shape)
        )
    assert out.keys() == ref.keys()
    return out


@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1])
def test_seeds_below_2_32_program_the_chips_they_always_did(seed):
    spec = CrossbarSpec(PCM, None, 0.0, seed, "once")
    new = chip_draws_numpy(spec, "w", (6, 4), PCM)
    old = _old_rule(seed, "w", (6, 4), PCM)
    for k in old:
        np.testing.assert_array_equal(new[k], old[k])


@pytest.mark.parametrize(
    "a, b", [(0, 2**32), (5, 2**32 + 5), (1, 2**63 + 1), (0, 2**64 - 2**32)]
)
def test_seeds_equal_mod_2_32_are_distinct_chips(a, b):
    da = chip_draws_numpy(CrossbarSpec(PCM, None, 0.0, a, "once"), "w", (6, 4), PCM)
    db = chip_draws_numpy(CrossbarSpec(PCM, None, 0.0, b, "once"), "w", (6, 4), PCM)
    assert any(not np.array_equal(da[k], db[k]) for k in da)


def test_both_backends_program_different_chips_for_seed_0_and_2_32():
    w = {}
    for seed in (0, 2**32):
        w["n", seed] = ntrace(
            ncrossbar(
                nmodel, device=QUIET_PCM, t_inference=60.0, seed=seed, record=True
            )
        )["w_chip"]
        w["p", seed] = ptrace(
            pcrossbar(
                pmodel, device=QUIET_PCM, t_inference=60.0, seed=seed, record=True
            )
        )["w_chip"]
    assert not np.array_equal(w["n", 0], w["n", 2**32])
    assert not np.array_equal(w["p", 0], w["p", 2**32])


@pytest.mark.parametrize("crossbar, model", [(ncrossbar, nmodel), (pcrossbar, pmodel)])
@pytest.mark.parametrize(
    "seed, exc, words",
    [
        (-1, ValueError, ["seed", "-1", "2**64"]),
        (2**64, ValueError, ["seed", str(2**64)]),
        (1.5, TypeError, ["seed", "1.5"]),
        (True, TypeError, ["seed", "True"]),
    ],
)
def test_seed_out_of_range_is_refused(crossbar, model, seed, exc, words):
    with pytest.raises(exc) as info:
        crossbar(model, device=PCM, t_inference=1.0, seed=seed)
    for word in words:
        assert word in str(info.value)
