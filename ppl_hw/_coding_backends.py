"""The Gaussian posterior and the Normal prior of each site of a trained guide, per
backend, for :mod:`ppl_hw.coding` (imported only when a guide of that backend is
coded)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["numpyro_gaussians", "pyro_gaussians"]


def _not_gaussian(guide: Any) -> TypeError:
    return TypeError(
        "encode needs an AutoMeanKL or AutoNormal guide (NumPyro or Pyro), got "
        f"{type(guide).__name__}"
    )


def _check_real(name: str, fn: Any, is_real: bool) -> None:
    if not is_real:
        raise ValueError(
            f"site {name!r} is not real-valued ({type(fn).__name__}): MIRACLE codes "
            "real sites against Normal priors"
        )


def numpyro_gaussians(guide: Any, params: Any) -> tuple[dict, dict]:
    from numpyro.distributions import constraints
    from numpyro.infer.autoguide import AutoNormal

    from .numpyro.autoguide import AutoMeanKL, _normal_prior

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
        raise _not_gaussian(guide)
    if guide.prototype_trace is None:
        raise ValueError("the AutoNormal guide has not been run yet (train it first)")
    post, prior = {}, {}
    for name, site in guide.prototype_trace.items():
        if site["type"] != "sample" or site["is_observed"]:
            continue
        if site["fn"].support is not constraints.real and not (
            isinstance(site["fn"].support, constraints.independent)
            and site["fn"].support.base_constraint is constraints.real
        ):
            _check_real(name, site["fn"], False)
        loc = np.asarray(params[f"{name}_{guide.prefix}_loc"], np.float64)
        scale = np.asarray(params[f"{name}_{guide.prefix}_scale"], np.float64)
        post[name] = (loc, scale)
        prior[name] = _normal_prior(site, loc.shape)
    return post, prior


def pyro_gaussians(guide: Any) -> tuple[dict, dict]:
    import torch
    from pyro.infer.autoguide import AutoNormal

    from .pyro.autoguide import AutoMeanKL, _is_real, _latent_sites, _normal_prior

    if isinstance(guide, AutoMeanKL):
        with torch.no_grad():
            post = {
                k: (m.double().numpy(), s.double().numpy())
                for k, (m, s) in guide.loc_scale().items()
            }
        return post, dict(guide.priors)
    if type(guide) is not AutoNormal:
        raise _not_gaussian(guide)
    if guide.prototype_trace is None:
        raise ValueError("the AutoNormal guide has not been run yet (train it first)")
    post, prior = {}, {}
    with torch.no_grad():
        for name, site in _latent_sites(guide.prototype_trace):
            _check_real(name, site["fn"], _is_real(site))
            loc, scale = guide._get_loc_and_scale(name)
            loc64, scale64 = loc.double().numpy(), scale.double().numpy()
            post[name] = (loc64, scale64)
            prior[name] = _normal_prior(site, torch.Size(loc64.shape))
    return post, prior
