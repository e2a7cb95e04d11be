"""The ±1-input variance rule of linear_moments (BinaryMoments after a sign) equals the
general rule to float32 rounding, for dense and padded convolutions, on NumPy, JAX and
torch, and carries no cancellation (checked against float64)."""

import numpy as np
import pytest

from ppl_hw.core import pfp
from ppl_hw.core.backend import NUMPY


def _general(x, wm, wv, op):
    return pfp.linear_moments(pfp.Moments(x.mean, x.var), wm, wv, op)


def _signs(rng, shape, dtype):
    pre = pfp.Moments(rng.normal(0, 2, shape), rng.uniform(0.01, 3, shape))
    # include saturated signs (|m| = 1, v = 0) and confident ones
    pre.mean.reshape(-1)[:7] = [40.0, -40.0, 8.0, -8.0, 0.0, 1e-6, 3.0]
    x = pfp.sign_moments(
        pfp.Moments(pre.mean.astype(dtype), pre.var.astype(dtype)),
        xp=np,
        special=NUMPY.special,
    )
    assert isinstance(x, pfp.BinaryMoments)
    return x


def _ternary_w(rng, shape, dtype):
    logits = rng.normal(0, 3, (*shape, 3))
    logits = np.clip(logits, -5, 5)
    q = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    grid = np.array([-1.0, 0.0, 1.0])
    m = (q * grid).sum(-1)
    v = (q * (grid - m[..., None]) ** 2).sum(-1)
    return m.astype(dtype), v.astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dense_binary_rule_matches_general_rule(dtype):
    rng = np.random.default_rng(0)
    x = _signs(rng, (300, 256), dtype)
    wm, wv = _ternary_w(rng, (256, 40), dtype)
    got = pfp.linear_moments(x, wm, wv, np.matmul)
    ref = _general(x, wm, wv, np.matmul)
    assert got.var.dtype == dtype and got.var.shape == ref.var.shape
    np.testing.assert_array_equal(got.mean, ref.mean)
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(got.var, ref.var, rtol=rtol)
    if dtype == np.float64:
        return
    # float64 truth of the float32 inputs: the new rule is as close as the old one
    x64 = pfp.Moments(x.mean.astype(np.float64), x.var.astype(np.float64))
    truth = _general(x64, wm.astype(np.float64), wv.astype(np.float64), np.matmul)
    err_new = np.max(np.abs(got.var - truth.var) / truth.var)
    err_old = np.max(np.abs(ref.var - truth.var) / truth.var)
    assert err_new <= max(2 * err_old, 8 * np.finfo(dtype).eps), (err_new, err_old)


def _conv_np(a, k):
    """NCHW cross-correlation, stride 1, zero padding 1."""
    n, _, h, w = a.shape
    o, _, kh, kw = k.shape
    pad = np.pad(a, ((0, 0), (0, 0), (1, 1), (1, 1)))
    out = np.zeros((n, o, h, w), a.dtype)
    for i in range(kh):
        for j in range(kw):
            out += np.einsum(
                "nchw,oc->nohw", pad[:, :, i : i + h, j : j + w], k[:, :, i, j]
            )
    return out


def test_padded_conv_binary_rule_matches_general_rule():
    rng = np.random.default_rng(1)
    x = _signs(rng, (5, 3, 6, 6), np.float64)
    wm, wv = _ternary_w(rng, (4, 3, 3, 3), np.float64)
    got = pfp.linear_moments(x, wm, wv, _conv_np)
    ref = _general(x, wm, wv, _conv_np)
    np.testing.assert_allclose(got.var, ref.var, rtol=1e-12)  # borders included


def test_binary_max_pool_output_is_binary_and_arithmetic_is_not():
    rng = np.random.default_rng(2)
    x = _signs(rng, (2, 3, 4, 4), np.float64)
    pooled = pfp.binary_max_pool_moments(x)
    assert isinstance(pooled, pfp.BinaryMoments)
    for y in (2.0 * x, x + 1.0, -x, x / 2.0, x + x):
        assert type(y) is pfp.Moments


def test_unbatched_binary_input_uses_the_general_rule():
    rng = np.random.default_rng(3)
    x = _signs(rng, (256,), np.float64)
    wm, wv = _ternary_w(rng, (256, 10), np.float64)
    got = pfp.linear_moments(x, wm, wv, np.matmul)
    np.testing.assert_allclose(got.var, _general(x, wm, wv, np.matmul).var, rtol=1e-12)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_binary_rule_on_jax_and_torch_matches_numpy(backend):
    rng = np.random.default_rng(4)
    x = _signs(rng, (64, 32), np.float32)
    wm, wv = _ternary_w(rng, (32, 8), np.float32)
    ref = pfp.linear_moments(x, wm, wv, np.matmul)
    if backend == "jax":
        import jax.numpy as jnp

        conv = jnp.asarray
    else:
        import torch

        conv = torch.as_tensor
    xb = pfp.BinaryMoments(conv(x.mean), conv(x.var))
    got = pfp.linear_moments(xb, conv(wm), conv(wv), lambda a, b: a @ b)
    np.testing.assert_allclose(np.asarray(got.var), ref.var, rtol=2e-6)
    np.testing.assert_allclose(np.asarray(got.mean), ref.mean, rtol=2e-6, atol=1e-6)


def test_flatten_keeps_binary_moments_so_the_dense_after_it_saves_a_product():
    from ppl_hw.common.nn import flatten

    rng = np.random.default_rng(3)
    x = _signs(rng, (4, 2, 3, 3), np.float32)
    flat = flatten(x, np)
    assert isinstance(flat, pfp.BinaryMoments) and flat.mean.shape == (4, 18)
    np.testing.assert_array_equal(flat.mean, x.mean.reshape(4, -1))
    plain = flatten(pfp.Moments(x.mean, x.var), np)
    assert type(plain) is pfp.Moments
