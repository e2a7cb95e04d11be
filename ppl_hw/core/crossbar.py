r"""Analog-crossbar non-idealities as backend-neutral functions of pre-drawn noise.

:func:`crossbar_weights` turns the weights of one sample site into the weights a
programmed crossbar returns at a read; :func:`analog_matvec` is the matrix-vector
product of the crossbar's periphery (DAC, ADC, output noise, IR drop). Both follow
IBM aihwkit's inference models where aihwkit has one (cited per step); the rest is
ours and documented. Randomness is passed in as standard draws (see
:func:`draw_shapes`), so the NumPyro and Pyro handlers, fed the same draws, compute
the same values.

**Weights** (a :class:`~ppl_hw.core.device.Device` ``d``, time ``t`` since programming):

1. differential pair with scale :math:`s = (g_\max - g_\min) / \max|w|` per layer or
   per column (aihwkit's ``SinglePairConductanceConverter``):
   :math:`G^\pm = \mathrm{clip}(\pm w s, 0, g_\max) + g_\min`;
2. quantisation of each conductance to ``levels`` values in
   :math:`[g_\min, g_\max]` (straight-through gradient);
3. programming noise :math:`G_p = \max(0, G + \sigma_\mathrm{prog}(G)\,\xi)`:
   ``"pcm"`` aihwkit ``PCMLikeNoiseModel`` (:mod:`ppl_hw.core.pcm`), ``"rram"``
   aihwkit ``ReRamWan2022NoiseModel`` (the t = 1 s polynomial, µS),
   ``"gaussian"`` :math:`\sigma = \sigma_r g_\max`;
4. stuck-at faults: a device is stuck at :math:`g_\min` with probability
   ``stuck_at_0`` and at :math:`g_\max` with probability ``stuck_at_1``; stuck
   devices ignore programming noise and drift;
5. drift :math:`G(t) = G_p\,((t + t_0)/t_0)^{-\nu}` with a per-device exponent ν
   (``"pcm"``: aihwkit's conductance-dependent law; ``"power"``:
   :math:`\nu = |\mathcal N(\mu_\nu, \sigma_\nu)|`);
6. read noise, fresh at every read: ``"pcm"``: aihwkit's accumulated 1/f noise
   :math:`\max(0, G(t) + |G(t)|\,\sigma_\mathrm{read}(t)\,\xi)`; ``"gaussian"``:
   relative σ;
7. read back :math:`w = (G^+ - G^-)/s`, optionally times the global drift
   compensation :math:`\alpha = \overline{|w_\mathrm{prog}|} / \overline{|w_t|}`
   (aihwkit's ``GlobalDriftCompensation`` reads one-hot probes, whose output is the
   weight matrix itself: its readout is the mean absolute weight; we take the
   reference at programming without read noise).

Binary cells (MTJ, ours): the weight is one of two values; each cell is programmed to
the wrong state with probability ``write_error_rate`` (once per chip) and read in
the wrong state with probability ``read_disturb_rate`` (every read).
"""

from __future__ import annotations

import math
from typing import Any

from . import pcm as _pcm
from .backend import Special
from .device import Device

__all__ = [
    "DRAW_KINDS",
    "RRAM_PROG_COEFF",
    "analog_matvec",
    "column_axis",
    "crossbar_weights",
    "draw_shapes",
    "quantize_ste",
    "rram_programming_sigma",
]

DRAW_KINDS = {
    "prog": "normal",
    "nu": "normal",
    "stuck": "uniform",
    "write": "uniform",
    "read": "normal",
    "disturb": "uniform",
    "out": "normal",
}
"""The distribution of each named draw: ``"normal"`` N(0, 1), ``"uniform"`` U(0, 1)."""

RRAM_PROG_COEFF = (0.348, 16.030, -43.853, 45.393, -16.815)
"""aihwkit ``ReRamWan2022NoiseModel`` programming-noise polynomial in g/gmax (µS,
lowest order first; its t = 1 s fit)."""

_IR_DROP_G_RATIO = 1.0 / 0.35 / 5e-6  # aihwkit's ir_drop_g_ratio (wire / device)


def draw_shapes(
    names: tuple[str, ...], shape: tuple[int, ...], binary: bool
) -> dict[str, tuple[int, ...]]:
    """Shapes of the standard draws ``names`` for a site of ``shape``: one per device
    of the differential pair (leading axis 2), or one per cell for binary cells."""
    per_cell = binary
    return {n: tuple(shape) if per_cell else (2, *shape) for n in names}


def column_axis(ndim: int) -> int | None:
    """The output ("column") axis of a weight array: the last of a 2-D ``(in, out)``
    matrix, the first of a convolution kernel ``(out, in, kh, kw)``; ``None`` for
    0-D and 1-D sites (which scale per layer)."""
    if ndim <= 1:
        return None
    return -1 if ndim == 2 else 0


def _abs_max(w: Any, device: Device, *, xp: Any) -> Any:
    a = xp.abs(w)
    axis = column_axis(w.ndim) if device.mapping == "column" else None
    if axis is None:
        return xp.max(a)
    other = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    return xp.max(a, axis=other, keepdims=True)


def quantize_ste(x: Any, step: Any, *, xp: Any, special: Special) -> Any:
    """``round(x / step) * step`` with a straight-through gradient."""
    q = xp.round(x / step) * step
    return q + (x - special.stop_gradient(x))  # forward exactly q, gradient 1


def rram_programming_sigma(g: Any, *, gmax: float, xp: Any) -> Any:
    """aihwkit ``ReRamWan2022NoiseModel`` programming σ (µS) at conductance ``g``."""
    x = g / gmax
    out = 0.0 * x
    for c in reversed(RRAM_PROG_COEFF):
        out = out * x + c
    return out


def _programming_sigma(g: Any, device: Device, *, xp: Any) -> Any:
    if device.programming == "pcm":
        sigma = _pcm.pcm_programming_sigma(g, gmax=device.gmax, xp=xp)
    elif device.programming == "rram":
        sigma = rram_programming_sigma(g, gmax=device.gmax, xp=xp)
    else:
        sigma = device.programming_sigma * device.gmax + 0.0 * g
    return device.programming_scale * sigma


def _drift_nu(g: Any, xi: Any, device: Device, *, xp: Any) -> Any:
    if device.drift == "pcm":
        return _pcm.pcm_drift_nu(
            g, xi, gmax=device.gmax, scale=device.drift_scale, xp=xp
        )
    return device.drift_scale * xp.abs(device.drift_nu_mean + device.drift_nu_std * xi)


def _read(
    g_drift: Any, g_prog: Any, xi: Any, t: float, device: Device, *, xp: Any
) -> Any:
    if device.read_noise == "pcm":
        return _pcm.pcm_read(
            g_drift,
            g_prog,
            xi,
            t,
            gmax=device.gmax,
            t0=device.drift_t0,
            t_read=device.t_read,
            scale=device.read_noise_scale,
            xp=xp,
        )
    sigma = device.read_noise_scale * device.read_noise_sigma
    return xp.clip(g_drift + xp.abs(g_drift) * sigma * xi, 0.0, None)


def _binary_weights(
    w: Any,
    device: Device,
    chip: dict,
    read: dict,
    grid: tuple[float, ...] | None,
    *,
    xp: Any,
    special: Special,
) -> Any:
    if grid is not None:
        lo, hi = grid
        bit = w == hi
    else:  # binarize: sign(w) * mean|w| per site (XNOR-Net style)
        m = special.stop_gradient(xp.mean(xp.abs(w)))
        lo, hi = -m, m
        bit = w >= 0
    if "write" in chip:
        bit = bit != (chip["write"] < device.write_error_rate)
    if "disturb" in read:
        bit = bit != (read["disturb"] < device.read_disturb_rate)
    out = lo + (hi - lo) * xp.astype(bit, w.dtype)
    return out + (w - special.stop_gradient(w))  # forward exactly out, gradient 1


def crossbar_weights(
    w: Any,
    device: Device,
    t: float,
    chip: dict[str, Any],
    read: dict[str, Any],
    *,
    xp: Any,
    special: Special,
    grid: tuple[float, ...] | None = None,
) -> Any:
    """The weights a crossbar programmed with ``w`` returns when read at time ``t``.

    :param w: the site's weights (any shape).
    :param device: the device configuration.
    :param t: seconds since programming, ``>= 0``.
    :param chip: draws fixed per programmed chip, keyed as in
        :attr:`Device.chip_draws <ppl_hw.core.device.Device.chip_draws>`, shapes from
        :func:`draw_shapes`.
    :param read: draws fresh at every read
        (:attr:`~ppl_hw.core.device.Device.read_draws`).
    :param grid: the value grid of a ``DiscreteWeight`` site (sorted), or ``None``.
    """
    if device.binary:
        return _binary_weights(w, device, chip, read, grid, xp=xp, special=special)
    span = device.gmax - device.gmin
    if grid is None:
        amax = special.stop_gradient(_abs_max(w, device, xp=xp))
        amax = xp.where(amax > 0, amax, 1.0)
    else:
        amax = max(abs(v) for v in grid) or 1.0
    s = span / amax
    gs = [
        xp.clip(w * s, 0.0, span) + device.gmin,
        xp.clip(-w * s, 0.0, span) + device.gmin,
    ]
    if device.levels and grid is None:
        step = span / (device.levels - 1)
        gs = [
            quantize_ste(g - device.gmin, step, xp=xp, special=special) + device.gmin
            for g in gs
        ]
    out, ref = [], []
    for i, g in enumerate(gs):
        g_prog = g
        if device.programming:
            sigma = _programming_sigma(special.stop_gradient(g), device, xp=xp)
            g_prog = xp.clip(g + sigma * chip["prog"][i], 0.0, None)
        stuck = None
        if "stuck" in chip:
            u = chip["stuck"][i]
            s0, s1 = device.stuck_at_0, device.stuck_at_0 + device.stuck_at_1
            stuck = u < s1
            g_prog = xp.where(u < s0, device.gmin, xp.where(stuck, device.gmax, g_prog))
        g_t = g_prog
        if device.drift and t > 0:
            nu = _drift_nu(special.stop_gradient(g), chip["nu"][i], device, xp=xp)
            drifted = g_prog * xp.exp(
                -nu * math.log((t + device.drift_t0) / device.drift_t0)
            )
            g_t = drifted if stuck is None else xp.where(stuck, g_prog, drifted)
        if device.read_noise:
            # the noise's size depends on the conductance, its gradient does not
            # matter (and x**0.65 at x = 0 would give 0 * inf = NaN)
            g_t = _read(
                g_t, special.stop_gradient(g_prog), read["read"][i], t, device, xp=xp
            )
        out.append(g_t)
        ref.append(g_prog)
    w_t = (out[0] - out[1]) / s
    if device.drift_compensation:
        w_ref = (ref[0] - ref[1]) / s
        num = xp.mean(xp.abs(w_ref))
        den = xp.mean(xp.abs(w_t))
        w_t = w_t * special.stop_gradient(num / xp.where(den > 0, den, 1.0))
    return w_t


def analog_matvec(
    x: Any,
    w: Any,
    device: Device,
    out_draw: Any | None,
    *,
    xp: Any,
    special: Special,
) -> Any:
    r"""``x @ w`` through the tile periphery of aihwkit's analog MVM, per input row:

    1. noise management: :math:`v = x / \max_j |x_j|` (a zero row gives a zero
       output);
    2. bound management (aihwkit's ``ITERATIVE``, in one pass): the input is scaled
       down by the smallest power of two ``red`` (at most 16) that keeps the
       noise-free output within ``out_bound``;
    3. DAC: :math:`v \leftarrow \mathrm{clip}(\mathrm{round}(v / r_i) r_i, \pm b_i)`,
       :math:`r_i = 2 b_i / (2^{\mathrm{dac\_bits}} - 2)`;
    4. crossbar product :math:`y = v W`;
    5. IR drop (aihwkit's ``applyIrDrop``): with :math:`n` inputs,
       :math:`a_k = \frac{n}{5.714\cdot10^5} \sum_j |\hat w_{jk}|\,|v_j|`
       (:math:`\hat w = w / \max|w|`), :math:`c_k = a_k(a_k(0.05 a_k - 0.2) + 0.5)`,
       :math:`y_k \leftarrow y_k
       - \mathrm{ir\_drop}\; c_k \sum_j w_{jk} v_j (1 - p_j^2)`,
       :math:`p_j = 1 - j/n`;
    6. output noise :math:`y \leftarrow y + \sigma_o \xi` (``out_draw`` is ξ);
    7. ADC: :math:`y \leftarrow \mathrm{clip}(\mathrm{round}(y / r_o) r_o, \pm b_o)`,
       :math:`r_o = 2 b_o / (2^{\mathrm{adc\_bits}} - 2)`;
    8. back to digital units: :math:`y \max|x|\,\mathrm{red}`.

    Rounding has a straight-through gradient. ``x`` has shape ``(..., n)``, ``w``
    shape ``(n, m)``.
    """
    nm = special.stop_gradient(xp.max(xp.abs(x), axis=-1, keepdims=True))
    live = nm > 0
    nm = xp.where(live, nm, 1.0)
    v = x / nm
    red = 1.0
    if device.adc_bits:
        y_est = special.stop_gradient(v @ w)
        peak = xp.max(xp.abs(y_est), axis=-1, keepdims=True) / device.out_bound
        red = 2.0 ** xp.clip(
            xp.ceil(xp.log2(xp.where(peak > 1.0, peak, 1.0))), 0.0, 4.0
        )
        v = v / red
    if device.dac_bits:
        step = 2.0 * device.inp_bound / (2.0**device.dac_bits - 2.0)
        v = xp.clip(
            quantize_ste(v, step, xp=xp, special=special),
            -device.inp_bound,
            device.inp_bound,
        )
    y = v @ w
    if device.ir_drop:
        n = w.shape[0]
        wmax = special.stop_gradient(xp.max(xp.abs(w)))
        a = (n / _IR_DROP_G_RATIO) * (
            xp.abs(v) @ (xp.abs(w) / xp.where(wmax > 0, wmax, 1.0))
        )
        c = a * (a * (0.05 * a - 0.2) + 0.5)
        p = 1.0 - xp.arange(n, dtype=w.dtype) / n
        y = y - device.ir_drop * c * ((v * (1.0 - p * p)) @ w)
    if device.out_noise:
        if out_draw is None:
            raise ValueError("analog_matvec needs out_draw: the device has out_noise")
        y = y + device.out_noise * out_draw
    if device.adc_bits:
        step = 2.0 * device.out_bound / (2.0**device.adc_bits - 2.0)
        y = xp.clip(
            quantize_ste(y, step, xp=xp, special=special),
            -device.out_bound,
            device.out_bound,
        )
    return xp.where(live, y * (nm * red), 0.0)
