"""The PyTorch array namespace and special-function shim for the core."""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.torch as xp
import torch

from ..core.backend import Backend, _uniform_knot

__all__ = ["BACKEND", "TorchSpecial"]

_SQRT_HALF = math.sqrt(0.5)


class TorchSpecial:
    """:class:`~ppl_hw.core.backend.Special` for torch tensors (``torch.special``)."""

    erf = staticmethod(torch.special.erf)

    @staticmethod
    def ndtr(x: Any) -> Any:
        # torch.special.ndtr underflows to 0 below x = -8 (float64); erfc keeps the
        # relative precision of the lower tail.
        return 0.5 * torch.special.erfc(x * -_SQRT_HALF)

    ndtri = staticmethod(torch.special.ndtri)
    log_ndtr = staticmethod(torch.special.log_ndtr)

    @staticmethod
    def logsumexp(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        if axis is None:
            out = torch.logsumexp(x.reshape(-1), dim=0)
            return out.reshape((1,) * x.ndim) if keepdims else out
        return torch.logsumexp(x, dim=axis, keepdim=keepdims)

    @staticmethod
    def interp_uniform(x: Any, x0: float, dx: float, fp: Any) -> Any:
        k, frac = _uniform_knot(xp, x, x0, dx, fp.shape[-1])
        i = k.long()
        lo = fp[i]
        return lo + (fp[i + 1] - lo) * frac


BACKEND = Backend("pyro", xp, TorchSpecial())
