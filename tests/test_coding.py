"""MIRACLE coding: the candidate stream against its documented definition, bit-exact
decoding across save/load, processes and backends, the decoded samples against the
posterior (KS test), the file's integrity checks and bad input."""

import math
import struct
import subprocess
import sys
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pytest
import scipy.special
import scipy.stats
import torch

from ppl_hw import coding
from ppl_hw.core import coding as cc
from ppl_hw.datasets import load_digits
from ppl_hw.numpyro import models as nm
from ppl_hw.pyro import models as pm

DATA = load_digits()
X = DATA.x_train[:50]
HIDDEN = (8,)


def test_candidates_follow_the_documented_generator():
    seed, start, n, k = 7, 12, 3, 5
    got = cc.candidate_normals(seed, start, n, k, first=2)
    bitgen = np.random.Philox(key=2 * seed)
    offset = (1 << 24) * start + 2 * n
    bitgen.advance(offset // 4)
    bitgen.random_raw(offset % 4)
    words = bitgen.random_raw(k * n).astype(np.uint64)
    u = ((words >> np.uint64(11)).astype(np.float64) + 0.5) / 2.0**53
    np.testing.assert_array_equal(got, scipy.special.ndtri(u).reshape(k, n))


@pytest.mark.parametrize("bits", [1, 7, 16, 24])
def test_bit_packing_is_exact(bits):
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 2**bits, size=37).astype(np.uint32)
    data = cc.pack_bits(values, bits)
    assert len(data) == math.ceil(37 * bits / 8)
    np.testing.assert_array_equal(cc.unpack_bits(data, 37, bits), values)


def test_decoded_blocks_are_the_selected_candidates_and_follow_the_posterior():
    # one weight per block and 2**10 candidates: far more bits than the KL per
    # block (1.3 bits), the regime where the selected sample follows q
    n = 1000
    blocks = cc.make_blocks([n], 10, 3, num_blocks=n)
    mu, sigma = np.full(n, 0.5), np.full(n, 0.3)
    nu, rho = np.zeros(n, np.float32), np.ones(n, np.float32)
    idx, w = cc.encode_blocks(mu, sigma, nu, rho, blocks, 10, 3)
    out = cc.decode_blocks(idx, nu, rho, blocks, 3)
    np.testing.assert_array_equal(out.view(np.uint32), w.view(np.uint32))
    # KS test against N(0.5, 0.3): false-alarm rate 1e-3 (fixed seed)
    assert scipy.stats.kstest(w, scipy.stats.norm(0.5, 0.3).cdf).pvalue > 1e-3
    # argmax picks the candidate with the largest importance weight
    idx_a, _w_a = cc.encode_blocks(
        mu, sigma, nu, rho, blocks, 10, 3, selection="argmax"
    )
    z = cc.candidate_normals(3, blocks._bounds(0)[0], 1, 1024)[:, 0]
    logw = scipy.stats.norm(0.5, 0.3).logpdf(z.astype(np.float32)) - scipy.stats.norm(
        0, 1
    ).logpdf(z.astype(np.float32))
    assert idx_a[0] == np.argmax(logw)


BLOCKS = dict(budget_split="blocks", bits_per_block=8, block_seed=5)


def _numpyro_guide(kind):
    from numpyro.infer.autoguide import AutoNormal

    from ppl_hw.numpyro.autoguide import AutoMeanKL

    def model(x, y=None):
        return nm.mlp_classifier(x, y, hidden=HIDDEN)

    guide = (
        AutoNormal(model)
        if kind == "autonormal"
        else AutoMeanKL(
            model, kl_budget_bits=2000, **(BLOCKS if kind == "blocks" else {})
        )
    )
    svi = numpyro.infer.SVI(
        model, guide, numpyro.optim.Adam(1e-2), numpyro.infer.TraceMeanField_ELBO()
    )
    state = svi.init(
        jax.random.PRNGKey(0), jnp.asarray(X), jnp.asarray(DATA.y_train[:50])
    )
    return model, guide, svi.get_params(state)


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
    guide(torch.as_tensor(X), torch.as_tensor(DATA.y_train[:50]))
    return model, guide


def _np_logits(model, weights):
    sub = numpyro.handlers.substitute(model, data=weights)
    tr = numpyro.handlers.trace(numpyro.handlers.seed(sub, 0)).get_trace(jnp.asarray(X))
    return np.asarray(tr["logits"]["value"])


def _pyro_logits(model, weights):
    tr = pyro.poutine.trace(pyro.poutine.condition(model, data=weights)).get_trace(
        torch.as_tensor(X)
    )
    return tr.nodes["logits"]["value"].detach().numpy()


@pytest.mark.parametrize("kind", ["meankl", "autonormal"])
def test_numpyro_to_pyro_and_back_bit_exact(kind, tmp_path):
    model, guide, params = _numpyro_guide(kind)
    comp = coding.encode(guide, params, bits_per_block=8, seed=1)
    # the payload is exactly num_blocks x bits_per_block bits
    assert comp.total_bits == comp.num_blocks * 8
    path = tmp_path / "net.ppl"
    comp.save(path)
    raw = path.read_bytes()
    loaded = coding.CompressedModel.load(path)
    a, b = coding.decode(comp), coding.decode(loaded)
    for k in a:
        np.testing.assert_array_equal(a[k].view(np.uint32), b[k].view(np.uint32))
    # another process decodes the same bits
    out = tmp_path / "w.npz"
    code = (
        "import numpy as np; from ppl_hw import coding; "
        f"np.savez({str(out)!r}, **coding.decode(coding.CompressedModel.load({str(path)!r})))"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    other = np.load(out)
    for k in a:
        np.testing.assert_array_equal(other[k].view(np.uint32), a[k].view(np.uint32))
    # Pyro runs the same network on the decoded weights
    pmodel, _ = _pyro_guide(kind)
    np.testing.assert_allclose(
        _pyro_logits(pmodel, coding.decode(loaded, backend="pyro")),
        _np_logits(model, coding.decode(loaded, backend="numpyro")),
        rtol=1e-5,
        atol=1e-5,
    )
    assert len(raw) == comp.report()["file_bytes"]
    assert comp.report()["compression_ratio"] == pytest.approx(
        32 * comp.num_weights / comp.total_bits
    )


def test_pyro_to_numpyro_bit_exact():
    pmodel, guide = _pyro_guide("meankl")
    comp = coding.encode(guide, bits_per_block=8, seed=2)
    # the Mean-KL budget fixes the blocks: 2000 bits / 8
    assert comp.num_blocks == 250
    model, _, _ = _numpyro_guide("meankl")
    np.testing.assert_allclose(
        _np_logits(model, coding.decode(comp, backend="numpyro")),
        _pyro_logits(pmodel, coding.decode(comp, backend="pyro")),
        rtol=1e-5,
        atol=1e-5,
    )


@pytest.mark.parametrize("backend", ["numpyro", "pyro"])
def test_a_blocks_guide_is_coded_in_its_own_blocks(backend):
    if backend == "numpyro":
        model, guide, params = _numpyro_guide("blocks")
        comp = coding.encode(guide, params)
    else:
        pmodel, guide = _pyro_guide("blocks")
        # the param store is cleared below: keep the guide's parameters
        params = dict(pyro.get_param_store().items())
        comp = coding.encode(guide)
    # bits and seed come from the guide; the blocks are the guide's, each carrying
    # exactly 8 bits of KL (2 000 bits -> 250 blocks)
    assert (comp.bits_per_block, comp.seed, comp.num_blocks) == (8, 5, 250)
    assert comp.total_bits == 2000
    np.testing.assert_array_equal(comp._blocks().block_of, guide.blocks.block_of)
    # the decoded network runs on the other backend too
    model = _numpyro_guide("autonormal")[0]
    pmodel = _pyro_guide("autonormal")[0]
    np.testing.assert_allclose(
        _np_logits(model, coding.decode(comp, backend="numpyro")),
        _pyro_logits(pmodel, coding.decode(comp, backend="pyro")),
        rtol=1e-5,
        atol=1e-5,
    )
    # more bits than the blocks carry: the same blocks, a larger index
    wider = coding.encode(guide, params, bits_per_block=10)
    assert (wider.num_blocks, wider.total_bits) == (250, 2500)
    # what would code other blocks than the guide's is refused
    with pytest.raises(
        ValueError, match="seed=4 differs from the guide's block_seed=5"
    ):
        coding.encode(guide, params, seed=4)
    with pytest.raises(ValueError, match="bits_per_block=7 is less than"):
        coding.encode(guide, params, bits_per_block=7)
    with pytest.raises(ValueError, match="kl_bits_per_block does not apply"):
        coding.encode(guide, params, kl_bits_per_block=6)


def test_an_untrained_blocks_guide_is_refused():
    from ppl_hw.pyro.autoguide import AutoMeanKL

    guide = AutoMeanKL(pm.mlp_classifier, kl_budget_bits=2000, **BLOCKS)
    with pytest.raises(ValueError, match="has not been run yet"):
        coding.encode(guide)


def _rewrite(raw, at, new):
    body = raw[:-4]
    body = body[:at] + new + body[at + len(new) :]
    return body + struct.pack("<I", zlib.crc32(body))


def test_corrupted_truncated_and_foreign_files(tmp_path):
    _, guide, params = _numpyro_guide("meankl")
    comp = coding.encode(guide, params, bits_per_block=8)
    raw = comp._to_bytes()
    cases = {
        "flipped": raw[:40] + bytes([raw[40] ^ 1]) + raw[41:],
        "truncated": raw[:-3],
        "version": _rewrite(raw, 8, struct.pack("<H", 3)),
        "generator": _rewrite(raw, 10, struct.pack("<H", 9)),
        "magic": b"NOTMAGIC" + raw[8:],
    }
    messages = {
        "flipped": "checksum",
        "truncated": "checksum",
        "version": "format version 3",
        "generator": "generator version 9",
        "magic": "bad magic",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(ValueError, match=messages[name]):
            coding.CompressedModel.load(path)


def test_bad_input():
    from numpyro.infer.autoguide import AutoDelta, AutoNormal

    _, guide, params = _numpyro_guide("meankl")
    for bits, err in (
        (0, ValueError),
        (25, ValueError),
        (True, TypeError),
        (8.0, TypeError),
    ):
        with pytest.raises(err, match="bits_per_block"):
            coding.encode(guide, params, bits_per_block=bits)
    with pytest.raises(ValueError, match="selection"):
        coding.encode(guide, params, selection="best")
    with pytest.raises(ValueError, match="seed"):
        coding.encode(guide, params, seed=-1)
    with pytest.raises(TypeError, match="params"):
        coding.encode(guide, None)
    with pytest.raises(TypeError, match="AutoMeanKL or AutoNormal"):
        coding.encode(AutoDelta(nm.mlp_classifier), params)
    with pytest.raises(TypeError, match="AutoMeanKL or AutoNormal"):
        coding.encode(object(), params)
    with pytest.raises(TypeError, match="CompressedModel"):
        coding.decode({"w0": np.zeros(3)})

    def laplace(x):
        numpyro.sample("w", ndist.Laplace(0.0, 1.0).expand([3]).to_event(1))

    g = AutoNormal(laplace)
    svi = numpyro.infer.SVI(
        laplace, g, numpyro.optim.Adam(1e-2), numpyro.infer.Trace_ELBO()
    )
    p = svi.get_params(svi.init(jax.random.PRNGKey(0), jnp.ones(2)))
    with pytest.raises(ValueError, match="Normal prior"):
        coding.encode(g, p)


def test_finetune_sees_the_coded_weights_and_moves_the_rest():
    _, guide, params = _numpyro_guide("autonormal")
    calls = []

    def finetune(block, fixed):
        calls.append(sum(int(m.sum()) for m, _ in fixed.values()))
        # move every posterior mean to 3: the blocks coded after this call
        # must follow (candidates near 3 get all the importance weight)
        return {
            k: (jnp.full_like(v, 3.0) if k.endswith("_loc") else v)
            for k, v in params.items()
        }

    plain = coding.encode(guide, params, bits_per_block=12, seed=4)
    tuned = coding.encode(guide, params, bits_per_block=12, seed=4, finetune=finetune)
    assert len(calls) == tuned.num_blocks - 1
    # the coded share grows block by block, by the blocks' sizes
    assert calls == sorted(calls) and calls[0] > 0
    blocks = tuned._blocks()
    first = blocks.members(0)
    flat_plain = np.concatenate([v.reshape(-1) for v in coding.decode(plain).values()])
    flat_tuned = np.concatenate([v.reshape(-1) for v in coding.decode(tuned).values()])
    # block 0 is coded before any call: identical; the rest moved towards 3
    np.testing.assert_array_equal(flat_plain[first], flat_tuned[first])
    rest = np.setdiff1d(np.arange(flat_tuned.size), first)
    assert flat_tuned[rest].mean() > flat_plain[rest].mean() + 1.0


def test_kl_margin_per_block():
    _, guide, params = _numpyro_guide("meankl")
    # the Mean-KL budget (2 000 bits) over 5 bits of KL per 8-bit index
    comp = coding.encode(guide, params, bits_per_block=8, kl_bits_per_block=5)
    # exactly 2000 / 5 blocks: the guide's KL recomputed from float32 parameters is
    # the budget up to rounding, which must not add a block
    assert comp.num_blocks == 400
    assert coding.encode(guide, params, bits_per_block=8).num_blocks == 250
    assert comp.total_bits == comp.num_blocks * 8
    for bad, err in ((0, ValueError), (9, ValueError), (True, TypeError)):
        with pytest.raises(err, match="kl_bits_per_block"):
            coding.encode(guide, params, bits_per_block=8, kl_bits_per_block=bad)
