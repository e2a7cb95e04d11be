"""Pyro host glue of MIRACLE coding: reads a trained guide's Gaussians for
:func:`ppl_hw.coding.encode` and makes torch tensors for :func:`ppl_hw.coding.decode`
(registered with :mod:`ppl_hw.common.coding` on import)."""

from __future__ import annotations

from typing import Any

import torch
from pyro.infer.autoguide import AutoGuide, AutoNormal

from ..common import coding as common
from .autoguide import AutoMeanKL, _is_real, _latent_sites, _normal_prior

__all__: list[str] = []


@common.GAUSSIANS.register(AutoGuide)
def _gaussians(guide: Any, params: Any) -> tuple[dict, dict]:
    if isinstance(guide, AutoMeanKL):
        with torch.no_grad():
            post = {
                k: (m.double().numpy(), s.double().numpy())
                for k, (m, s) in guide.loc_scale().items()
            }
        return post, dict(guide.priors)
    if type(guide) is not AutoNormal:
        raise common.not_gaussian(guide)
    if guide.prototype_trace is None:
        raise common.not_run_yet("AutoNormal")
    post, prior = {}, {}
    with torch.no_grad():
        for name, site in _latent_sites(guide.prototype_trace):
            common.check_real_site(name, site["fn"], _is_real(site))
            loc, scale = guide._get_loc_and_scale(name)
            loc64, scale64 = loc.double().numpy(), scale.double().numpy()
            post[name] = (loc64, scale64)
            prior[name] = _normal_prior(site, torch.Size(loc64.shape))
    return post, prior


common.ARRAYS.register("pyro")(torch.from_numpy)
