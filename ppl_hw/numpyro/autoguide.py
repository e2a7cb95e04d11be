"""ppl_hw's autoguides for NumPyro: swap one for ``AutoNormal`` and change nothing
else.

===========================  ===========================================================
:class:`AutoMeanKL`          Gaussian mean field parameterised by mean and KL: the total
                             KL to the model's Normal prior equals the budget by
                             construction
:class:`AutoDeviceNoise`     mean field with a measured device-noise shape
                             (:class:`~ppl_hw.numpyro.distributions.DeviceNoise`)
:class:`AutoScaleDropout`    point estimates with scale dropout (MC-Scale-Dropout)
:class:`AutoDiscreteWeight`  categorical distributions over discrete weight grids,
                             trained through the probabilistic forward pass
                             (``PFP_ELBO``)
===========================  ===========================================================
"""

from __future__ import annotations

import copy
import functools
import math
from contextlib import ExitStack
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from jax import random
from numpyro.distributions import constraints
from numpyro.distributions.transforms import biject_to
from numpyro.infer.autoguide import AutoDelta, AutoNormal
from numpyro.infer.initialization import init_to_median, init_to_uniform

from ..common import autoguide as gc
from ..core import gaussian as _gauss
from ..core import meankl as _mk
from . import _provenance
from ._backend import BACKEND, guard_finite
from .distributions import DeviceNoise, EmpiricalNoise
from .distributions._base import base_distribution

__all__ = ["AutoDeviceNoise", "AutoDiscreteWeight", "AutoMeanKL", "AutoScaleDropout"]

_xp, _sp = BACKEND.xp, BACKEND.special
_LS = ("loc", "scale")


@jax.custom_jvp
def _log_ratio(s: Any) -> Any:
    return _mk.log_ratio(s, xp=_xp, special=_sp)


@_log_ratio.defjvp
def _log_ratio_jvp(primals: Any, tangents: Any) -> Any:
    (s,), (ds,) = primals, tangents
    t = _log_ratio(s)
    return t, _mk.log_ratio_grad(s, t, xp=_xp) * ds


@functools.partial(jax.jit, static_argnames=("num_weights",))
def _meankl_sites(
    ms: dict,
    phis: dict | None,
    priors: dict,
    log_budget: float,
    num_weights: int,
    blocks: tuple | None = None,
) -> dict[str, tuple[Any, Any]]:
    """``{site: (mu, sigma)}`` from the Mean-KL parameters of all sites: the budget
    split over all weights as one flat vector in sorted site order (the order of the
    blocks), then the solve site by site; jitted so an eager
    call (``svi.init``, an unjitted ``Predictive``) compiles once instead of
    dispatching every operation of the Newton solve. ``blocks``: ``(index, pad,
    block_of, log_cb)`` of a :class:`~ppl_hw.common.autoguide.BlockSplit`."""
    names = sorted(ms)
    ends = np.cumsum([ms[k].size for k in names])[:-1]

    def flat(d: dict) -> Any:
        return jnp.concatenate([jnp.reshape(d[k], -1) for k in names])

    dtype = jnp.result_type(*(ms[k] for k in names))
    log_kappa = _mk.log_kappa(
        None if phis is None else flat(phis),
        log_budget=log_budget,
        num_weights=num_weights,
        blocks=blocks,
        xp=_xp,
        special=_sp,
    )
    if phis is None:  # "equal": one scalar for every weight
        lk = {k: log_kappa for k in names}
    else:  # back to the sites' shapes before the elementwise solve
        lk = {
            k: jnp.reshape(part, jnp.shape(ms[k]))
            for k, part in zip(names, jnp.split(log_kappa, ends), strict=True)
        }
    # The solve runs site by site: fed by a concatenation, XLA's CPU backend fuses
    # the whole elementwise chain (Newton loop included) with the concatenate's
    # per-element select and the step took 7x longer at 10^6 weights (measured:
    # 210 ms against 28 ms with its gradient, digits MLP with two hidden layers of
    # 1 024); the budget split itself (softmax or blocks) still sees all weights.
    out = {}
    for k in names:
        nu, rho = (
            jnp.reshape(jnp.asarray(a, dtype), jnp.shape(ms[k])) for a in priors[k]
        )
        out[k] = _mk.meankl_loc_scale(
            ms[k], lk[k], nu, rho, xp=_xp, log_ratio_fn=_log_ratio
        )
    return out


def _is_real(site: dict) -> bool:
    support = site["fn"].support
    while isinstance(support, constraints.independent):
        support = support.base_constraint
    return support is constraints.real


def _check_continuous(guide: str, site: dict) -> None:
    if site["fn"].is_discrete:
        raise ValueError(
            f"{guide} is a continuous guide; site {site['name']!r} is discrete "
            f"({type(site['fn']).__name__}): use a guide for discrete sites, or "
            "enumerate it out"
        )


def _refuse_discrete(guide: str, model: Any, args: Any, kwargs: Any) -> None:
    """A dry trace of the model: a discrete latent site is an error for a continuous
    guide, raised before NumPyro's autoguide machinery tries to enumerate it."""
    with numpyro.handlers.block():
        tr = numpyro.handlers.trace(numpyro.handlers.seed(model, 0)).get_trace(
            *args, **kwargs
        )
    for site in tr.values():
        if site["type"] == "sample" and not site["is_observed"]:
            _check_continuous(guide, site)


def _normal_prior(site: dict, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    fn = base_distribution(site["fn"])
    if type(fn) is not dist.Normal:
        raise ValueError(
            "AutoMeanKL codes each weight against the model's Normal prior; site "
            f"{site['name']!r} has a {type(fn).__name__} prior"
        )
    nu = np.array(np.broadcast_to(np.asarray(fn.loc, dtype=np.float64), shape))
    rho = np.array(np.broadcast_to(np.asarray(fn.scale, dtype=np.float64), shape))
    return nu, rho


class AutoMeanKL(AutoNormal):
    r"""Gaussian mean-field guide parameterised by mean and KL (Mean-KL; Lin, Flamich
    & Hernández-Lobato 2023).

    Each weight's :math:`\mathcal N(\mu, \sigma^2)` is given by its KL
    :math:`\kappa` to the model's Normal prior :math:`\mathcal N(\nu, \rho^2)` (the
    MIRACLE coding distribution) and a mean parameter :math:`m`:

    .. math::

        \mu = \nu + \rho\sqrt{2\kappa}\tanh m,\qquad
        \sigma = \rho\sqrt{-W_0\!\left(-e^{-(1 + 2\kappa\,\mathrm{sech}^2 m)}\right)},
        \qquad \kappa = C\,\mathrm{softmax}(\phi)\ \text{or}\ C/D,

    so :math:`\sum \mathrm{KL}(q\|p) = C` (the budget) **by construction** at every
    step: the ELBO's KL term is constant and training minimises the expected negative
    log-likelihood alone. The Lambert-W solve and its derivative live in
    :mod:`ppl_hw.core.meankl` (finite gradients at :math:`\kappa \to 0` and
    :math:`\tanh m \to \pm1`). Sites sample a ``Normal``, so ``TraceMeanField_ELBO``
    uses the closed-form KL.

    :param model: the model; every latent site needs a ``Normal`` prior (fixed loc
        and scale) and real support.
    :param kl_budget_bits: the total KL budget in bits (or ``kl_budget_nats``).
    :param kl_budget_nats: the total KL budget in nats.
    :param budget_split: ``"learned"`` (a softmax over per-weight logits, trained),
        ``"equal"`` (:math:`C/D` each) or ``"blocks"`` (the weights are shuffled into
        MIRACLE's coding blocks, ``ceil(C / bits_per_block)`` of them; each block gets
        an equal share of the budget, at most ``bits_per_block`` bits, split among its
        weights by a softmax of their logits: every block's KL is fixed by
        construction, which is what :func:`ppl_hw.coding.encode` needs to code each
        block with ``2**bits_per_block`` candidates).
    :param bits_per_block: ``"blocks"`` only: bits per coding block, 1..24 (default 16).
    :param block_seed: ``"blocks"`` only: the blocks' seed (default 0); ``encode``
        uses it as its seed.
    :param init_scale: initial posterior standard deviation used to share the budget
        at initialisation (``"learned"``, ``"blocks"``): each weight starts with the KL
        of :math:`\mathcal N(\mu_0, \mathrm{init\_scale}^2)`, rescaled to the budget
        (to its block's share).
    :param prefix: parameter-name prefix.
    :param init_loc_fn: initial means (default ``init_to_uniform``, radius 2 as
        ``AutoNormal``; radius 1 with ``"blocks"``, whose per-block budget cannot hold
        means of up to ±2 in every block).

    Parameters are ``"<site>_<prefix>_m"`` and, unless ``"equal"``,
    ``"<site>_<prefix>_phi"``. :meth:`kl` returns the total and per-site KL recomputed
    from :math:`(\mu, \sigma)`.
    """

    def __init__(
        self,
        model: Any,
        *,
        kl_budget_bits: float | None = None,
        kl_budget_nats: float | None = None,
        budget_split: str = "learned",
        bits_per_block: int | None = None,
        block_seed: int | None = None,
        init_scale: float = 0.1,
        prefix: str = "auto",
        init_loc_fn: Any = None,
        create_plates: Any = None,
    ):
        self.budget = gc.budget_nats(kl_budget_bits, kl_budget_nats)
        self.bits_per_block, self.block_seed = gc.check_meankl_split(
            budget_split, bits_per_block, block_seed
        )
        self.budget_split = budget_split
        self._block_split: gc.BlockSplit | None = None
        if init_loc_fn is None:
            radius = 1.0 if budget_split == "blocks" else 2.0
            init_loc_fn = init_to_uniform(radius=radius)
        init_scale = gc.check_init_scale(init_scale)
        self._priors: dict[str, tuple[Any, Any]] = {}
        super().__init__(
            model,
            prefix=prefix,
            init_loc_fn=init_loc_fn,
            init_scale=init_scale,
            create_plates=create_plates,
        )

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        _refuse_discrete("AutoMeanKL", self.model, args, kwargs)
        super()._setup_prototype(*args, **kwargs)
        latent = {
            n: s
            for n, s in self.prototype_trace.items()
            if s["type"] == "sample" and not s["is_observed"]
        }
        try:
            deps = _provenance.dependencies(
                self.model, args, kwargs, self.prototype_trace
            )
        except Exception as err:  # the host cannot trace this model abstractly
            gc.warn_untraceable(err)
            deps = {}
        budgeted, self._outside = gc.meankl_sites(
            {
                n: (
                    type(base_distribution(s["fn"])).__name__,
                    type(base_distribution(s["fn"])) is dist.Normal,
                    _is_real(s),
                    deps.get(n, frozenset()) - {n},
                )
                for n, s in latent.items()
            }
        )
        self._transforms = {
            n: biject_to(latent[n]["fn"].support)
            for n in self._outside
            if not _is_real(latent[n])
        }
        # a support that moves with another latent site is constrained by running
        # the model, as AutoNormal does; any other by its own bijection
        self._dependent_support = any(
            deps.get(n, frozenset()) - {n} for n in self._transforms
        ) or (bool(self._transforms) and not deps)
        locs = {}
        for name in budgeted:
            shape = tuple(jnp.shape(self._init_locs[name]))
            self._priors[name] = _normal_prior(latent[name], shape)
            locs[name] = np.asarray(self._init_locs[name], dtype=np.float64)
        if self.budget_split == "blocks":
            self._block_split = gc.BlockSplit(
                {k: max(1, locs[k].size) for k in sorted(locs)},
                self.budget,
                self.bits_per_block,
                self.block_seed,
            )
            bs = self._block_split
            self._block_arrays = (
                jnp.asarray(bs.index),
                jnp.asarray(bs.pad, dtype=jnp.result_type(float)),
                jnp.asarray(bs.block_of),
                bs.log_cb,
            )
        m0, phi0 = gc.meankl_init(
            locs,
            self._priors,
            self.budget,
            self.budget_split,
            self._init_scale,
            self._block_split,
        )
        self._init_m = {k: jnp.asarray(v) for k, v in m0.items()}
        self._init_phi = {k: jnp.asarray(v) for k, v in phi0.items()}
        self._num_weights = sum(int(np.size(v)) for v in locs.values())
        self._prior_arrays = {
            k: (jnp.asarray(nu), jnp.asarray(rho))
            for k, (nu, rho) in self._priors.items()
        }

    @property
    def budget_sites(self) -> list[str]:
        """The sites that carry the KL budget: those with a fixed ``Normal`` prior on
        the real line (the weights), in trace order (empty before the first call)."""
        return list(self._priors)

    @property
    def outside_sites(self) -> dict[str, str]:
        """``{site: reason}`` for the latent sites outside the budget (a prior that is
        not ``Normal``, a constrained support, or a ``Normal`` prior that depends on
        another latent site): each has a mean-field ``Normal`` in unconstrained space,
        as ``AutoNormal`` gives it (parameters ``"<site>_<prefix>_loc"`` and
        ``"<site>_<prefix>_scale"``)."""
        return dict(getattr(self, "_outside", {}))

    def _param_names(self, name: str) -> tuple[str, str]:
        return f"{name}_{self.prefix}_m", f"{name}_{self.prefix}_phi"

    def _outside_names(self, name: str) -> tuple[str, str]:
        return f"{name}_{self.prefix}_loc", f"{name}_{self.prefix}_scale"

    def _loc_scale(self, ms: dict, phis: dict | None) -> dict[str, tuple[Any, Any]]:
        blocks = self._block_arrays if self._block_split is not None else None
        return _meankl_sites(
            ms,
            phis,
            self._prior_arrays,
            math.log(self.budget),
            self._num_weights,
            blocks,
        )

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        sites = [
            (n, s)
            for n, s in self.prototype_trace.items()
            if s["type"] == "sample" and not s["is_observed"]
        ]
        ms, phis, outside = {}, {}, {}
        for name, site in sites:
            event_dim = self._event_dims[name]
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    stack.enter_context(plates[frame.name])
                if name in self._outside:  # as AutoNormal
                    loc_name, scale_name = self._outside_names(name)
                    init_loc = self._init_locs[name]
                    outside[name] = (
                        numpyro.param(loc_name, init_loc, event_dim=event_dim),
                        numpyro.param(
                            scale_name,
                            jnp.full(jnp.shape(init_loc), self._init_scale),
                            constraint=self.scale_constraint,
                            event_dim=event_dim,
                        ),
                    )
                    continue
                m_name, phi_name = self._param_names(name)
                ms[name] = numpyro.param(
                    m_name, self._init_m[name], event_dim=event_dim
                )
                if self.budget_split != "equal":
                    phis[name] = numpyro.param(
                        phi_name, self._init_phi[name], event_dim=event_dim
                    )
        loc_scale = self._loc_scale(ms, phis if self.budget_split != "equal" else None)
        loc_scale.update(outside)
        guard_finite(
            "AutoMeanKL",
            {
                (n, w): v
                for n, ls in loc_scale.items()
                for w, v in zip(_LS, ls, strict=True)
            },
        )
        result = {}
        for name, site in sites:
            loc, scale = loc_scale[name]
            fn = dist.Normal(loc, scale).to_event(self._event_dims[name])
            if name in self._transforms:
                fn = dist.TransformedDistribution(fn, self._transforms[name])
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    stack.enter_context(plates[frame.name])
                result[name] = numpyro.sample(name, fn)
        return result

    def _params_loc_scale(self, params: dict) -> dict[str, tuple[Any, Any]]:
        if not self._priors:
            raise ValueError(
                "the AutoMeanKL guide has not been run yet (train it first)"
            )
        names = [*(n for k in self._priors for n in self._param_names(k)[:1])]
        if self.budget_split != "equal":
            names += [self._param_names(k)[1] for k in self._priors]
        names += [n for k in self._outside for n in self._outside_names(k)]
        _check_params("AutoMeanKL", params, names)
        ms = {k: params[self._param_names(k)[0]] for k in self._priors}
        phis = None
        if self.budget_split != "equal":
            phis = {k: params[self._param_names(k)[1]] for k in self._priors}
        return self._loc_scale(ms, phis)

    def _outside_loc_scale(self, params: dict) -> dict[str, tuple[Any, Any]]:
        """``{site: (loc, scale)}`` in unconstrained space of the sites outside the
        budget."""
        return {
            k: tuple(params[n] for n in self._outside_names(k)) for k in self._outside
        }

    def _all_loc_scale(self, params: dict) -> dict[str, tuple[Any, Any]]:
        out = self._params_loc_scale(params)
        out.update(self._outside_loc_scale(params))
        return out

    def _to_constrained(self, latent: dict) -> dict:
        """Unconstrained values of every latent site (any leading sample shape) to
        the model's supports."""
        if not self._transforms:
            return latent
        if self._dependent_support:
            return {k: v for k, v in self._constrain(latent).items() if k in latent}
        return {
            k: self._transforms[k](v) if k in self._transforms else v
            for k, v in latent.items()
        }

    def loc_scale(self, params: dict) -> dict[str, tuple[Any, Any]]:
        """``{site: (mu, sigma)}`` of the posterior of the budgeted sites at
        ``params``."""
        return self._params_loc_scale(params)

    @property
    def priors(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """``{site: (nu, rho)}``: the coding distribution (the model's prior) of the
        budgeted sites."""
        return dict(self._priors)

    @property
    def blocks(self) -> Any:
        """The coding blocks (:class:`ppl_hw.core.coding.Blocks`) of
        ``budget_split="blocks"`` (``None`` otherwise or before the first call)."""
        return None if self._block_split is None else self._block_split.blocks

    def kl(self, params: dict) -> tuple[Any, dict[str, Any]]:
        r"""``(total, {site: KL})`` in nats of the **budgeted** sites, recomputed from
        :math:`(\mu, \sigma)` and the prior with the closed form; equals the budget
        up to rounding. The sites outside the budget: :meth:`kl_outside`."""
        per_site = {}
        for name, (loc, scale) in self._params_loc_scale(params).items():
            nu, rho = self._prior_arrays[name]
            kl = _gauss.kl_normal_normal(
                loc, scale, nu.astype(loc.dtype), rho.astype(loc.dtype), xp=_xp
            )
            per_site[name] = jnp.sum(kl)
        return sum(per_site.values()), per_site

    def kl_outside(
        self,
        rng_key: Any,
        params: dict,
        *args: Any,
        num_samples: int = 1000,
        **kwargs: Any,
    ) -> dict[str, tuple[Any, Any]]:
        r"""``{site: (estimate, standard error)}`` in nats of the KL of each site
        outside the budget, by Monte Carlo over ``num_samples`` draws of the guide:
        :math:`\mathbb E_q[\log q(z) - \log p(z \mid \text{parents})]`, the
        model run on each draw (so a hierarchical prior is evaluated at the drawn
        parents; the terms of all sites sum to the KL of the whole posterior). Pass
        the model's arguments. Empty when every site is budgeted."""
        num_samples = gc.check_num_samples(num_samples)
        if not self._outside:
            return {}
        self._params_loc_scale(params)  # checks params
        names = list(self._outside)

        def one(key: Any) -> Any:
            k1, k2 = random.split(key)
            with numpyro.handlers.block():
                g = numpyro.handlers.trace(
                    numpyro.handlers.substitute(
                        numpyro.handlers.seed(self, k1), data=params
                    )
                ).get_trace(*args, **kwargs)
                m = numpyro.handlers.trace(
                    numpyro.handlers.replay(numpyro.handlers.seed(self.model, k2), g)
                ).get_trace(*args, **kwargs)
            return jnp.stack(
                [_site_log_prob(g[n]) - _site_log_prob(m[n]) for n in names]
            )

        terms = jax.lax.map(one, random.split(rng_key, num_samples))
        mean = jnp.mean(terms, axis=0)
        se = jnp.std(terms, axis=0, ddof=1) / math.sqrt(num_samples)
        return {n: (mean[i], se[i]) for i, n in enumerate(names)}

    def sample_posterior(
        self,
        rng_key: Any,
        params: dict,
        *args: Any,
        sample_shape: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> dict[str, Any]:
        latent = self._all_loc_scale(params)
        out = {}
        for key, (name, (loc, scale)) in zip(
            random.split(rng_key, len(latent)), latent.items(), strict=True
        ):
            out[name] = dist.Normal(loc, scale).sample(key, tuple(sample_shape))
        return self._to_constrained(out)

    def median(self, params: dict) -> dict[str, Any]:
        return self._to_constrained(
            {k: loc for k, (loc, _) in self._all_loc_scale(params).items()}
        )

    def quantiles(self, params: dict, quantiles: Any) -> dict[str, Any]:
        q = jnp.asarray(quantiles)
        out = {}
        for name, (loc, scale) in self._all_loc_scale(params).items():
            out[name] = dist.Normal(loc, scale).icdf(
                q.reshape((-1,) + (1,) * jnp.ndim(loc))
            )
        return self._to_constrained(out)


def _site_log_prob(site: dict) -> Any:
    """A trace site's summed log density, with its plates' subsampling scale."""
    lp = jnp.sum(site["fn"].log_prob(site["value"]))
    return lp if site.get("scale") is None else lp * site["scale"]


def _check_params(guide: str, params: Any, names: list[str]) -> None:
    """``params`` must be a dict holding every parameter ``names`` lists."""
    if not isinstance(params, dict):
        raise TypeError(
            f"params must be the {guide} guide's trained parameters (a dict, "
            f"svi.get_params(state)), got {type(params).__name__}"
        )
    missing = [n for n in names if n not in params]
    if missing:
        raise ValueError(
            f"params lacks {len(missing)} of the {guide} guide's parameters: "
            f"{missing[:8]}{' ...' if len(missing) > 8 else ''} (pass "
            "svi.get_params(state) of this guide)"
        )


class AutoDeviceNoise(AutoNormal):
    r"""Mean-field guide with a measured device-noise shape (Patel et al. 2025).

    Like ``AutoNormal``, with :class:`~ppl_hw.numpyro.distributions.DeviceNoise`
    (``loc + scale * e``, ``e ~ noise``) instead of ``Normal`` at each site
    (constrained sites through the same bijection as ``AutoNormal``). With ``Normal``
    priors, ``TraceMeanField_ELBO`` uses the closed-form KL; its gradients in
    ``(loc, scale)`` are the Gaussian ones, which is why trained means and scales
    transfer between shapes (:meth:`with_noise`).

    :param model: the model (continuous latent sites).
    :param noise: the shape, a :class:`~ppl_hw.numpyro.distributions.EmpiricalNoise`.
    :type noise: ~ppl_hw.numpyro.distributions.EmpiricalNoise
    :param init_scale: initial ``scale`` of every site.
    :param prefix: parameter-name prefix (parameters ``"<site>_<prefix>_loc"`` and
        ``"<site>_<prefix>_scale"``, the same as ``AutoNormal``'s).
    :param init_loc_fn: initial locations.
    """

    def __init__(
        self,
        model: Any,
        *,
        noise: EmpiricalNoise,
        init_scale: float = 0.1,
        prefix: str = "auto",
        init_loc_fn: Any = init_to_uniform,
        create_plates: Any = None,
    ):
        if not isinstance(noise, EmpiricalNoise):
            raise TypeError(
                "noise must be a ppl_hw.numpyro.distributions.EmpiricalNoise, "
                f"got {type(noise).__name__}"
            )
        self.noise = noise
        super().__init__(
            model,
            prefix=prefix,
            init_loc_fn=init_loc_fn,
            init_scale=gc.check_init_scale(init_scale),
            create_plates=create_plates,
        )

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        _refuse_discrete("AutoDeviceNoise", self.model, args, kwargs)
        super()._setup_prototype(*args, **kwargs)

    def _site_dist(self, site: dict, loc: Any, scale: Any, event_dim: int) -> Any:
        fn = DeviceNoise(loc, scale, self.noise).to_event(event_dim)
        if _is_real(site):
            return fn
        return dist.TransformedDistribution(fn, biject_to(site["fn"].support))

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        result = {}
        for name, site in self.prototype_trace.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            event_dim = self._event_dims[name]
            init_loc = self._init_locs[name]
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    stack.enter_context(plates[frame.name])
                loc = numpyro.param(
                    f"{name}_{self.prefix}_loc", init_loc, event_dim=event_dim
                )
                scale = numpyro.param(
                    f"{name}_{self.prefix}_scale",
                    jnp.full(jnp.shape(init_loc), self._init_scale),
                    constraint=self.scale_constraint,
                    event_dim=event_dim,
                )
                guard_finite(
                    "AutoDeviceNoise", {(name, "loc"): loc, (name, "scale"): scale}
                )
                result[name] = numpyro.sample(
                    name, self._site_dist(site, loc, scale, event_dim)
                )
        return result

    def with_noise(self, noise: EmpiricalNoise) -> AutoDeviceNoise:
        """The same guide (same parameters, same names) on another noise shape: use it
        with the ``params`` trained under this one.

        :param noise: the new shape.
        :type noise: ~ppl_hw.numpyro.distributions.EmpiricalNoise
        """
        if not isinstance(noise, EmpiricalNoise):
            raise TypeError(
                f"noise must be an EmpiricalNoise, got {type(noise).__name__}"
            )
        new = copy.copy(self)
        new.noise = noise
        return new

    def _locs_scales(self, params: dict) -> tuple[dict, dict]:
        locs = {k: params[f"{k}_{self.prefix}_loc"] for k in self._init_locs}
        scales = {k: params[f"{k}_{self.prefix}_scale"] for k in locs}
        return locs, scales

    def sample_posterior(
        self,
        rng_key: Any,
        params: dict,
        *args: Any,
        sample_shape: tuple[int, ...] = (),
        **kwargs: Any,
    ) -> dict[str, Any]:
        locs, scales = self._locs_scales(params)
        latent = {}
        for key, k in zip(random.split(rng_key, len(locs)), locs, strict=True):
            latent[k] = DeviceNoise(locs[k], scales[k], self.noise).sample(
                key, sample_shape
            )
        return self._constrain(latent)

    def median(self, params: dict) -> dict[str, Any]:
        """The posterior median: ``loc + scale * icdf(1/2)`` of the shape (not ``loc``:
        device noise need not be symmetric), constrained."""
        return self.quantiles(params, 0.5, _squeeze=True)

    def quantiles(
        self, params: dict, quantiles: Any, _squeeze: bool = False
    ) -> dict[str, Any]:
        locs, scales = self._locs_scales(params)
        q = jnp.asarray(quantiles)
        latent = {}
        for k in locs:
            qk = q if _squeeze else q.reshape((-1,) + (1,) * jnp.ndim(locs[k]))
            latent[k] = DeviceNoise(locs[k], scales[k], self.noise).icdf(qk)
        return self._constrain(latent)


def _init_scales_at_median(site: dict | None = None, *, is_scale: Any) -> Any:
    """Scale sites at their prior median, every other site ``init_to_uniform``."""
    if site is None:  # NumPyro's init strategies double as factories
        return functools.partial(_init_scales_at_median, is_scale=is_scale)
    if site["type"] == "sample" and is_scale(site["name"]):
        return init_to_median(site)
    return init_to_uniform(site)


class AutoScaleDropout(AutoDelta):
    r"""Point estimates with scale dropout: MC-Scale-Dropout (Ahmed et al. 2023).

    Every latent site gets a point estimate (``Delta``, as ``AutoDelta``); each
    **scale site** (the per-output-channel scale vector :math:`\alpha` of a binary
    layer, see :func:`ppl_hw.numpyro.nn.binary_dense`) is multiplied by one Bernoulli
    draw per forward pass that drops the **whole** vector with probability ``p``:

    .. math::

        \tilde\alpha = \begin{cases} b\,\alpha + (1 - b) & \texttt{dropped="one"}
        \text{ (default: the scale bypassed)}\\ b\,\alpha/(1 - p) &
        \texttt{dropped="zero"} \text{ (inverted dropout)}\end{cases},\qquad
        b \sim \mathrm{Bernoulli}(1-p).

    One draw per layer, or one for the whole model (``share_across_layers=True``: a
    single stochastic unit, the paper's hardware point). Trained under any ELBO (MAP
    with dropout noise: the draws are not sample sites, so no estimator sees them);
    MC-Scale-Dropout is ``Predictive(model, guide=guide, params=..., num_samples=T)``.
    Each scale site's ``infer`` records its draw (``"scale_dropout"``), so a trace
    counts the stochastic units (:meth:`num_stochastic_units`). Without a random key
    (``median``, ``sample_posterior`` with ``p=0``) the scales are used undropped.

    :param model: the model.
    :param p: drop probability in [0, 1).
    :param dropped: ``"one"`` or ``"zero"``: what a dropped scale becomes (see above).
        ``"zero"`` silences the whole layer (its output is then the bias alone): on
        the digits it makes MC predictions badly under-confident (ECE 0.40 against
        0.06 per layer at p = 0.2, 10 seeds, ``docs/reproductions.md``), hence the
        default ``"one"``.
    :param share_across_batch: one draw per forward pass for the whole batch (the
        only mode implemented: a per-example draw would need per-example scale sites).
    :param share_across_layers: one draw shared by all scale sites.
    :param scale_sites: ``None`` (sites whose name contains ``"scale"``), a list of
        names or a callable ``name -> bool``.
    :param prefix: parameter-name prefix (``"<site>_<prefix>_loc"``, as ``AutoDelta``).
    :param init_loc_fn: initial values (default: scale sites at their prior median,
        the others ``init_to_uniform``).
    """

    def __init__(
        self,
        model: Any,
        *,
        p: float,
        dropped: str = "one",
        share_across_batch: bool = True,
        share_across_layers: bool = False,
        scale_sites: Any = None,
        prefix: str = "auto",
        init_loc_fn: Any = None,
        create_plates: Any = None,
    ):
        self.p = gc.check_scale_dropout(
            p, dropped, share_across_batch, share_across_layers
        )
        self.dropped = dropped
        self.share_across_layers = share_across_layers
        self._is_scale = gc.scale_site_selector(scale_sites)
        if init_loc_fn is None:
            init_loc_fn = functools.partial(
                _init_scales_at_median, is_scale=self._is_scale
            )

        super().__init__(
            model, prefix=prefix, init_loc_fn=init_loc_fn, create_plates=create_plates
        )

    def _setup_prototype(self, *args: Any, **kwargs: Any) -> None:
        _refuse_discrete("AutoScaleDropout", self.model, args, kwargs)
        super()._setup_prototype(*args, **kwargs)
        latent = [
            n
            for n, s in self.prototype_trace.items()
            if s["type"] == "sample" and not s["is_observed"]
        ]
        self._scale_names = [n for n in latent if self._is_scale(n)]
        if not self._scale_names:
            raise ValueError(
                f"AutoScaleDropout found no scale sites among {latent}; pass "
                "scale_sites=[...] (default: names containing 'scale')"
            )

    def _masks(self, dtype: Any) -> dict[str, tuple[Any, int]]:
        """``{scale site: (mask b, unit index)}``, or ``{}`` without dropout."""
        if self.p == 0.0:
            return {}
        key = numpyro.prng_key()
        if key is None:
            return {}
        units = 1 if self.share_across_layers else len(self._scale_names)
        keep = random.bernoulli(key, 1.0 - self.p, (units,)).astype(dtype)
        return {
            name: (
                keep[0 if self.share_across_layers else i],
                0 if self.share_across_layers else i,
            )
            for i, name in enumerate(self._scale_names)
        }

    def _drop(self, value: Any, b: Any) -> Any:
        if self.dropped == "zero":
            return value * (b / (1.0 - self.p))
        return b * value + (1.0 - b)

    def __call__(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        if self.prototype_trace is None:
            self._setup_prototype(*args, **kwargs)
        plates = self._create_plates(*args, **kwargs)
        masks = self._masks(jnp.result_type(float))
        result = {}
        for name, site in self.prototype_trace.items():
            if site["type"] != "sample" or site["is_observed"]:
                continue
            event_dim = self._event_dims[name]
            with ExitStack() as stack:
                for frame in site["cond_indep_stack"]:
                    stack.enter_context(plates[frame.name])
                value = numpyro.param(
                    f"{name}_{self.prefix}_loc",
                    self._init_locs[name],
                    constraint=site["fn"].support,
                    event_dim=event_dim,
                )
                guard_finite("AutoScaleDropout", {(name, "value"): value})
                infer = {}
                if name in masks:
                    b, unit = masks[name]
                    value = self._drop(value, b)
                    infer = {"scale_dropout": {"mask": b, "unit": unit}}
                result[name] = numpyro.sample(
                    name, dist.Delta(value, event_dim=event_dim), infer=infer
                )
        return result

    def without_dropout(self) -> AutoScaleDropout:
        """The same guide (same parameters) with ``p = 0``: the deterministic
        network."""
        new = copy.copy(self)
        new.p = 0.0
        return new

    def num_stochastic_units(
        self, *args: Any, rng_key: Any = None, **kwargs: Any
    ) -> int:
        """How many Bernoulli draws one forward pass makes, counted from a trace of
        the guide (the number of binary scale sites, or 1 with
        ``share_across_layers``; 0 when ``p = 0``)."""
        key = random.PRNGKey(0) if rng_key is None else rng_key
        tr = numpyro.handlers.trace(numpyro.handlers.seed(self, key)).get_trace(
            *args, **kwargs
        )
        units = {
            s["infer"]["scale_dropout"]["unit"]
            for s in tr.values()
            if s["type"] == "sample" and "scale_dropout" in s.get("infer", {})
        }
        return len(units)


from ._pfp import AutoDiscreteWeight  # noqa: E402  (defined with PFP_ELBO)
