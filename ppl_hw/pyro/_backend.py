"""The PyTorch array namespace and special-function shim for the core."""

from __future__ import annotations

import math
from typing import Any

import array_api_compat.torch as xp
import torch

from ..common.autoguide import nonfinite_guide_error
from ..core.backend import Backend, SpecialBase

__all__ = ["BACKEND", "TorchSpecial", "guard_finite"]

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


def guard_finite(guide: str, values: dict[tuple[str, str], Any]) -> None:
    """Raise :func:`~ppl_hw.common.autoguide.nonfinite_guide_error` when one of
    ``values`` (``{(site, parameter): tensor}``, what a guide hands its sample sites)
    is not finite: SVI stops at the first step after a NaN loss instead of training
    on NaN. One host sync per call; skipped while ``torch.jit`` traces (the traced
    ELBO keeps Pyro's own NaN warning)."""
    if not values or torch.jit.is_tracing():
        return
    with torch.no_grad():
        flags = torch.stack([torch.isfinite(v).all() for v in values.values()])
        if bool(flags.all()):
            return
        bad = [
            (site, what, int((~torch.isfinite(v)).sum()), v.numel())
            for (site, what), v in values.items()
            if not bool(torch.isfinite(v).all())
        ]
    raise nonfinite_guide_error(guide, bad)
