"""Backend-neutral parts of the SGHMC kernels: ``SpikeSlabEM`` (a validated
configuration, the same object on both backends) and argument checks."""

from __future__ import annotations

import math
from typing import Any

from ..core import sghmc as core
from ..core.checks import check_choice, check_int, check_number

__all__ = [
    "SpikeSlabEM",
    "check_positive",
    "configure",
    "discrete_site_error",
    "ke_fan_kernel",
    "ke_fan_temperature",
    "nonfinite_error",
    "select_plate",
    "step_settings",
]


def check_positive(name: str, v: Any) -> float:
    """A finite number > 0, as a float."""
    return check_number(name, v, low=0.0, open_low=True)


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
        every = check_int("every", every, low=1)
        warmup = check_int("warmup", warmup, low=0)
        for name, v in (
            ("soft_threshold", soft_threshold),
            ("hard_threshold", hard_threshold),
        ):
            check_number(name, v, low=0.0, open_low=True, allow_none=True)
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
        check_choice("groups", groups, core.GROUPINGS)
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
    temperature = check_number("temperature", temperature, low=0.0)
    momentum_decay = check_number(
        "momentum_decay",
        momentum_decay,
        low=0.0,
        high=1.0,
        open_low=True,
        interval=True,
    )
    check_choice("schedule", schedule, core.SCHEDULES)
    if schedule == "cyclical":
        if num_steps is None:
            raise ValueError(
                "schedule='cyclical' needs num_steps (an int >= 1, the warm-up "
                "plus sample steps), got None"
            )
        num_steps = check_int("num_steps", num_steps, low=1)
        num_cycles = check_int("num_cycles", num_cycles, low=1, high=num_steps)
    check_choice("preconditioner", preconditioner, core.PRECONDITIONERS)
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
    # V <- beta V + (1 - beta) g^2: an average only for beta in [0, 1)
    kernel.rmsprop_beta = check_number(
        "rmsprop_beta", rmsprop_beta, low=0.0, high=1.0, open_high=True, interval=True
    )
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
    n, c2, t, beta1, beta2 = _ke_fan_args(num_data, c2, t, beta1, beta2)
    eta = check_positive("eta", eta)
    step_size = beta2 * c2 / n
    temperature = _ke_fan_temperature(n, c2, t, beta1, beta2)
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


def _ke_fan_args(
    num_data: Any, c2: Any, t: Any, beta1: Any, beta2: Any
) -> tuple[int, float, float, float, float]:
    n = check_int("num_data", num_data, low=1)
    c2 = check_positive("c2", c2)
    t = n**-0.5 if t is None else check_positive("t", t)
    beta1 = check_number(
        "beta1", beta1, low=0.0, high=1.0, open_high=True, interval=True
    )
    return n, c2, t, beta1, check_positive("beta2", beta2)


def _ke_fan_temperature(
    n: int, c2: float, t: float, beta1: float, beta2: float
) -> float:
    return (2 + 2 * beta1**2) * math.sqrt(c2) * t * t * n / (2 * (1 - beta1) * beta2)


def ke_fan_temperature(
    num_data: int,
    *,
    c2: float = 0.01,
    t: float | None = None,
    beta1: float = 0.1,
    beta2: float = 1.0,
) -> float:
    """The posterior temperature of Ke & Fan's parameterisation
    (:math:`(2 + 2\\beta_1^2)\\,C T^2 N / (2 (1-\\beta_1) \\beta_2)`, the one
    ``SGHMC.ke_fan`` sets); with their default :math:`T = N^{-1/2}` it does not depend
    on ``num_data``: 0.1122 at :math:`C^2 = 0.01`."""
    return _ke_fan_temperature(*_ke_fan_args(num_data, c2, t, beta1, beta2))


def step_settings(
    kernel: Any, spike_slab: dict, num_weights: int
) -> core.SGHMCSettings:
    """The :class:`~ppl_hw.core.sghmc.SGHMCSettings` of a configured kernel (either
    backend), once its set-up has found the plate, the spike-and-slab sites
    (``{site: (prob, spike_scale, slab_scale)}``, host arrays of the site's shape)
    and the number of weights."""
    n_data = kernel._plate[1] if kernel._plate else 1
    kf = kernel._ke_fan_params or dict(t=1.0, n=n_data)
    return core.SGHMCSettings(
        step_size=kernel.step_size,
        schedule=kernel.schedule,
        num_steps=kernel.num_steps,
        num_cycles=kernel.num_cycles,
        momentum_decay=kernel.momentum_decay,
        temperature=kernel.temperature,
        preconditioner=kernel.preconditioner,
        rmsprop_beta=kernel.rmsprop_beta,
        rmsprop_delta=kernel.rmsprop_delta,
        ke_fan_eta=kernel.ke_fan_eta,
        ke_fan=(kf["t"], kf["n"]),
        num_data=n_data,
        num_weights=num_weights,
        em=kernel.em,
        spike_slab=spike_slab,
    )


def nonfinite_error(step: int, sites: list[str]) -> FloatingPointError:
    """The error both kernels raise when a step leaves non-finite values."""
    return FloatingPointError(
        f"SGHMC: non-finite values at step {step} in site(s) {sites}; "
        "lower step_size (or check the model's log density)"
    )


def discrete_site_error(name: str, fn: Any) -> ValueError:
    """The error both kernels raise for a discrete latent site."""
    return ValueError(
        f"SGHMC needs continuous latent sites; site {name!r} is discrete "
        f"({type(fn).__name__})"
    )
