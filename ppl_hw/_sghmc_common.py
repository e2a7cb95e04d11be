"""Backend-neutral parts of the SGHMC kernels: ``SpikeSlabEM`` (a validated
configuration, the same object on both backends) and argument checks."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .core import sghmc as core

__all__ = [
    "SpikeSlabEM",
    "check_positive",
    "configure",
    "ke_fan_kernel",
    "select_plate",
]


def check_positive(name: str, v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float) or not v > 0:
        raise ValueError(f"{name} must be a number > 0, got {v!r}")
    return float(v)


class SpikeSlabEM:
    r"""Spike-and-slab EM inside :class:`SGHMC` (Ke & Fan 2022; see
    :mod:`ppl_hw.core.sghmc`).

    Every ``every`` steps after ``warmup`` steps, for each latent site with a
    :class:`~ppl_hw.numpyro.distributions.SpikeAndSlab` prior: the E-step computes each
    group's slab probability :math:`p^*_g` (the posterior one, or the paper's rule
    ``mean(w_g^2) >= soft_threshold``), the site's spike-and-slab log density in the
    potential is **replaced** by the Gaussian surrogate
    :math:`-\tfrac12\sum_g \lambda_g \lVert w_g\rVert^2`,
    :math:`\lambda_g = p^*_g/\sigma_1^2 + (1-p^*_g)/\sigma_0^2`, groups with
    ``mean(w_g^2) < hard_threshold`` are pruned for good (a mask in the kernel state),
    and the M-step sets :math:`\pi \leftarrow \mathrm{mean}_g\,p^*_g`.

    :param every: steps between EM steps (e.g. the steps per epoch).
    :param warmup: steps before the first EM step (the surrogate is not used before).
    :param soft_threshold: ``None`` (posterior :math:`p^*_g`) or the paper's threshold
        on ``mean(w_g^2)``.
    :param hard_threshold: ``None`` (no pruning) or the pruning threshold on
        ``mean(w_g^2)``; must be below ``soft_threshold`` when both are given.
    :param groups: ``"input"`` (a dense weight ``(in, out)``: one group per input
        unit), ``"kernel"`` (a conv weight ``(out, in, kh, kw)``: one group per kernel)
        or ``None`` (each weight alone).
    :param update_pi: run the M-step for :math:`\pi` (else keep the prior's).
    """

    def __init__(
        self,
        *,
        every: int = 1,
        warmup: int = 0,
        soft_threshold: float | None = None,
        hard_threshold: float | None = None,
        groups: str | None = "input",
        update_pi: bool = True,
    ):
        for name, v in (("every", every), ("warmup", warmup)):
            if isinstance(v, bool) or not isinstance(v, int | np.integer):
                raise TypeError(f"{name} must be an int, got {v!r}")
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        if warmup < 0:
            raise ValueError(f"warmup must be >= 0, got {warmup}")
        for name, v in (
            ("soft_threshold", soft_threshold),
            ("hard_threshold", hard_threshold),
        ):
            if v is not None and (
                isinstance(v, bool) or not isinstance(v, int | float) or not v > 0
            ):
                raise ValueError(f"{name} must be None or a number > 0, got {v!r}")
        if (
            soft_threshold is not None
            and hard_threshold is not None
            and not hard_threshold < soft_threshold
        ):
            raise ValueError(
                "thresholds out of order: hard_threshold must be below "
                f"soft_threshold, got hard_threshold={hard_threshold!r}, "
                f"soft_threshold={soft_threshold!r}"
            )
        if groups not in core.GROUPINGS:
            raise ValueError(
                f"groups must be one of {list(core.GROUPINGS)}, got {groups!r}"
            )
        self.every, self.warmup = int(every), int(warmup)
        self.soft_threshold, self.hard_threshold = soft_threshold, hard_threshold
        self.groups, self.update_pi = groups, bool(update_pi)

    def __repr__(self) -> str:
        return (
            f"SpikeSlabEM(every={self.every}, warmup={self.warmup}, "
            f"soft_threshold={self.soft_threshold}, "
            f"hard_threshold={self.hard_threshold}, groups={self.groups!r})"
        )


def configure(
    kernel: Any,
    model: Any,
    *,
    step_size: Any,
    temperature: Any,
    momentum_decay: Any,
    schedule: Any,
    num_cycles: Any,
    num_steps: Any,
    preconditioner: Any,
    em: Any,
    init_strategy: Any,
    rmsprop_beta: Any,
    rmsprop_delta: Any,
    ke_fan_eta: Any,
) -> None:
    """Validate the ``SGHMC`` arguments shared by both backends and set them on
    ``kernel``, with the state both backends fill at set-up."""
    if not callable(model):
        raise TypeError(f"model must be callable, got {model!r}")
    step_size = check_positive("step_size", step_size)
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, int | float)
        or not temperature >= 0
    ):
        raise ValueError(f"temperature must be a number >= 0, got {temperature!r}")
    if (
        isinstance(momentum_decay, bool)
        or not isinstance(momentum_decay, int | float)
        or not 0 < momentum_decay <= 1
    ):
        raise ValueError(f"momentum_decay must be in (0, 1], got {momentum_decay!r}")
    if schedule not in core.SCHEDULES:
        raise ValueError(
            f"schedule must be one of {list(core.SCHEDULES)}, got {schedule!r}"
        )
    if schedule == "cyclical":
        if (
            isinstance(num_steps, bool)
            or not isinstance(num_steps, int)
            or (num_steps < 1)
        ):
            raise ValueError(
                "schedule='cyclical' needs num_steps (an int >= 1, the warm-up "
                f"plus sample steps), got {num_steps!r}"
            )
        if (
            isinstance(num_cycles, bool)
            or not isinstance(num_cycles, int)
            or (not 1 <= num_cycles <= num_steps)
        ):
            raise ValueError(
                f"num_cycles must be an int in [1, num_steps], got {num_cycles!r}"
            )
    if preconditioner not in core.PRECONDITIONERS:
        raise ValueError(
            f"preconditioner must be one of {list(core.PRECONDITIONERS)}, "
            f"got {preconditioner!r}"
        )
    if em is not None and not isinstance(em, SpikeSlabEM):
        raise TypeError(f"em must be a SpikeSlabEM or None, got {em!r}")
    kernel.step_size = step_size
    kernel._model = model
    kernel.temperature = float(temperature)
    kernel.momentum_decay = float(momentum_decay)
    kernel.schedule, kernel.num_cycles, kernel.num_steps = (
        schedule,
        num_cycles,
        num_steps,
    )
    kernel.preconditioner, kernel.em = preconditioner, em
    kernel.init_strategy = init_strategy
    kernel.rmsprop_beta = check_positive("rmsprop_beta", rmsprop_beta)
    kernel.rmsprop_delta = check_positive("rmsprop_delta", rmsprop_delta)
    kernel.ke_fan_eta = check_positive("ke_fan_eta", ke_fan_eta)
    kernel._ke_fan_params = None
    kernel._plate = None
    kernel._ss_sites = {}


def select_plate(
    plates: list[tuple[str, int, int]], em: Any, has_spike_slab: bool
) -> tuple[str, int, int] | None:
    """The model's one subsampled plate ``(name, size, subsample_size)`` or
    ``None``; refuses a subsample larger than the data, several subsampled plates and
    ``em=`` without SpikeAndSlab sites."""
    for name, size, sub in plates:
        if sub > size:
            raise ValueError(
                f"plate {name!r}: subsample_size {sub} is larger than the data "
                f"size {size}"
            )
    if len(plates) > 1:
        raise ValueError(
            "SGHMC supports one subsampled plate; the model has "
            f"{[p[0] for p in plates]}"
        )
    if em is not None and not has_spike_slab:
        raise ValueError(
            "em=SpikeSlabEM(...) needs latent sites with SpikeAndSlab priors; the "
            "model has none"
        )
    return plates[0] if plates else None


def ke_fan_kernel(
    cls: Any,
    model: Any,
    *,
    num_data: int,
    c2: float = 0.01,
    t: float | None = None,
    beta1: float = 0.1,
    beta2: float = 1.0,
    eta: float = 0.1,
    **kwargs: Any,
) -> Any:
    """``cls.ke_fan(...)`` on either backend (the mapping is in the NumPyro
    docstring)."""
    n = int(num_data)
    if n < 1:
        raise ValueError(f"num_data must be >= 1, got {num_data!r}")
    c2 = check_positive("c2", c2)
    t = n**-0.5 if t is None else float(t)
    if not 0 <= beta1 < 1:
        raise ValueError(f"beta1 must be in [0, 1), got {beta1!r}")
    step_size = beta2 * c2 / n
    temperature = (
        (2 + 2 * beta1**2) * math.sqrt(c2) * t * t * n / (2 * (1 - beta1) * beta2)
    )
    kernel = cls(
        model,
        step_size=step_size,
        temperature=temperature,
        momentum_decay=1 - beta1,
        preconditioner="ke_fan",
        ke_fan_eta=eta,
        **kwargs,
    )
    kernel._ke_fan_params = dict(c2=c2, t=t, n=n)
    return kernel
