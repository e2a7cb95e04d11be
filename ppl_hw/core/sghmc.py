r"""Stochastic-gradient HMC with preconditioning and spike-and-slab EM (Ke & Fan 2022).

Backend-neutral pieces of the ``SGHMC`` kernels: the update, the preconditioners,
the step-size schedules and the EM steps. They take pre-drawn standard normal noise
and never draw randomness.

**The update (our conventions).** ``U`` is the model's potential energy: the negative
log joint, the likelihood summed over the data (a minibatch scaled by ``N/B``, as the
hosts' subsampled plates do). With step size :math:`\epsilon`, friction per step
:math:`a` (``momentum_decay``), temperature :math:`T` and a diagonal preconditioner
:math:`G` (1 without one), each step is

.. math::

    u \leftarrow (1 - a)\,u - \epsilon\,\nabla U(\theta)
        + \sqrt{2 a \epsilon T / G}\;\xi,\qquad
    \theta \leftarrow \theta + G \odot u,\qquad \xi \sim \mathcal N(0, I),

the Euler discretisation, position last (symplectic), of SGHMC with mass matrix
:math:`G^{-1}` and friction :math:`a/\sqrt\epsilon` per unit time (Chen, Fox &
Guestrin 2014, with ``u`` their momentum times the time step): for small
:math:`\epsilon` it samples :math:`\propto e^{-U/T}`, the exact posterior at
:math:`T = 1`. At :math:`T = 0` with :math:`G = 1` it is momentum SGD,
``u = (1 - a) u - eps * grad; theta += u``.

**Mapping to blackjax.** ``blackjax.sgmcmc.diffusions.sghmc(alpha, beta=0)`` with
step :math:`h` and momentum :math:`p` is the same update with
:math:`h = \sqrt\epsilon`, :math:`\alpha = a/h`, :math:`p = u/h` and
``logdensity_grad`` :math:`= -\nabla U(\theta)`: its new momentum times :math:`h`
equals our new ``u`` exactly (same noise); blackjax then moves the position with the
*old* momentum (:math:`x + h p`) where we use the new one (:math:`\theta + u'`).

**Ke & Fan's preconditioner** (``"ke_fan"``) is their update as published: the
dual variable :math:`\rho` of :math:`\tau = \mathrm{sigmoid}(\rho)` takes the step
:math:`\rho \leftarrow \rho - \eta\,[T^2 C^3 \lambda \tau + T C^{1.5} \xi \odot g
- 1/(\tau N)]` with the previous step's noise, :math:`G = \tau`, and their momentum
noise is not scaled by :math:`G^{-1/2}` (so it samples the posterior only where
:math:`\tau = 1`; kept as published). ``"rmsprop"`` is pSGLD's (Li et al. 2016):
:math:`V \leftarrow \beta V + (1 - \beta)\,\bar g^2`, :math:`G = 1/(\delta +
\sqrt V)` with :math:`\bar g = \nabla U / N`, normalised so that its mean over the
weights is 1 (so ``step_size`` keeps its meaning).

**Spike-and-slab EM** (Ročková & George 2014, per group :math:`g` of :math:`d`
weights, prior :math:`\pi N(0, \sigma_1^2) + (1-\pi) N(0, \sigma_0^2)`): E-step
:math:`p^*_g`, the posterior slab probability of the group (or the paper's
threshold rule), surrogate precision :math:`\lambda_g = p^*_g/\sigma_1^2 + (1 -
p^*_g)/\sigma_0^2` whose Gaussian term :math:`\tfrac12 \lambda_g \lVert w_g
\rVert^2` **replaces** the spike-and-slab log density in the potential, M-step
:math:`\pi \leftarrow \mathrm{mean}_g\,p^*_g`, and groups whose mean square falls
below the hard threshold are pruned for good.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = [
    "GROUPINGS",
    "PRECONDITIONERS",
    "SCHEDULES",
    "SGHMCSettings",
    "SGHMCState",
    "cyclical_step_size",
    "e_step",
    "em_update",
    "feistel_encrypt",
    "feistel_encrypt_mixed",
    "feistel_half_bits",
    "feistel_indices",
    "feistel_shape",
    "feistel_walk",
    "group_mean_square",
    "group_size",
    "init_state",
    "ke_fan_precondition",
    "rmsprop_precondition",
    "sghmc_step",
    "step",
    "step_size_at",
    "surrogate_energy",
    "surrogate_precision",
    "threefry2x32",
]

PRECONDITIONERS = (None, "rmsprop", "ke_fan")
SCHEDULES = ("constant", "cyclical")
GROUPINGS = ("input", "kernel", None)


def sghmc_step(
    theta: Any,
    u: Any,
    grad: Any,
    noise: Any,
    *,
    step_size: Any,
    momentum_decay: float,
    temperature: float,
    precond: Any = None,
    noise_precond: bool = True,
    xp: Any,
) -> tuple[Any, Any]:
    """One SGHMC step of one array (module docstring): returns ``(theta, u)``.

    :param theta: position.
    :param u: momentum (units of ``theta``).
    :param grad: :math:`\\nabla U(\\theta)`, the potential's gradient.
    :param noise: standard normal draws, shaped like ``theta``.
    :param step_size: :math:`\\epsilon`.
    :param momentum_decay: friction per step :math:`a \\in (0, 1]`.
    :param temperature: :math:`T \\ge 0`.
    :param precond: :math:`G` (positive, shaped like ``theta``) or ``None``.
    :param noise_precond: scale the noise by :math:`G^{-1/2}` (the exact sampler);
        ``False`` is Ke & Fan's published update.
    """
    scale = (2.0 * momentum_decay * step_size * temperature) ** 0.5
    kick = scale * noise
    if precond is not None and noise_precond:
        kick = kick / xp.sqrt(precond)
    u = (1.0 - momentum_decay) * u - step_size * grad + kick
    theta = theta + (u if precond is None else precond * u)
    return theta, u


def rmsprop_precondition(
    v: Any, grad_per_datum: Any, *, beta: float, delta: float, xp: Any
) -> tuple[Any, Any]:
    """pSGLD's running mean square and preconditioner: ``(v, G)``, ``G`` unnormalised
    (the caller normalises it over all weights of the model)."""
    v = beta * v + (1.0 - beta) * grad_per_datum * grad_per_datum
    return v, 1.0 / (delta + xp.sqrt(v))


def ke_fan_precondition(
    rho: Any,
    tau: Any,
    noise_prev: Any,
    grad_mean: Any,
    lam: Any,
    *,
    c: Any,
    t: float,
    n: int,
    eta: float,
    xp: Any,
) -> tuple[Any, Any]:
    """Ke & Fan's dual step for :math:`\\tau` (module docstring): ``(rho, tau)``.

    :param grad_mean: gradient of the *mean* minibatch loss (:math:`\\nabla U/N`
        without the prior).
    :param lam: weight decay :math:`\\lambda` (prior precision / N), broadcastable.
    :param c: :math:`C = \\sqrt{\\text{step}}` of the paper.
    :param t: the paper's noise scale :math:`T`.
    """
    rho = rho - eta * (
        t * t * c**3 * lam * tau + t * c**1.5 * noise_prev * grad_mean - 1.0 / (tau * n)
    )
    return rho, 1.0 / (1.0 + xp.exp(-rho))


def cyclical_step_size(
    step: Any, step_size: float, num_steps: int, num_cycles: int, *, xp: Any
) -> Any:
    """Cosine cyclical schedule (Zhang et al. 2020; Ke & Fan):
    :math:`\\epsilon_k = \\tfrac{\\epsilon_0}{2}(\\cos(\\pi\\,(k \\bmod L)/L) + 1)`,
    :math:`L = \\lceil K / M \\rceil` steps per cycle."""
    length = math.ceil(num_steps / num_cycles)
    phase = (step % length) / length
    return 0.5 * step_size * (xp.cos(math.pi * phase) + 1.0)


def group_mean_square(w: Any, grouping: str | None, *, xp: Any) -> Any:
    """Mean of :math:`w^2` per group: ``"input"`` (a dense weight ``(in, out)``: one
    group per input row, mean over the last axis), ``"kernel"`` (a conv weight
    ``(out, in, kh, kw)``: one group per ``(out, in)`` kernel) or ``None`` (each
    weight alone). Returned shaped to broadcast against ``w``."""
    sq = w * w
    if grouping is None or w.ndim < 2:
        return sq
    if grouping == "input":
        return xp.mean(sq, axis=tuple(range(1, w.ndim)), keepdims=True)
    return xp.mean(sq, axis=tuple(range(2, w.ndim)), keepdims=True)


def group_size(shape: tuple[int, ...], grouping: str | None) -> int:
    """Number of weights per group for :func:`group_mean_square`."""
    if grouping is None or len(shape) < 2:
        return 1
    if grouping == "input":
        return int(math.prod(shape[1:]))
    return int(math.prod(shape[2:]))


def e_step(
    mean_sq: Any,
    d: int,
    pi: Any,
    spike_scale: Any,
    slab_scale: Any,
    *,
    soft_threshold: float | None,
    xp: Any,
) -> Any:
    """Posterior slab probability :math:`p^*_g` of each group from its mean square
    :math:`s_g = \\lVert w_g\\rVert^2/d`; with ``soft_threshold`` the paper's hard
    rule :math:`p^*_g = 1[s_g \\ge \\text{soft\\_threshold}]`."""
    if soft_threshold is not None:
        return xp.where(mean_sq >= soft_threshold, 1.0, 0.0)
    pi, spike_scale, slab_scale = (
        xp.asarray(v, dtype=mean_sq.dtype) for v in (pi, spike_scale, slab_scale)
    )
    # log odds of slab vs spike for d independent weights with sum of squares d * s
    log_odds = (
        xp.log(pi)
        - xp.log1p(-pi)
        + d * (xp.log(spike_scale) - xp.log(slab_scale))
        + 0.5 * d * mean_sq * (1.0 / spike_scale**2 - 1.0 / slab_scale**2)
    )
    return 1.0 / (1.0 + xp.exp(-log_odds))


def surrogate_precision(p: Any, spike_scale: Any, slab_scale: Any) -> Any:
    """:math:`\\lambda_g = p^*_g/\\sigma_1^2 + (1 - p^*_g)/\\sigma_0^2`."""
    return p / slab_scale**2 + (1.0 - p) / spike_scale**2


FEISTEL_ROUNDS = 4


def feistel_half_bits(n: int) -> int:
    r"""Half the bit width of the Feistel domain :math:`[0, 4^h) \supseteq [0, n)`."""
    return max(1, (int(n - 1).bit_length() + 1) // 2)


def feistel_encrypt(v: Any, key_words: Any, half_bits: int, *, xp: Any) -> Any:
    r"""A keyed bijection of :math:`[0, 4^h)` (``uint32`` in and out): a
    ``FEISTEL_ROUNDS``-round balanced Feistel network with a multiply-xorshift round
    function. Applied by cycle walking (re-encrypt while the value is :math:`\ge n`)
    it is a pseudo-random permutation of :math:`[0, n)`, evaluated in O(1) per
    index (a stored permutation carried through the jitted loop cost 17-54 µs per
    step on CPU, measured). The NumPyro kernel used it up to issue 18; it now uses
    :func:`feistel_encrypt_mixed`, whose domain exceeds ``n`` by less than
    :math:`\sqrt n + 1` rather than up to :math:`3n`.

    :param v: values in :math:`[0, 4^h)`, ``uint32``.
    :param key_words: ``FEISTEL_ROUNDS`` ``uint32`` round keys.
    :param half_bits: :math:`h` from :func:`feistel_half_bits`.
    """
    mask = (1 << half_bits) - 1
    mul1 = xp.asarray(0x9E3779B1, dtype=v.dtype)
    mul2 = xp.asarray(0x2C1B3C6D, dtype=v.dtype)
    left, right = v >> half_bits, v & mask
    for k in range(FEISTEL_ROUNDS):
        f = right * mul1 + key_words[k]
        f = (f ^ (f >> 15)) * mul2
        f = (f ^ (f >> 12)) & mask
        left, right = right, left ^ f
    return (left << half_bits) | right


def feistel_shape(n: int) -> tuple[int, int]:
    r"""The sides :math:`(A, B)` of the domain :math:`[0, AB) \supseteq [0, n)` of
    :func:`feistel_encrypt_mixed`: :math:`A = \lceil\sqrt n\rceil`,
    :math:`B = \lceil n/A \rceil`, so :math:`AB - n < A` (both below
    :math:`2^{16}`)."""
    a = max(1, math.isqrt(n))
    a += a * a < n
    return a, -(-n // a)


def _scale16(f: Any, m: int, xp: Any) -> Any:
    """``floor(f * m / 2^32)`` for ``uint32`` ``f`` and ``m < 2^16``, in 32 bits."""
    mm = xp.asarray(m, dtype=f.dtype)
    return ((f >> 16) * mm + (((f & 0xFFFF) * mm) >> 16)) >> 16


def _feistel_round(x: Any, key_word: Any, mul1: Any, mul2: Any) -> Any:
    f = x * mul1 + key_word
    f = (f ^ (f >> 15)) * mul2
    return f ^ (f >> 12)


def feistel_encrypt_mixed(v: Any, key_words: Any, n: int, *, xp: Any) -> Any:
    r"""A keyed bijection of :math:`[0, AB)`, :math:`(A, B)` =
    :func:`feistel_shape` of ``n`` (``uint32`` in and out): a
    ``FEISTEL_ROUNDS``-round Feistel network on the digits :math:`(v \,\mathrm{div}\,
    B, v \bmod B)` with addition modulo :math:`A` and :math:`B` (even rounds add a
    keyed function of the low digit to the high one, odd rounds the reverse; each
    round is invertible), the multiply-xorshift round function of
    :func:`feistel_encrypt` scaled onto the digit's range.

    The domain exceeds ``n`` by less than :math:`\sqrt n + 1` values, so cycle walking
    (:func:`feistel_walk`) almost never needs a second encryption (the balanced
    network's domain, the next power of 4, needed 2.6 per index at n = 10^5).

    :param v: values in :math:`[0, AB)`, ``uint32``.
    :param key_words: ``FEISTEL_ROUNDS`` ``uint32`` round keys.
    :param n: the size of the permuted range.
    """
    a, b = feistel_shape(n)
    ua, ub = xp.asarray(a, dtype=v.dtype), xp.asarray(b, dtype=v.dtype)
    mul1 = xp.asarray(0x9E3779B1, dtype=v.dtype)
    mul2 = xp.asarray(0x2C1B3C6D, dtype=v.dtype)
    hi, lo = v // ub, v % ub
    for k in range(FEISTEL_ROUNDS):
        if k % 2 == 0:
            hi = hi + _scale16(_feistel_round(lo, key_words[k], mul1, mul2), a, xp)
            hi = xp.where(hi >= ua, hi - ua, hi)
        else:
            lo = lo + _scale16(_feistel_round(hi, key_words[k], mul1, mul2), b, xp)
            lo = xp.where(lo >= ub, lo - ub, lo)
    return hi * ub + lo


def feistel_walk(v: Any, key_words: Any, n: int, walks: int, *, xp: Any) -> Any:
    r"""``walks`` steps of cycle walking of :func:`feistel_encrypt_mixed` from
    ``v`` (``uint32`` in :math:`[0, n)`): encrypt once, then re-encrypt the values
    still :math:`\ge n`, ``walks - 1`` times (a fixed count: no data-dependent loop,
    so a jitted host fuses it). Values still :math:`\ge n` after it need more walks
    (:func:`feistel_indices` loops until none is left)."""
    v = feistel_encrypt_mixed(v, key_words, n, xp=xp)
    for _ in range(walks - 1):
        v = xp.where(v >= n, feistel_encrypt_mixed(v, key_words, n, xp=xp), v)
    return v


def feistel_indices(v: Any, key_words: Any, n: int, *, xp: Any) -> Any:
    r"""The keyed pseudo-random permutation of :math:`[0, n)` at positions ``v``
    (``uint32``): :func:`feistel_encrypt_mixed` cycle-walked until every value is
    below ``n`` (a Python loop: the oracle for eager namespaces; the NumPyro kernel
    runs the same walk with ``lax.while_loop``). Each value needs :math:`AB/n <
    1 + 1/\sqrt n` encryptions on average."""
    v = feistel_walk(v, key_words, n, 1, xp=xp)
    while bool(xp.any(v >= n)):
        v = xp.where(v >= n, feistel_encrypt_mixed(v, key_words, n, xp=xp), v)
    return v


# -- Threefry-2x32, unrolled ---------------------------------------------------------

_THREEFRY_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))


def threefry2x32(k1: Any, k2: Any, x1: Any, x2: Any, *, xp: Any) -> Any:
    r"""The Threefry-2x32 block cipher (20 rounds; Salmon et al. 2011), bit for bit
    JAX's ``threefry2x32`` primitive, written out round by round on ``uint32``
    arrays: ``(y1, y2)`` for key words ``(k1, k2)`` and counter words
    ``(x1, x2)`` (broadcast).

    Why here: on CPU JAX lowers its primitive as a rolled loop (an XLA ``while``
    of 5 iterations per call), whose per-iteration overhead dominates the few words a
    sampler step draws; written out, XLA fuses the hash into the arrays that use it.
    In JAX's default (partitionable) mode ``jax.random.split(key, n)[j]`` is
    ``threefry2x32(*key, 0, j)`` and ``jax.random.bits(key, (n,))[j]`` is
    ``y1 ^ y2`` of the same."""

    def rotl(x: Any, d: int) -> Any:
        return (x << d) | (x >> (32 - d))

    c = xp.asarray(0x1BD11BDA, dtype=k1.dtype)
    ks = (k1, k2, k1 ^ k2 ^ c)
    a, b = x1 + ks[0], x2 + ks[1]
    for r in range(5):
        for rot in _THREEFRY_ROTATIONS[r % 2]:
            a = a + b
            b = rotl(b, rot) ^ a
        a = a + ks[(r + 1) % 3]
        b = b + ks[(r + 2) % 3] + xp.asarray(r + 1, dtype=k1.dtype)
    return a, b


# -- the step over all sites ---------------------------------------------------------


class SGHMCState(NamedTuple):
    """The state of both ``SGHMC`` kernels; ``z`` holds the unconstrained sample.

    The maths fields are advanced by :func:`step`; ``epoch_key``, ``pos``,
    ``rng_key`` and ``batch`` are the host's minibatch and randomness bookkeeping
    (NumPyro: the epoch's Feistel key, the position in the epoch, a PRNG key and the
    minibatch indices of the next step, drawn at the end of the previous one; Pyro:
    the epoch's permutation, the position, ``None`` since torch's generator is
    global, and ``None``).
    """

    i: Any
    z: dict
    u: dict
    potential_energy: Any
    step_size: Any
    sparsity: Any
    epoch_key: Any
    pos: Any
    precond: Any
    lam: dict
    mask: dict
    pi: dict
    em_on: Any
    rng_key: Any
    batch: Any = None


class SGHMCSettings(NamedTuple):
    """What :func:`step` needs besides the state, fixed when a kernel is set up.

    ``em`` is ``None`` or any object with the attributes of ``SpikeSlabEM``
    (``every``, ``warmup``, ``soft_threshold``, ``hard_threshold``, ``groups``,
    ``update_pi``); ``spike_slab`` maps each site with a spike-and-slab prior to
    ``(prob, spike_scale, slab_scale)``, arrays of the site's shape; ``ke_fan`` is
    ``(t, n)``, the paper's noise scale and data size.
    """

    step_size: float
    schedule: str
    num_steps: int | None
    num_cycles: int
    momentum_decay: float
    temperature: float
    preconditioner: str | None
    rmsprop_beta: float
    rmsprop_delta: float
    ke_fan_eta: float
    ke_fan: tuple[float, int]
    num_data: int
    num_weights: int
    em: Any
    spike_slab: Mapping[str, tuple[Any, Any, Any]]


def step_size_at(i: Any, settings: SGHMCSettings, *, xp: Any) -> Any:
    r""":math:`\epsilon` at step ``i``: a Python float for a Python int step (eager
    hosts), an array for an array step (traced hosts)."""
    if settings.schedule == "constant":
        return (
            settings.step_size if isinstance(i, int) else xp.asarray(settings.step_size)
        )
    assert settings.num_steps is not None
    if isinstance(i, int):
        length = math.ceil(settings.num_steps / settings.num_cycles)
        phase = (i % length) / length
        return 0.5 * settings.step_size * (math.cos(math.pi * phase) + 1.0)
    return cyclical_step_size(
        i, settings.step_size, settings.num_steps, settings.num_cycles, xp=xp
    )


def init_state(
    z: dict,
    settings: SGHMCSettings,
    *,
    xp: Any,
    i: Any = 0,
    epoch_key: Any = None,
    pos: Any = 0,
    rng_key: Any = None,
    potential_energy: Any = 0.0,
    step_size: Any = None,
    sparsity: Any = 0.0,
    em_on: Any = False,
    batch: Any = None,
) -> SGHMCState:
    r"""The state before the first step at position ``z`` (zero momentum; EM
    precisions at the slab's, masks all ones, :math:`\pi` the prior's)."""
    ss = settings.spike_slab
    if settings.preconditioner == "rmsprop":
        precond: Any = {k: xp.zeros_like(v) for k, v in z.items()}
    elif settings.preconditioner == "ke_fan":
        precond = (
            {k: xp.zeros_like(v) for k, v in z.items()},
            {k: xp.full_like(v, 0.5) for k, v in z.items()},
            {k: xp.zeros_like(v) for k, v in z.items()},
        )
    else:
        precond = None
    return SGHMCState(
        i=i,
        z=z,
        u={k: xp.zeros_like(v) for k, v in z.items()},
        potential_energy=potential_energy,
        step_size=settings.step_size if step_size is None else step_size,
        sparsity=sparsity,
        epoch_key=epoch_key,
        pos=pos,
        precond=precond,
        lam={k: 1.0 / slab**2 for k, (_, _, slab) in ss.items()},
        mask={k: xp.ones_like(z[k]) for k in ss},
        pi={k: xp.mean(prob) for k, (prob, _, _) in ss.items()},
        em_on=em_on,
        rng_key=rng_key,
        batch=batch,
    )


def _select(do: Any, new: Any, old: Any, xp: Any) -> Any:
    """``new`` where ``do``: a Python bool picks, an array condition selects."""
    if isinstance(do, bool):
        return new if do else old
    return xp.where(do, new, old)


def em_update(
    state: SGHMCState, settings: SGHMCSettings, *, xp: Any
) -> tuple[dict, dict, dict, Any]:
    """The EM step due at ``state.i`` (module docstring): ``(lam, mask, pi, em_on)``.

    Runs every ``em.every`` steps from ``em.warmup`` on; a Python int step decides
    in Python (nothing is computed between EM steps), an array step selects with
    ``xp.where`` (traced hosts)."""
    em = settings.em
    i = state.i
    do = (i >= em.warmup) & ((i - em.warmup) % em.every == 0)
    if isinstance(do, bool) and not do:
        return state.lam, state.mask, state.pi, state.em_on
    lam, mask, pi = dict(state.lam), dict(state.mask), dict(state.pi)
    for k, (_, spike, slab) in settings.spike_slab.items():
        w = state.z[k]
        shape = tuple(w.shape)
        ms = group_mean_square(w, em.groups, xp=xp)
        d = group_size(shape, em.groups)
        p = e_step(
            ms, d, state.pi[k], spike, slab, soft_threshold=em.soft_threshold, xp=xp
        )
        p = xp.broadcast_to(p, shape)
        lam[k] = _select(do, surrogate_precision(p, spike, slab), lam[k], xp)
        if em.hard_threshold is not None:
            keep = xp.broadcast_to(ms >= em.hard_threshold, shape)
            new_mask = xp.where(keep, mask[k], xp.zeros_like(mask[k]))
            mask[k] = _select(do, new_mask, mask[k], xp)
        if em.update_pi:
            pi[k] = _select(do, xp.clip(xp.mean(p), 1e-6, 1 - 1e-6), pi[k], xp)
    return lam, mask, pi, do | state.em_on


def surrogate_energy(z: Mapping[str, Any], lam: Mapping[str, Any], *, xp: Any) -> Any:
    r"""The EM surrogate's potential :math:`\tfrac12 \sum_g \lambda_g \lVert w_g
    \rVert^2` over the spike-and-slab sites (the keys of ``lam``)."""
    return sum(0.5 * xp.sum(lam[k] * z[k] ** 2) for k in lam)


def _sqrt(x: Any, xp: Any) -> Any:
    return math.sqrt(x) if isinstance(x, float | int) else xp.sqrt(x)


def step(
    state: SGHMCState,
    noise: Mapping[str, Any],
    potential_and_grad: Callable[[dict, dict, Any], tuple[Any, dict]],
    settings: SGHMCSettings,
    *,
    xp: Any,
) -> SGHMCState:
    """One SGHMC-within-EM step over all sites: the state after step ``state.i``.

    In order: the EM step due (:func:`em_update`; pruned weights are zeroed), the
    step size (:func:`step_size_at`), the potential and its gradient at the
    (masked) position, the preconditioner (``"rmsprop"``: pSGLD's, normalised to
    mean one over all weights; ``"ke_fan"``: the paper's dual update with the previous
    step's noise), then :func:`sghmc_step` per site, masked.

    :param state: the state; ``epoch_key``, ``pos``, ``rng_key`` and ``batch`` are
        returned unchanged (the host advances them).
    :param noise: standard normal draws, one array per site shaped like ``z``.
    :param potential_and_grad: ``(z, lam, em_on) -> (U, {site: dU/dz})``: the
        potential on the host's current minibatch, with the spike-and-slab terms
        replaced by :func:`surrogate_energy` where ``em_on``.
    :param settings: see :class:`SGHMCSettings`.
    """
    z = state.z
    lam, mask, pi, em_on = state.lam, state.mask, state.pi, state.em_on
    if settings.em is not None:
        lam, mask, pi, em_on = em_update(state, settings, xp=xp)
        z = {k: v * mask[k] if k in mask else v for k, v in z.items()}
    eps = step_size_at(state.i, settings, xp=xp)
    pe, grad = potential_and_grad(z, lam, em_on)
    n_data = settings.num_data
    precond_state, g, noise_precond = state.precond, None, True
    if settings.preconditioner == "rmsprop":
        pairs = {
            k: rmsprop_precondition(
                state.precond[k],
                grad[k] / n_data,
                beta=settings.rmsprop_beta,
                delta=settings.rmsprop_delta,
                xp=xp,
            )
            for k in z
        }
        precond_state = {k: v[0] for k, v in pairs.items()}
        mean = sum(xp.sum(v[1]) for v in pairs.values()) / settings.num_weights
        g = {k: v[1] / mean for k, v in pairs.items()}
    elif settings.preconditioner == "ke_fan":
        t, n = settings.ke_fan
        rho, tau, xi_prev = state.precond
        c = _sqrt(eps * n_data, xp)
        new = {
            k: ke_fan_precondition(
                rho[k],
                tau[k],
                xi_prev[k],
                grad[k] / n,
                (lam[k] if k in lam else 0.0) / n,
                c=c,
                t=t,
                n=n,
                eta=settings.ke_fan_eta,
                xp=xp,
            )
            for k in z
        }
        tau = {k: v[1] for k, v in new.items()}
        precond_state = ({k: v[0] for k, v in new.items()}, tau, dict(noise))
        g, noise_precond = tau, False
    new_z, new_u = {}, {}
    for k in z:
        theta, u = sghmc_step(
            z[k],
            state.u[k],
            grad[k],
            noise[k],
            step_size=eps,
            momentum_decay=settings.momentum_decay,
            temperature=settings.temperature,
            precond=None if g is None else g[k],
            noise_precond=noise_precond,
            xp=xp,
        )
        if k in mask:
            theta, u = theta * mask[k], u * mask[k]
        new_z[k], new_u[k] = theta, u
    pruned = sum(xp.sum(1.0 - m) for m in mask.values())
    return state._replace(
        i=state.i + 1,
        z=new_z,
        u=new_u,
        potential_energy=pe,
        step_size=eps,
        sparsity=xp.asarray(pruned / settings.num_weights, dtype=pe.dtype),
        precond=precond_state,
        lam=lam,
        mask=mask,
        pi=pi,
        em_on=em_on,
    )
