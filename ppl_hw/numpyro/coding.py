"""NumPyro host glue of MIRACLE coding: reads a trained guide's Gaussians for
:func:`ppl_hw.coding.encode` and makes JAX arrays for :func:`ppl_hw.coding.decode`
(registered with :mod:`ppl_hw.common.coding` on import)."""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np
from numpyro.distributions import constraints
from numpyro.infer.autoguide import AutoGuide, AutoNormal

from ..common import coding as common
from .autoguide import AutoMeanKL, _normal_prior

__all__: list[str] = []


@common.GAUSSIANS.register(AutoGuide)
def _gaussians(guide: Any, params: Any) -> tuple[dict, dict]:
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
        return post, dict(guide.priors)
    if type(guide) is not AutoNormal:
        raise common.not_gaussian(guide)
    if guide.prototype_trace is None:
        raise common.not_run_yet("AutoNormal")
    post, prior = {}, {}
    for name, site in guide.prototype_trace.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        support = site["fn"].support
        common.check_real_site(
            name,
            site["fn"],
            support is constraints.real
            or (
                isinstance(support, constraints.independent)
                and support.base_constraint is constraints.real
            ),
        )
        loc = np.asarray(params[f"{name}_{guide.prefix}_loc"], np.float64)
        scale = np.asarray(params[f"{name}_{guide.prefix}_scale"], np.float64)
        post[name] = (loc, scale)
        prior[name] = _normal_prior(site, loc.shape)
    return post, prior


common.ARRAYS.register("numpyro")(jnp.asarray)
