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
5. re-derivation (aihwkit's order: ``apply_drift_noise`` converts the *programmed*
   weights to conductances again): :math:`w_p = (G_p^+ - G_p^-)/s`, then
   :math:`G_2^\pm = \mathrm{clip}(\pm w_p s_2, 0, g_\max) + g_\min` with
   :math:`s_2 = (g_\max - g_\min)/\max|w_p|` (skipped when neither drift nor read
   noise acts: then the read is :math:`w_p`);
6. drift :math:`G(t) = G_2\,((t + t_0)/t_0)^{-\nu}` with a per-device exponent ν
   drawn at programming from the target conductance (``"pcm"``: aihwkit's
   conductance-dependent law; ``"power"``: :math:`\nu = |\mathcal N(\mu_\nu,
   \sigma_\nu)|`);
7. read noise, fresh at every read: ``"pcm"``: aihwkit's accumulated 1/f noise
   :math:`\max(0, G(t) + |G(t)|\,\sigma_\mathrm{read}(G_2, t)\,\xi)`;
   ``"gaussian"``: relative σ;
8. read back :math:`w = (G^+ - G^-)/s_2`, optionally times the global drift
   compensation :math:`\alpha = \overline{|w_p|} / \overline{|w_t|}` (aihwkit's
   ``GlobalDriftCompensation`` reads one-hot probes, whose output is the weight
   matrix itself: its readout is the mean absolute weight; we take the reference at
   programming without read noise).

**Tiles.** A site is viewed as the ``(inputs, outputs)`` matrix a crossbar holds
(its ``layout``, see :data:`LAYOUTS`); a matrix larger than
``max_input_size`` × ``max_output_size`` is split into tiles and steps 1–8 run per
tile: each tile has its own scale and its own drift compensation, and
:func:`analog_matvec` its own periphery — as aihwkit's ``TileModuleArray``.

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
    "LAYOUTS",
    "RRAM_PROG_COEFF",
    "analog_matvec",
    "crossbar_weights",
    "default_layout",
    "draw_shapes",
    "eager_tile_matvec",
    "from_matrix",
    "num_tiles",
    "out_draw_shape",
    "quantize_ste",
    "rram_programming_sigma",
    "tile_bounds",
    "tile_matvec",
    "tile_matvec_first_pass",
    "to_matrix",
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


LAYOUTS = ("io", "oi", "kio")
"""How a weight site's axes map onto the rows (inputs) and columns (outputs) of a
crossbar: ``"io"`` — the last axis is the output, the others the input (a dense
``(in, out)`` matrix: ppl_hw, flax, ``jnp`` ``x @ w``); ``"oi"`` — the first axis is
the output, the others the input in ``(C, *kernel)`` order (``torch.nn.Linear``
``(out, in)``, ``OIHW`` kernels of ppl_hw, torch and equinox); ``"kio"`` — kernel
axes first, then input, then output (flax's ``HWIO`` kernels)."""


def default_layout(ndim: int) -> str | None:
    """The layout assumed for a site no routed layer has claimed: ``"io"`` for 2-D,
    ``"oi"`` for kernels (3-D and more), ``None`` for 0-D and 1-D sites (one tile)."""
    if ndim <= 1:
        return None
    return "io" if ndim == 2 else "oi"


def to_matrix(w: Any, layout: str, *, xp: Any) -> Any:
    """View the weights ``w`` as the ``(inputs, outputs)`` matrix a crossbar holds;
    the input order is that of the im2col patches, ``(C, *kernel)``."""
    if layout == "io":
        return xp.reshape(w, (-1, w.shape[-1]))
    if layout == "oi":
        return xp.permute_dims(xp.reshape(w, (w.shape[0], -1)), (1, 0))
    if layout == "kio":
        k = w.ndim - 2
        perm = (k, *range(k), k + 1)
        return xp.reshape(xp.permute_dims(w, perm), (-1, w.shape[-1]))
    raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")


def from_matrix(m: Any, layout: str, shape: tuple[int, ...], *, xp: Any) -> Any:
    """The inverse of :func:`to_matrix` for a site of ``shape``."""
    if layout == "io":
        return xp.reshape(m, shape)
    if layout == "oi":
        return xp.reshape(xp.permute_dims(m, (1, 0)), shape)
    k = len(shape) - 2
    moved = xp.reshape(m, (shape[-2], *shape[:k], shape[-1]))
    inverse = (*range(1, k + 1), 0, k + 1)
    return xp.permute_dims(moved, inverse)


def tile_bounds(n: int, size: int | None) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` of the tiles covering ``n`` rows (or columns) with
    at most ``size`` each (``None``: one tile)."""
    if size is None or n <= size:
        return [(0, n)]
    return [(i, min(i + size, n)) for i in range(0, n, size)]


def num_tiles(shape: tuple[int, ...], layout: str | None, device: Device) -> int:
    """How many tiles hold a site of ``shape`` in ``layout``."""
    if layout is None or len(shape) < 2:
        return 1
    out = shape[0] if layout == "oi" else shape[-1]
    rows = math.prod(shape) // max(out, 1)
    return len(tile_bounds(rows, device.max_input_size)) * len(
        tile_bounds(out, device.max_output_size)
    )


def _column_axis(ndim: int, layout: str | None) -> int | None:
    if ndim <= 1 or layout is None:
        return None
    return 0 if layout == "oi" else -1


def _abs_max(w: Any, device: Device, axis: int | None, *, xp: Any) -> Any:
    a = xp.abs(w)
    if device.mapping != "column" or axis is None:
        return xp.max(a)
    other = tuple(i for i in range(w.ndim) if i != axis % w.ndim)
    return xp.max(a, axis=other, keepdims=True)


def _scale(w: Any, device: Device, axis: Any, grid: Any, *, xp: Any, special: Any):
    """``s = span / max|w|`` (per layer/tile, or per column)."""
    if grid is not None:
        return (device.gmax - device.gmin) / (max(abs(v) for v in grid) or 1.0)
    amax = special.stop_gradient(_abs_max(w, device, axis, xp=xp))
    return (device.gmax - device.gmin) / xp.where(amax > 0, amax, 1.0)


def _pair(w: Any, s: Any, device: Device, *, xp: Any) -> list:
    span = device.gmax - device.gmin
    return [
        xp.clip(w * s, 0.0, span) + device.gmin,
        xp.clip(-w * s, 0.0, span) + device.gmin,
    ]


def _tile_weights(
    w: Any,
    device: Device,
    t: float,
    chip: dict[str, Any],
    read: dict[str, Any],
    axis: int | None,
    grid: Any,
    *,
    xp: Any,
    special: Special,
) -> Any:
    """The chip's weights of one tile (``chip``/``read`` draws have a leading axis 2:
    the + and the − device)."""
    s = _scale(w, device, axis, grid, xp=xp, special=special)
    gs = _pair(w, s, device, xp=xp)
    if device.levels and grid is None:
        step = (device.gmax - device.gmin) / (device.levels - 1)
        gs = [
            quantize_ste(g - device.gmin, step, xp=xp, special=special) + device.gmin
            for g in gs
        ]
    progs, stucks = [], []
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
        progs.append(g_prog)
        stucks.append(stuck)
    w_prog = (progs[0] - progs[1]) / s
    drifts = bool(device.drift and t > 0)
    if not (drifts or device.read_noise):
        return w_prog
    # aihwkit's order: the programmed weights are converted to conductances again,
    # rescaled by their own maximum, before drift and read noise act on them
    s2 = _scale(w_prog, device, axis, None, xp=xp, special=special)
    if device.gmin == 0.0:
        # with gmin = 0 one device of each re-derived pair is exactly 0 and stays 0
        # through drift (0 x factor) and read noise (0 + |0| sigma xi, clipped at
        # 0): only the other one, the device "on" for the sign of w_p, is computed
        # (with its own draws and target): the same values, half the logarithms
        # and exponentials
        on = w_prog > 0

        def pick(pair: Any) -> Any:
            return xp.where(on, pair[0], pair[1])

        g2 = xp.clip(xp.abs(w_prog) * s2, 0.0, device.gmax)
        g_t = g2
        if drifts:
            nu = _drift_nu(
                special.stop_gradient(pick(gs)), pick(chip["nu"]), device, xp=xp
            )
            drifted = g2 * xp.exp(
                -nu * math.log((t + device.drift_t0) / device.drift_t0)
            )
            g_t = drifted if stucks[0] is None else xp.where(pick(stucks), g2, drifted)
        if device.read_noise:
            g_t = _read(
                g_t, special.stop_gradient(g2), pick(read["read"]), t, device, xp=xp
            )
        w_t = (xp.where(on, g_t, 0.0) - xp.where(on, 0.0, g_t)) / s2
        return _compensate(w_t, w_prog, device, xp=xp, special=special)
    out = []
    for i, g2 in enumerate(_pair(w_prog, s2, device, xp=xp)):
        g_t = g2
        if drifts:
            nu = _drift_nu(special.stop_gradient(gs[i]), chip["nu"][i], device, xp=xp)
            drifted = g2 * xp.exp(
                -nu * math.log((t + device.drift_t0) / device.drift_t0)
            )
            g_t = drifted if stucks[i] is None else xp.where(stucks[i], g2, drifted)
        if device.read_noise:
            # the noise's size depends on the conductance, its gradient does not
            # matter (and x**0.65 at x = 0 would give 0 * inf = NaN)
            g_t = _read(
                g_t, special.stop_gradient(g2), read["read"][i], t, device, xp=xp
            )
        out.append(g_t)
    w_t = (out[0] - out[1]) / s2
    return _compensate(w_t, w_prog, device, xp=xp, special=special)


def _compensate(w_t: Any, w_prog: Any, device: Device, *, xp: Any, special: Any):
    if device.drift_compensation:
        num = xp.mean(xp.abs(w_prog))
        den = xp.mean(xp.abs(w_t))
        w_t = w_t * special.stop_gradient(num / xp.where(den > 0, den, 1.0))
    return w_t


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
    layout: str | None = "default",
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
    :param layout: how the site's axes map onto the crossbar's rows and columns (one
        of :data:`LAYOUTS`; ``"default"``: :func:`default_layout`; ``None``: the
        whole site is one tile with one scale). A site larger than one tile
        (``device.max_input_size`` × ``max_output_size``) is split into tiles, each
        with its own scale and drift compensation.
    """
    if device.binary:
        return _binary_weights(w, device, chip, read, grid, xp=xp, special=special)
    if layout == "default":
        layout = default_layout(w.ndim)
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {list(LAYOUTS)}, got {layout!r}")
    axis = _column_axis(w.ndim, layout)
    if num_tiles(tuple(w.shape), layout, device) == 1:
        return _tile_weights(
            w, device, t, chip, read, axis, grid, xp=xp, special=special
        )
    assert layout is not None
    shape = tuple(w.shape)

    def mat(a: Any) -> Any:
        return to_matrix(a, layout, xp=xp)

    m = mat(w)
    cm = {k: [mat(v[0]), mat(v[1])] for k, v in chip.items()}
    rm = {k: [mat(v[0]), mat(v[1])] for k, v in read.items()}
    rows = []
    for r0, r1 in tile_bounds(m.shape[0], device.max_input_size):
        cols = []
        for c0, c1 in tile_bounds(m.shape[1], device.max_output_size):

            def cut(d: dict, r0: int = r0, r1: int = r1, c0: int = c0, c1: int = c1):
                return {
                    k: [v[0][r0:r1, c0:c1], v[1][r0:r1, c0:c1]] for k, v in d.items()
                }

            cols.append(
                _tile_weights(
                    m[r0:r1, c0:c1],
                    device,
                    t,
                    cut(cm),
                    cut(rm),
                    -1,
                    grid,
                    xp=xp,
                    special=special,
                )
            )
        rows.append(xp.concat(cols, axis=1))
    return from_matrix(xp.concat(rows, axis=0), layout, shape, xp=xp)


def out_draw_shape(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], device: Device
) -> tuple[int, ...]:
    """Shape of the output-noise draw of :func:`analog_matvec`: one standard normal
    per output of ``x @ w`` and per row of tiles, ``(R, *batch, m)``."""
    r = len(tile_bounds(w_shape[-2], device.max_input_size))
    if len(x_shape) == 1:
        return (r, *w_shape[:-2], w_shape[-1])
    a, b = x_shape[:-2], w_shape[:-2]
    n = max(len(a), len(b))
    a, b = (1,) * (n - len(a)) + a, (1,) * (n - len(b)) + b
    batch = tuple(max(i, j) if 1 in (i, j) else i for i, j in zip(a, b, strict=True))
    return (r, *batch, x_shape[-2], w_shape[-1])


def _tile_matvec(
    x: Any,
    w: Any,
    device: Device,
    draw: Any,
    *,
    xp: Any,
    special: Any,
    first_pass: bool = False,
) -> Any:
    nm = special.stop_gradient(xp.max(xp.abs(x), axis=-1, keepdims=True))
    live = nm > 0
    nm = xp.where(live, nm, 1.0)
    v = x / nm
    red = 1.0
    if device.adc_bits and not first_pass:
        y_est = special.stop_gradient(v @ w)
        peak = xp.max(xp.abs(y_est), axis=-1, keepdims=True) / device.out_bound
        red = 2.0 ** xp.clip(
            xp.ceil(xp.log2(xp.where(peak > 1.0, peak, 1.0))), 0.0, 4.0
        )
        v = v / red
    v_in = v
    if device.dac_bits:
        step = 2.0 * device.inp_bound / (2.0**device.dac_bits - 2.0)
        v = xp.clip(
            quantize_ste(v, step, xp=xp, special=special),
            -device.inp_bound,
            device.inp_bound,
        )
    y = v @ w
    ok = None
    if first_pass and device.adc_bits:
        # the noise-free estimate v_in @ w that bound management checks differs
        # from this product (DAC-quantised input) by at most max_i |v_in - v| times
        # a column's sum of |w| (plus float rounding, < n eps of the same): when
        # that bound keeps every output within out_bound, the estimate does too,
        # red = 1, and this pass is exactly the two-product computation
        sg = special.stop_gradient
        dv = xp.max(xp.abs(sg(v_in) - sg(v)), axis=-1, keepdims=True)
        colsum = xp.max(xp.sum(xp.abs(sg(w)), axis=-2), axis=-1)
        colsum = xp.reshape(colsum, (*colsum.shape, 1, 1))
        slack = max(1e-4, 4.0 * w.shape[-2] * 1.2e-7)
        bound = xp.max(xp.abs(sg(y)), axis=-1, keepdims=True) + (dv + slack) * colsum
        ok = xp.all(bound <= device.out_bound)
    if device.ir_drop:
        n = w.shape[-2]
        wmax = special.stop_gradient(xp.max(xp.abs(w)))
        a = (n / _IR_DROP_G_RATIO) * (
            xp.abs(v) @ (xp.abs(w) / xp.where(wmax > 0, wmax, 1.0))
        )
        c = a * (a * (0.05 * a - 0.2) + 0.5)
        p = 1.0 - xp.arange(n, dtype=w.dtype) / n
        y = y - device.ir_drop * c * ((v * (1.0 - p * p)) @ w)
    if device.out_noise:
        y = y + device.out_noise * draw
    if device.adc_bits:
        step = 2.0 * device.out_bound / (2.0**device.adc_bits - 2.0)
        y = xp.clip(
            quantize_ste(y, step, xp=xp, special=special),
            -device.out_bound,
            device.out_bound,
        )
    out = xp.where(live, y * (nm * red), 0.0)
    return (out, ok) if first_pass else out


def tile_matvec(
    x: Any, w: Any, device: Device, draw: Any, *, xp: Any, special: Special
) -> Any:
    """One tile of :func:`analog_matvec` (``x`` the tile's input slice, ``w`` the
    tile, ``draw`` its output-noise normals or ``None``): steps 1-8 as documented
    there, bound management from the noise-free estimate (a second product)."""
    return _tile_matvec(x, w, device, draw, xp=xp, special=special)


def tile_matvec_first_pass(
    x: Any, w: Any, device: Device, draw: Any, *, xp: Any, special: Special
) -> tuple[Any, Any]:
    """One tile of :func:`analog_matvec` with ``red = 1`` and one product, and
    whether that is exact: ``(y, ok)``; when ``ok`` (a 0-d bool) is true, ``y`` is
    :func:`tile_matvec`'s value (bound management would keep ``red = 1``: a bound
    on the noise-free estimate from this product and the DAC's rounding error keeps
    every output within ``out_bound``); else ``y`` is not the tile's output and
    :func:`tile_matvec` must be called. ``ok`` is ``None`` without an ADC (no bound
    management: ``y`` is exact)."""
    return _tile_matvec(x, w, device, draw, xp=xp, special=special, first_pass=True)


def eager_tile_matvec(
    x: Any, w: Any, device: Device, draw: Any, *, xp: Any, special: Special
) -> Any:
    """:func:`tile_matvec` for eager backends (NumPy, torch): the one-product
    :func:`tile_matvec_first_pass` when it is exact, else the two products."""
    y, ok = tile_matvec_first_pass(x, w, device, draw, xp=xp, special=special)
    if ok is None or bool(ok):
        return y
    return tile_matvec(x, w, device, draw, xp=xp, special=special)


def analog_matvec(
    x: Any,
    w: Any,
    device: Device,
    out_draw: Any | None,
    *,
    xp: Any,
    special: Special,
    tile: Any = None,
) -> Any:
    r"""``x @ w`` through the periphery of aihwkit's analog MVM, tile by tile.

    ``w`` (shape ``(n, m)``) is split into tiles of at most ``device.max_input_size``
    rows × ``max_output_size`` columns; each tile ``(i, j)`` computes, per input row,
    from its slice ``x_i`` of the input:

    1. noise management: :math:`v = x_i / \max_j |x_{ij}|` (a zero row gives a zero
       output);
    2. bound management (aihwkit's ``ITERATIVE``, in one pass): the input is scaled
       down by the smallest power of two ``red`` (at most 16) that keeps the
       noise-free output within ``out_bound`` (a second product; hosts may skip it
       with :func:`tile_matvec_first_pass` when a bound proves ``red = 1``, as the
       NumPyro handler does: the same values);
    3. DAC: :math:`v \leftarrow \mathrm{clip}(\mathrm{round}(v / r_i) r_i, \pm b_i)`,
       :math:`r_i = 2 b_i / (2^{\mathrm{dac\_bits}} - 2)`;
    4. crossbar product :math:`y = v W_{ij}`;
    5. IR drop (aihwkit's ``applyIrDrop``): with :math:`n` rows in the tile,
       :math:`a_k = \frac{n}{5.714\cdot10^5} \sum_j |\hat w_{jk}|\,|v_j|`
       (:math:`\hat w = w / \max|w|`), :math:`c_k = a_k(a_k(0.05 a_k - 0.2) + 0.5)`,
       :math:`y_k \leftarrow y_k
       - \mathrm{ir\_drop}\; c_k \sum_j w_{jk} v_j (1 - p_j^2)`,
       :math:`p_j = 1 - j/n`;
    6. output noise :math:`y \leftarrow y + \sigma_o \xi`;
    7. ADC: :math:`y \leftarrow \mathrm{clip}(\mathrm{round}(y / r_o) r_o, \pm b_o)`,
       :math:`r_o = 2 b_o / (2^{\mathrm{adc\_bits}} - 2)`;
    8. back to digital units: :math:`y \max|x_i|\,\mathrm{red}`;

    and the tiles' outputs are summed digitally over ``i`` (aihwkit's
    ``TileModuleArray``). Rounding has a straight-through gradient.

    :param x: inputs, shape ``(..., n)``.
    :param w: the crossbar's weights, shape ``(n, m)`` (or ``(..., n, m)``: a batch
        of crossbars, as ``matmul`` broadcasts).
    :param out_draw: standard normals ξ of shape :func:`out_draw_shape`
        ``(R, ..., m)`` (``R`` rows of tiles; with one row of tiles ``(..., m)`` is
        accepted too), or ``None`` when the device has no ``out_noise``.
    :param tile: computes one tile, ``tile(x_i, w_ij, draw) -> y`` (default
        :func:`tile_matvec`); a host may pass a faster equivalent, e.g.
        :func:`eager_tile_matvec`, which skips bound management's second product
        when :func:`tile_matvec_first_pass` proves it unneeded.
    """
    if device.out_noise and out_draw is None:
        raise ValueError("analog_matvec needs out_draw: the device has out_noise")
    rows = tile_bounds(w.shape[-2], device.max_input_size)
    cols = tile_bounds(w.shape[-1], device.max_output_size)
    if (
        out_draw is not None
        and len(rows) == 1
        and out_draw.ndim
        < (len(out_draw_shape(tuple(x.shape), tuple(w.shape), device)))
    ):
        out_draw = out_draw[None]
    outs = []
    for c0, c1 in cols:
        y = None
        for i, (r0, r1) in enumerate(rows):
            draw = None if out_draw is None else out_draw[i][..., c0:c1]
            xs, ws = x[..., r0:r1], w[..., r0:r1, c0:c1]
            if tile is None:
                part = tile_matvec(xs, ws, device, draw, xp=xp, special=special)
            else:
                part = tile(xs, ws, draw)
            y = part if y is None else y + part
        outs.append(y)
    return outs[0] if len(outs) == 1 else xp.concat(outs, axis=-1)
