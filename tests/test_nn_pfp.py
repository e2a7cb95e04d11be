"""The ``nn`` primitives on arrays and on ``Moments``, on both backends: values
against NumPy references, moments against the NumPy core, the two backends against
each other (rtol 1e-5 in float32)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import ppl_hw.numpyro.nn as nnn
import ppl_hw.pyro.nn as pnn
from ppl_hw.core import NUMPY, pfp

RNG = np.random.default_rng(0)
IMG = RNG.normal(size=(3, 2, 6, 6)).astype(np.float32)
IMG_VAR = RNG.uniform(0.05, 1.0, size=IMG.shape).astype(np.float32)
KER = RNG.normal(size=(4, 2, 3, 3)).astype(np.float32)
KER_VAR = RNG.uniform(0.0, 0.5, size=KER.shape).astype(np.float32)
VEC = RNG.normal(size=(5, 8)).astype(np.float32)
VEC_VAR = RNG.uniform(0.05, 1.0, size=VEC.shape).astype(np.float32)
W = RNG.normal(size=(8, 3)).astype(np.float32)
W_VAR = RNG.uniform(0.0, 0.5, size=W.shape).astype(np.float32)
B = RNG.normal(size=3).astype(np.float32)


def _both(fn):
    """``fn(nn_module, to_array)`` on both backends, as NumPy."""
    out = []
    for mod, conv in ((nnn, jnp.asarray), (pnn, torch.as_tensor)):
        res = fn(mod, conv)
        if isinstance(res, pfp.Moments):
            res = pfp.Moments(np.asarray(res.mean), np.asarray(res.var))
        else:
            res = np.asarray(res)
        out.append(res)
    return out


def _close(a, b, rtol=1e-5, atol=1e-5):
    if isinstance(a, pfp.Moments):
        np.testing.assert_allclose(a.mean, b.mean, rtol=rtol, atol=atol)
        np.testing.assert_allclose(a.var, b.var, rtol=rtol, atol=atol)
    else:
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


def _conv_np(x, w):
    from scipy.signal import correlate

    n, o = x.shape[0], w.shape[0]
    return np.stack(
        [
            np.stack(
                [
                    sum(
                        correlate(x[i, c], w[j, c], mode="valid")
                        for c in range(x.shape[1])
                    )
                    for j in range(o)
                ]
            )
            for i in range(n)
        ]
    )


def test_dense_values_and_moments():
    vals = _both(lambda m, c: m.dense(c(VEC), c(W), c(B)))
    for v in vals:
        _close(v, VEC @ W + B)
    mom = _both(
        lambda m, c: m.dense(
            m.Moments(c(VEC), c(VEC_VAR)), m.Moments(c(W), c(W_VAR)), c(B)
        )
    )
    ref = pfp.linear_moments(pfp.Moments(VEC, VEC_VAR), W, W_VAR, np.matmul)
    ref = pfp.Moments(ref.mean + B, ref.var)
    for v in mom:
        _close(v, ref)
    # a deterministic input with random weights: the first layer of a PFP network
    first = _both(lambda m, c: m.dense(c(VEC), m.Moments(c(W), c(W_VAR))))
    for v in first:
        _close(v, pfp.Moments(VEC @ W, (VEC**2) @ W_VAR))


def test_conv2d_values_and_moments():
    vals = _both(lambda m, c: m.conv2d(c(IMG), c(KER)))
    for v in vals:
        _close(v, _conv_np(IMG, KER), atol=1e-4)
    mom = _both(
        lambda m, c: m.conv2d(
            m.Moments(c(IMG), c(IMG_VAR)), m.Moments(c(KER), c(KER_VAR))
        )
    )
    ref = pfp.linear_moments(pfp.Moments(IMG, IMG_VAR), KER, KER_VAR, _conv_np)
    for v in mom:
        _close(v, ref, atol=1e-4)


def test_sign_pooling_batch_norm_flatten():
    x = pfp.Moments(IMG, IMG_VAR)
    sp = NUMPY.special
    cases = [
        (
            lambda m, c: m.sign(m.Moments(c(IMG), c(IMG_VAR))),
            pfp.sign_moments(x, xp=np, special=sp),
        ),
        (
            lambda m, c: m.max_pool(m.Moments(c(IMG), c(IMG_VAR))),
            pfp.max_pool_moments(x, xp=np, special=sp),
        ),
        (
            lambda m, c: m.max_pool(m.sign(m.Moments(c(IMG), c(IMG_VAR))), binary=True),
            pfp.binary_max_pool_moments(pfp.sign_moments(x, xp=np, special=sp)),
        ),
        (
            lambda m, c: m.avg_pool(m.Moments(c(IMG), c(IMG_VAR)), 3),
            pfp.avg_pool_moments(x, 3, xp=np),
        ),
        (
            lambda m, c: m.batch_norm(m.Moments(c(VEC), c(VEC_VAR)), 2.0, 0.5),
            pfp.batch_norm_moments(pfp.Moments(VEC, VEC_VAR), 2.0, 0.5, xp=np),
        ),
        (
            lambda m, c: m.flatten(m.Moments(c(IMG), c(IMG_VAR))),
            pfp.Moments(IMG.reshape(3, -1), IMG_VAR.reshape(3, -1)),
        ),
        # values
        (lambda m, c: m.sign(c(IMG)), np.where(IMG >= 0, 1.0, -1.0)),
        (
            lambda m, c: m.max_pool(c(IMG)),
            IMG.reshape(3, 2, 3, 2, 3, 2).max(axis=(3, 5)),
        ),
        (
            lambda m, c: m.avg_pool(c(IMG), 2),
            IMG.reshape(3, 2, 3, 2, 3, 2).mean(axis=(3, 5)),
        ),
        (
            lambda m, c: m.batch_norm(c(VEC)),
            (VEC - VEC.mean(0)) / np.sqrt(VEC.var(0, ddof=1) + 1e-5),
        ),
        (lambda m, c: m.flatten(c(IMG)), IMG.reshape(3, -1)),
    ]
    for fn, ref in cases:
        for v in _both(fn):
            _close(v, ref)


def test_dropout_masks_both_moments_alike():
    x = nnn.Moments(jnp.asarray(VEC), jnp.asarray(VEC_VAR))
    out = nnn.dropout(x, 0.5, rng_key=jax.random.PRNGKey(0))
    keep = np.asarray(out.mean) != 0
    assert 0 < keep.mean() < 1
    np.testing.assert_allclose(np.asarray(out.mean)[keep], 2 * VEC[keep], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(out.var)[keep], 4 * VEC_VAR[keep], rtol=1e-6)
    assert np.all(np.asarray(out.var)[~keep] == 0)
    torch.manual_seed(0)
    t = pnn.dropout(torch.as_tensor(VEC), 0.5)
    kept = t.numpy() != 0
    np.testing.assert_allclose(t.numpy()[kept], 2 * VEC[kept], rtol=1e-6)
    assert nnn.dropout(x, 0.0) is x
    with pytest.raises(ValueError, match="rng_key"):
        nnn.dropout(jnp.asarray(VEC), 0.5)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda m: m.dropout(VEC, 1.0), "p must be"),
        (lambda m: m.max_pool(VEC), "NCHW"),
        (lambda m: m.avg_pool(IMG, 0), "k must be"),
    ],
)
def test_bad_input(call, match):
    for m in (nnn, pnn):
        with pytest.raises(ValueError, match=match):
            call(m)
