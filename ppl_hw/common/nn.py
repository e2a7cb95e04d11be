"""Argument handling shared by both backends' ``nn`` modules."""

from __future__ import annotations

from typing import Any

from ..core.checks import check_number
from .autoguide import check_dropout_p

__all__ = [
    "apply_dropout",
    "as_moments",
    "avg_pool",
    "batch_norm",
    "check_dropout",
    "conv_geometry",
    "flatten",
    "is_moments",
    "linear_pfp",
    "max_pool",
]


def _pair(name: str, value: Any, low: int) -> tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, tuple | list)
        or len(value) != 2
        or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(f"{name} must be an int or a pair of ints, got {value!r}")
    if min(value) < low:
        raise ValueError(f"{name} must be >= {low}, got {value!r}")
    return int(value[0]), int(value[1])


def conv_geometry(stride: Any, padding: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """Validated ``(strides, paddings)`` of a 2-D convolution."""
    return _pair("stride", stride, 1), _pair("padding", padding, 0)


# -- the probabilistic forward pass: the same primitives on Moments -------------


def is_moments(*xs: Any) -> bool:
    """Whether any argument is a :class:`~ppl_hw.core.pfp.Moments`."""
    from ..core.pfp import Moments

    return any(isinstance(x, Moments) for x in xs)


def no_pfp_rule(what: str, *xs: Any) -> None:
    """A ``TypeError`` when a primitive without a PFP rule is given Moments."""
    if is_moments(*xs):
        raise TypeError(
            f"{what} has no probabilistic-forward-pass rule for Moments inputs; "
            "PFP networks use dense/conv2d/sign/batch_norm/max_pool/avg_pool/dropout/"
            "flatten outside the crossbar handler (deploy the most probable network "
            "on the crossbar instead)"
        )


def as_moments(x: Any, xp: Any) -> Any:
    """``x`` as Moments (a plain array is deterministic: variance 0)."""
    from ..core.pfp import Moments

    return x if isinstance(x, Moments) else Moments(x, xp.zeros_like(x))


def linear_pfp(x: Any, w: Any, b: Any, op: Any, bias_view: Any, xp: Any) -> Any:
    """Moments of ``op(x, w) + b`` with any of them Moments (weights and bias
    independent of the input)."""
    from ..core import pfp

    wm = as_moments(w, xp)
    xm = x if is_moments(x) else pfp.Moments(x, None)  # variance 0: skipped
    out = pfp.linear_moments(xm, wm.mean, wm.var, op)
    if b is None:
        return out
    bm = as_moments(b, xp)
    return pfp.Moments(out.mean + bias_view(bm.mean), out.var + bias_view(bm.var))


def check_pool(x: Any, k: int = 2) -> None:
    shape = (x.mean if is_moments(x) else x).shape
    if len(shape) != 4:
        raise ValueError(
            f"pooling expects NCHW images (4 axes), got shape {tuple(shape)}"
        )
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")


def max_pool(x: Any, binary: bool, xp: Any, special: Any) -> Any:
    """2×2 max pooling (stride 2, NCHW) of arrays or Moments (``binary``: the
    exact rule for ±1 activations)."""
    from ..core import pfp

    check_pool(x)
    if is_moments(x):
        if binary:
            return pfp.binary_max_pool_moments(x)
        return pfp.max_pool_moments(x, xp=xp, special=special)
    q = [x[..., i::2, j::2] for i in (0, 1) for j in (0, 1)]
    h, w = min(a.shape[-2] for a in q), min(a.shape[-1] for a in q)
    q = [a[..., :h, :w] for a in q]
    return xp.maximum(xp.maximum(q[0], q[1]), xp.maximum(q[2], q[3]))


def avg_pool(x: Any, k: int, xp: Any) -> Any:
    """``k`` x ``k`` average pooling of NCHW arrays or Moments."""
    from ..core import pfp

    check_pool(x, k)
    out = pfp.avg_pool_moments(as_moments(x, xp), k, xp=xp)
    return out if is_moments(x) else out.mean


def batch_norm(x: Any, gamma: Any, beta: Any, eps: float, xp: Any) -> Any:
    """Batch normalisation over axis 0 with the batch's statistics (variance with
    ``n - 1``, as the PFP rule); on Moments the activations' variance counts."""
    from ..core import pfp

    eps = check_number("eps", eps, low=0)
    n = (x.mean if is_moments(x) else x).shape[0]
    if n < 2:
        raise ValueError(
            f"batch_norm normalises with the batch's own statistics and needs a batch "
            f"of at least 2 inputs (variance with n - 1), got x of shape "
            f"{tuple((x.mean if is_moments(x) else x).shape)}; at test time of one "
            "input, normalise with stored statistics instead"
        )
    out = pfp.batch_norm_moments(as_moments(x, xp), gamma, beta, eps=eps, xp=xp)
    return out if is_moments(x) else out.mean


def flatten(x: Any, xp: Any) -> Any:
    """Reshape to ``(N, -1)``; Moments reshape both fields (and keep their class:
    flattened ±1 moments are still ±1 moments)."""
    if is_moments(x):
        n = x.mean.shape[0]
        return type(x)(xp.reshape(x.mean, (n, -1)), xp.reshape(x.var, (n, -1)))
    return xp.reshape(x, (x.shape[0], -1))


def check_dropout(p: Any) -> float:
    """``nn.dropout``'s ``p``: a number in [0, 1)."""
    return check_dropout_p(p)


def apply_dropout(x: Any, keep: Any, p: float) -> Any:
    """Inverted dropout with the 0/1 ``keep`` mask, on arrays or Moments."""
    from ..core import pfp

    mask = keep / (1.0 - p)
    return pfp.dropout_moments(x, mask) if is_moments(x) else x * mask
