"""NumPyro host glue of MIRACLE coding: reads a trained guide's Gaussians for
:func:`ppl_hw.coding.encode` and makes JAX arrays for :func:`ppl_hw.coding.decode`
(registered with :mod:`ppl_hw.common.coding` on import)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro.infer.autoguide import AutoGuide, AutoNormal

from ..common import coding as common
from .autoguide import AutoMeanKL, _check_params, _is_real, _normal_prior
from .distributions._base import base_distribution

__all__: list[str] = []


@common.GAUSSIANS.register(AutoGuide)
def _gaussians(guide: Any, params: Any) -> tuple[dict, dict, dict]:
    if not isinstance(params, dict):
        raise TypeError(
            "encode needs the trained params of a NumPyro guide "
            f"(svi.get_params(state)), got {type(params).__name__}"
        )
    if isinstance(guide, AutoMeanKL):
        post = {
            k: (np.asarray(m, np.float64), np.asarray(s, np.float64))
            for k, (m, s) in guide.loc_scale(params).items()
        }
        median = guide.median(params) if guide.outside_sites else {}
        points = {k: np.asarray(median[k], np.float64) for k in guide.outside_sites}
        return post, dict(guide.priors), points
    if type(guide) is not AutoNormal:
        raise common.not_gaussian(guide)
    if guide.prototype_trace is None:
        raise common.not_run_yet("AutoNormal")
    latent = {
        n: s
        for n, s in guide.prototype_trace.items()
        if s["type"] == "sample" and not s["is_observed"]
    }
    coded = [
        n
        for n, s in latent.items()
        if type(base_distribution(s["fn"])) is dist.Normal and _is_real(s)
    ]
    _check_params(
        "AutoNormal",
        params,
        [f"{n}_{guide.prefix}_{p}" for n in latent for p in ("loc", "scale")],
    )
    post, prior = {}, {}
    for name in coded:
        loc = np.asarray(params[f"{name}_{guide.prefix}_loc"], np.float64)
        scale = np.asarray(params[f"{name}_{guide.prefix}_scale"], np.float64)
        post[name] = (loc, scale)
        prior[name] = _normal_prior(latent[name], loc.shape)
    points = {}
    if len(coded) < len(latent):
        median = guide.median(params)
        points = {
            n: np.asarray(median[n], np.float64) for n in latent if n not in coded
        }
    return post, prior, points


common.ARRAYS.register("numpyro")(jnp.asarray)
