r"""Network primitives on arrays, backend-neutral: signs with a straight-through
gradient and binary dense layers (Courbariaux et al.'s BinaryConnect / XNOR-Net
style, used by the scale-dropout networks of Ahmed et al. 2023).

.. math::

    \mathrm{sign}(x) = \begin{cases} +1 & x \ge 0 \\ -1 & x < 0 \end{cases},
    \qquad \frac{\partial\,\mathrm{sign}}{\partial x} := \mathbb 1\{|x| \le 1\}
    \quad\text{(straight-through, clipped)},

    \mathrm{binary\_dense}(x, W, \alpha) = \alpha \odot \big(x\,\mathrm{sign}(W)\big).
"""

from __future__ import annotations

from typing import Any

from .backend import Special

__all__ = ["sign_ste"]


def sign_ste(x: Any, *, xp: Any, special: Special) -> Any:
    """``sign(x)`` in {-1, +1} (0 maps to +1) with the clipped straight-through
    gradient; the forward value is exactly ±1."""
    value = xp.where(x >= 0, 1.0, -1.0)
    ste = xp.clip(x, -1.0, 1.0)
    return value + (ste - special.stop_gradient(ste))
