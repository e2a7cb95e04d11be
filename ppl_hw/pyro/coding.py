"""Pyro host glue of MIRACLE coding: reads a trained guide's Gaussians for
:func:`ppl_hw.coding.encode` and makes torch tensors for :func:`ppl_hw.coding.decode`
(registered with :mod:`ppl_hw.common.coding` on import)."""

from __future__ import annotations

from typing import Any

import torch
from pyro.distributions.transforms import biject_to
from pyro.infer.autoguide import AutoGuide, AutoNormal

from ..common import coding as common
from .autoguide import (
    AutoMeanKL,
    _is_real,
    _latent_sites,
    _normal_prior,
    _read_params,
)
from .distributions._base import base_distribution

__all__: list[str] = []


@common.GAUSSIANS.register(AutoGuide)
def _gaussians(guide: Any, params: Any) -> tuple[dict, dict, dict]:
    if isinstance(guide, AutoMeanKL):
        values = _read_params(guide, params)
        with torch.no_grad():
            post = {
                k: (m.double().numpy(), s.double().numpy())
                for k, (m, s) in guide._loc_scale(values).items()
            }
            points = {}
            for name in guide.outside_sites:
                loc = values[guide.param_names()[name][0]]
                if name in guide._transforms:
                    loc = guide._transforms[name](loc)
                points[name] = loc.double().numpy()
        return post, dict(guide.priors), points
    if type(guide) is not AutoNormal:
        raise common.not_gaussian(guide)
    if guide.prototype_trace is None:
        raise common.not_run_yet("AutoNormal")
    latent = dict(_latent_sites(guide.prototype_trace))
    names = {
        n: [f"{guide._pyro_name}.{g}.{n}" for g in ("locs", "scales")] for n in latent
    }
    values = _read_params(guide, params, names)
    post, prior, points = {}, {}, {}
    with torch.no_grad():
        for name, site in latent.items():
            loc, scale = (values[n] for n in names[name])
            if isinstance(
                base_distribution(site["fn"]), torch.distributions.Normal
            ) and (_is_real(site)):
                loc64, scale64 = loc.double().numpy(), scale.double().numpy()
                post[name] = (loc64, scale64)
                prior[name] = _normal_prior(site, torch.Size(loc64.shape))
            else:  # stored as its posterior median
                points[name] = biject_to(site["fn"].support)(loc).double().numpy()
    return post, prior, points


common.ARRAYS.register("pyro")(torch.from_numpy)
