"""ArviZ helpers: :func:`from_guide` turns a trained guide into ``InferenceData``.

``az.from_numpyro`` / ``az.from_pyro`` read MCMC objects; variational guides need
this helper. It works for any NumPyro or Pyro guide (ppl_hw's or the hosts').
"""

from __future__ import annotations

from typing import Any

from .common.arviz import GROUPS as _GROUPS

__all__ = ["from_guide"]


def from_guide(
    model: Any,
    guide: Any,
    *args: Any,
    num_samples: int = 1000,
    rng_key: Any = None,
    **kwargs: Any,
) -> Any:
    """``arviz.InferenceData`` of a guide's posterior: groups ``posterior`` (guide
    samples of the model's latent sites), ``posterior_predictive`` (the observed
    sites, resampled under each posterior draw), ``log_likelihood`` (pointwise, for
    ``az.loo`` / ``az.waic``) and ``observed_data``; one chain.

    NumPyro: ``from_guide(model, guide, params, *args, num_samples=..., rng_key=...,
    **kwargs)``. Pyro: ``from_guide(model, guide, *args, num_samples=..., **kwargs)``
    (no ``params``: the param store; randomness from ``pyro.set_rng_seed``).

    :param model: the model.
    :param guide: its trained guide.
    :param args: (NumPyro: ``params`` first, then) the model's arguments, including
        the observed data.
    :param num_samples: posterior draws.
    :param rng_key: a JAX key (NumPyro; default ``PRNGKey(0)``).
    :param kwargs: the model's keyword arguments.
    """
    if (
        isinstance(num_samples, bool)
        or not isinstance(num_samples, int)
        or num_samples < 1
    ):
        raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
    if not callable(guide):
        raise TypeError(
            f"guide must be a trained guide (a callable such as an autoguide), got "
            f"{guide!r}"
        )
    if not callable(model):
        raise TypeError(f"model must be a callable model, got {model!r}")
    groups = _GROUPS.lookup(guide)
    if groups is None:
        # a guide written as a plain function: NumPyro's calling convention passes
        # the trained params first, Pyro's reads them from the param store
        numpyro_style = bool(args) and isinstance(args[0], dict)
        groups = _GROUPS.by_name("numpyro" if numpyro_style else "pyro")
    data = groups(model, guide, args, kwargs, num_samples, rng_key)
    import arviz as az

    return az.from_dict(**data)
