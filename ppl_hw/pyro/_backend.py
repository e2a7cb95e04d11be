"""The PyTorch array namespace and special-function shim for the core."""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.torch as xp
import torch

from ..core.backend import Backend, SpecialBase

__all__ = ["BACKEND", "TorchSpecial"]

_SQRT_HALF = math.sqrt(0.5)


class TorchSpecial(SpecialBase):
    """:class:`~ppl_hw.core.backend.Special` for torch tensors (``torch.special``)."""

    xp = xp
    erf = staticmethod(torch.special.erf)
    ndtri = staticmethod(torch.special.ndtri)
    log_ndtr = staticmethod(torch.special.log_ndtr)

    @staticmethod
    def ndtr(x: Any) -> Any:
        # torch.special.ndtr underflows to 0 below x = -8 (float64); erfc keeps the
        # relative precision of the lower tail.
        return 0.5 * torch.special.erfc(x * -_SQRT_HALF)

    @staticmethod
    def logsumexp(x: Any, axis: int | None = None, keepdims: bool = False) -> Any:
        if axis is None:
            out = torch.logsumexp(x.reshape(-1), dim=0)
            return out.reshape((1,) * x.ndim) if keepdims else out
        return torch.logsumexp(x, dim=axis, keepdim=keepdims)

    @staticmethod
    def take(table: Any, index: Any) -> Any:
        return table[torch.as_tensor(index).long()]

    @staticmethod
    def searchsorted(sorted_table: Any, values: Any) -> Any:
        values = torch.as_tensor(values, dtype=sorted_table.dtype)
        return torch.searchsorted(sorted_table, values.contiguous(), right=True)

    @staticmethod
    def stop_gradient(x: Any) -> Any:
        return x.detach()


BACKEND = Backend("pyro", xp, TorchSpecial())
