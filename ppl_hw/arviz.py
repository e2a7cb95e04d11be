"""ArviZ helpers for both ArviZ lines: :func:`from_guide` turns a trained guide, and
:func:`from_mcmc` an MCMC run (NumPyro or Pyro), into the installed ArviZ's object;
:func:`from_dict` does it for groups of arrays.

ArviZ 0.x returns ``arviz.InferenceData``; ArviZ 1.x returns ``xarray.DataTree``, has
no ``from_pyro`` and its ``from_dict`` takes one nested dict. These functions give
the same groups, variables, dimensions and values on both lines (the object's type
follows the line; :func:`arviz_major` tells which is installed).
"""

from __future__ import annotations

from typing import Any

from .common.arviz import GROUPS as _GROUPS
from .common.arviz import MCMC_CONVERTERS as _MCMC
from .common.arviz import arviz_major, datatree_name, psis_constant_tails, to_arviz

__all__ = ["arviz_major", "from_dict", "from_guide", "from_mcmc", "loo", "var_name"]


def loo(data: Any, **kwargs: Any) -> Any:
    """``az.loo(data, **kwargs)`` (PSIS-LOO) on either ArviZ line, also where
    ArviZ 1.x's raises on a log likelihood with a constant tail.

    A confidently classified training image has log likelihood exactly 0 (probability
    1 in floating point) at every draw, or at all the draws of its tail: ArviZ 0.x
    gives that observation k = inf, unsmoothed weights and a warning; ArviZ 1.x's PSIS
    raises ``ValueError: All tail values are the same`` and no LOO is computed. On
    1.x, this function then computes the PSIS weights observation by observation
    (ArviZ 1.x's own PSIS for every observation it can fit, 0.x's treatment for the
    others, see :func:`ppl_hw.common.arviz.psis_constant_tails`) and passes them to
    ``az.loo``. For an observation whose log likelihood is the same at every draw the
    weights are uniform, so its ``elpd_loo`` term is exactly that value on both
    lines. Otherwise (ArviZ 0.x, or no constant tail) it is ``az.loo`` itself.

    :param data: the ArviZ object (with a ``log_likelihood`` group).
    :param kwargs: ``az.loo``'s arguments (``pointwise``, ``var_name``, ``reff``, ...).
    :returns: ``az.loo``'s result (``elpd_loo`` on 0.x, ``elpd`` on 1.x).
    """
    import arviz as az

    if arviz_major() < 1 or kwargs.get("log_weights") is not None:
        return az.loo(data, **kwargs)
    try:
        return az.loo(data, **kwargs)
    except ValueError as err:
        if "All tail values are the same" not in str(err):
            raise
    log_weights, pareto_k = psis_constant_tails(
        data, kwargs.get("var_name"), kwargs.get("reff")
    )
    return az.loo(data, log_weights=log_weights, pareto_k=pareto_k, **kwargs)


def from_dict(
    groups: dict, *, coords: dict | None = None, dims: dict | None = None
) -> Any:
    """The ArviZ object of groups of arrays, on either ArviZ line: ArviZ 1.x's
    calling convention, ``from_dict({"posterior": {"w": draws}, "observed_data":
    {"y": y}}, dims={"y": ["obs"]})``, which on ArviZ 0.x becomes
    ``az.from_dict(posterior=..., observed_data=..., dims=...)``.

    :param groups: ``{group: {variable: array}}``. The sample groups
        (``posterior``, ``posterior_predictive``, ``predictions``, ``sample_stats``,
        ``log_likelihood``, ``prior``, ``prior_predictive``, ``sample_stats_prior``)
        have leading ``(chain, draw)`` axes; the data groups (``observed_data``,
        ``constant_data``, ``predictions_constant_data``) have none.
    :param coords: dimension name -> coordinate values.
    :param dims: variable name -> names of its dimensions after ``(chain, draw)``
        (default ``<var>_dim_0``, ``<var>_dim_1``, ...).
    :returns: ``arviz.InferenceData`` (ArviZ 0.x) or ``xarray.DataTree`` (1.x).
    """
    return to_arviz(groups, coords=coords, dims=dims)


def from_mcmc(
    mcmc: Any,
    *,
    log_likelihood: bool = True,
    coords: dict | None = None,
    dims: dict | None = None,
) -> Any:
    """The ArviZ object of a finished MCMC run, NumPyro's or Pyro's, on either ArviZ
    line (``InferenceData`` on 0.x, ``DataTree`` on 1.x).

    * ``numpyro.infer.MCMC``: ArviZ's own ``from_numpyro`` (on both lines), with
      ``log_likelihood`` passed explicitly (its default differs: on in 0.x, off in
      1.x). Dimensions named after the model's plates, as ArviZ infers them.
    * ``pyro.infer.MCMC`` (Pyro's ``NUTS``/``HMC``, ppl_hw's ``SGHMC``, any kernel):
      the semantics of ArviZ 0.x's ``from_pyro``, which ArviZ 1.x lacks.
      ``posterior``: ``mcmc.get_samples(group_by_chain=True)``; ``sample_stats``:
      ``diverging`` (chain, draw), from the divergences the kernel reports (SGHMC:
      none, it has no accept step); ``log_likelihood``: per observed site, pointwise
      (the site's ``log_prob`` of its value, without scale or mask), by one
      vectorized trace of the model under all draws as ``from_pyro`` does, or,
      where the model does not vectorize (``from_pyro`` then drops the group with a
      warning), by replaying the model at each draw; ``observed_data``: the observed
      sites' values. ``pyro.deterministic`` sites are not observations (``from_pyro``
      lists them). The model is ``mcmc.kernel.model``: for SGHMC on a model with a
      subsampled plate that is ``None`` (Pyro cannot force the plate to full data),
      and the result then has ``posterior`` and ``sample_stats`` only.

    :param mcmc: a ``numpyro.infer.MCMC`` or ``pyro.infer.MCMC`` after ``run``.
    :param log_likelihood: compute the pointwise log likelihood (for ``az.loo``).
    :param coords: dimension name -> coordinate values.
    :param dims: variable name -> names of its non-sample dimensions.
    """
    if not isinstance(log_likelihood, bool):
        raise TypeError(f"log_likelihood must be a bool, got {log_likelihood!r}")
    for name, value in (("coords", coords), ("dims", dims)):
        if value is not None and not isinstance(value, dict):
            raise TypeError(f"{name} must be a dict or None, got {value!r}")
    convert = _MCMC.lookup(mcmc)
    if convert is None:
        raise TypeError(
            "mcmc must be a numpyro.infer.MCMC or pyro.infer.MCMC (after run), got "
            f"{type(mcmc).__name__}"
        )
    return convert(mcmc, log_likelihood=log_likelihood, coords=coords, dims=dims)


def from_guide(
    model: Any,
    guide: Any,
    *args: Any,
    num_samples: int = 1000,
    rng_key: Any = None,
    **kwargs: Any,
) -> Any:
    """The ArviZ object (``arviz.InferenceData`` on ArviZ 0.x, ``xarray.DataTree``
    on 1.x) of a guide's posterior: groups ``posterior`` (guide
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
    return to_arviz(groups(model, guide, args, kwargs, num_samples, rng_key))


def var_name(site: str) -> str:
    """The name of a model site's variable in what :mod:`ppl_hw.arviz` returns on the
    installed ArviZ line: the site name on ArviZ 0.x; on ArviZ 1.x with ``/``
    replaced by ``.`` (xarray's ``DataTree`` takes ``/`` as a path separator, and
    flax's ``random_flax_module`` names its sites ``net/Dense_0.kernel``), e.g.
    ``az.summary(idata, var_names=[var_name("net/Dense_2.bias")])``.

    :param site: the model's site name.
    """
    if not isinstance(site, str):
        raise TypeError(f"site must be a site name (str), got {site!r}")
    return datatree_name(site) if arviz_major() >= 1 else site
