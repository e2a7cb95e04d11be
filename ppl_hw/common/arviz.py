"""The common layer of :mod:`ppl_hw.arviz`: the registries the adapters fill
(``numpyro/arviz.py``, ``pyro/arviz.py``), the array helper both use, and the one
place that knows the two ArviZ lines apart (:func:`to_arviz`).

ArviZ 0.x (0.20 to 0.23) builds ``InferenceData`` with ``az.from_dict(posterior=...,
log_likelihood=..., ...)``; ArviZ 1.x builds an ``xarray.DataTree`` with
``az.from_dict({"posterior": {...}, ...})`` and has no ``from_pyro``. The adapters
return the groups as plain NumPy arrays, the same on both lines, and :func:`to_arviz`
hands them to whichever ArviZ is installed."""

from __future__ import annotations

from importlib import metadata
from typing import Any

import numpy as np

from .registry import Registry

__all__ = [
    "DATA_GROUPS",
    "GROUPS",
    "MCMC_CONVERTERS",
    "SAMPLE_GROUPS",
    "arviz_major",
    "check_groups",
    "datatree_name",
    "datatree_names",
    "psis_constant_tails",
    "to_arviz",
    "with_chain",
]

#: guide class (or backend name, for guides that are plain functions) ->
#: ``groups(model, guide, args, kwargs, num_samples, rng_key) -> dict`` of the
#: ``posterior``, ``posterior_predictive``, ``log_likelihood`` and ``observed_data``
#: groups (NumPy arrays; the first three with a leading chain axis)
GROUPS = Registry("InferenceData converter")

#: MCMC class -> ``convert(mcmc, *, log_likelihood, coords, dims)`` returning the
#: ArviZ object of the installed line
MCMC_CONVERTERS = Registry("MCMC converter")

#: groups whose variables carry the leading ``(chain, draw)`` axes (the groups both
#: ArviZ lines' ``from_dict`` accept)
SAMPLE_GROUPS = (
    "posterior",
    "posterior_predictive",
    "predictions",
    "sample_stats",
    "log_likelihood",
    "prior",
    "prior_predictive",
    "sample_stats_prior",
)
#: groups of data, without sample axes
DATA_GROUPS = ("observed_data", "constant_data", "predictions_constant_data")


def with_chain(d: dict) -> dict:
    """NumPy arrays with a leading chain axis of one."""
    return {k: np.asarray(v)[None] for k, v in d.items()}


def arviz_major() -> int:
    """The major version of the installed ArviZ (``0`` or ``1``), read from the
    package metadata without importing ArviZ."""
    try:
        version = metadata.version("arviz")
    except metadata.PackageNotFoundError:
        raise ImportError(
            "ppl_hw.arviz needs ArviZ: pip install 'ppl_hw[numpyro]' or "
            "'ppl_hw[pyro]' (or arviz itself)"
        ) from None
    return int(version.split(".")[0])


def _check_mapping(name: str, value: Any) -> None:
    if value is not None and not isinstance(value, dict):
        raise TypeError(f"{name} must be a dict or None, got {value!r}")


def check_groups(groups: Any) -> dict:
    """``groups`` (``{group: {variable: array}}``) checked field by field, before
    anything is converted: known group names, string variable names, and the
    ``(chain, draw)`` axes on the sample groups. Returns the arrays as NumPy arrays
    (their dtype kept)."""
    if not isinstance(groups, dict):
        raise TypeError(
            f"groups must be a dict {{group: {{variable: array}}}}, got {groups!r}"
        )
    if not groups:
        raise ValueError("groups must hold at least one group, got {}")
    out: dict[str, dict[str, np.ndarray]] = {}
    for group, variables in groups.items():
        if group not in SAMPLE_GROUPS + DATA_GROUPS:
            raise ValueError(
                f"groups: unknown group {group!r}; the groups both ArviZ lines "
                f"accept are {list(SAMPLE_GROUPS + DATA_GROUPS)}"
            )
        if not isinstance(variables, dict):
            raise TypeError(
                f"groups[{group!r}] must be a dict {{variable: array}}, got "
                f"{type(variables).__name__}"
            )
        arrays = {}
        for name, value in variables.items():
            if not isinstance(name, str):
                raise TypeError(
                    f"groups[{group!r}]: variable names must be str, got {name!r}"
                )
            array = np.asarray(value)
            if array.dtype == object:
                raise TypeError(
                    f"groups[{group!r}][{name!r}] must be a numeric array, got "
                    f"{type(value).__name__} of objects"
                )
            if group in SAMPLE_GROUPS and array.ndim < 2:
                raise ValueError(
                    f"groups[{group!r}][{name!r}] must have leading (chain, draw) "
                    f"axes, got shape {array.shape}"
                )
            arrays[name] = array
        out[group] = arrays
    return out


def to_arviz(
    groups: dict,
    *,
    coords: dict | None = None,
    dims: dict | None = None,
) -> Any:
    """The ArviZ object of ``groups`` for the installed ArviZ line:
    ``arviz.InferenceData`` on 0.x, ``xarray.DataTree`` on 1.x, with the same groups,
    variables, dimensions (``chain``, ``draw``, then ``dims`` or ArviZ's default
    ``<var>_dim_<i>``) and values.

    :param groups: ``{group: {variable: array}}``; the sample groups (``posterior``,
        ``sample_stats``, ``log_likelihood``, ...) with leading ``(chain, draw)``
        axes, the data groups (``observed_data``, ``constant_data``, ...) without.
    :param coords: dimension name -> coordinate values.
    :param dims: variable name -> names of its non-sample dimensions.
    """
    _check_mapping("coords", coords)
    _check_mapping("dims", dims)
    groups = check_groups(groups)
    major = arviz_major()
    import arviz as az

    if major >= 1:
        groups, dims = datatree_names(groups, dims)
        return az.from_dict(groups, coords=coords, dims=dims)
    return az.from_dict(**groups, coords=coords, dims=dims)


def datatree_name(name: str) -> str:
    """A variable's name on ArviZ 1.x: xarray's ``DataTree`` takes ``/`` as a path
    separator and refuses it in variable names, so ``/`` becomes ``.`` (flax's
    ``random_flax_module`` names its sites ``net/Dense_0.kernel``: on ArviZ 1.x the
    variable is ``net.Dense_0.kernel``). Other names are unchanged."""
    return name.replace("/", ".")


def datatree_names(groups: dict, dims: dict | None) -> tuple[dict, dict | None]:
    """``groups`` and ``dims`` with :func:`datatree_name` applied to the variable
    names; two names that would become one are refused, naming both."""
    out = {}
    for group, variables in groups.items():
        renamed: dict[str, Any] = {}
        original: dict[str, str] = {}
        for name, value in variables.items():
            new = datatree_name(name)
            if new in renamed:
                raise ValueError(
                    f"groups[{group!r}]: variables {original[new]!r} and {name!r} "
                    f"both become {new!r} on ArviZ 1.x ('/' is not allowed in a "
                    "DataTree variable name and is replaced by '.'); rename one site"
                )
            renamed[new], original[new] = value, name
        out[group] = renamed
    if dims is not None:
        dims = {datatree_name(k): v for k, v in dims.items()}
    return out, dims


def psis_constant_tails(data: Any, var_name: str | None, reff: Any) -> tuple:
    """PSIS log weights and Pareto k for ArviZ 1.x's ``loo``, observation by
    observation, for a log likelihood where ArviZ 1.x's PSIS raises ("All tail values
    are the same": the draws in an observation's tail have one log likelihood, e.g.
    exactly 0, a probability of 1 in floating point, at every draw). Those
    observations get what ArviZ 0.x gives them: their raw log importance ratios,
    unsmoothed (normalised), and k = inf (no Pareto fit); for an observation whose
    log likelihood is the same at every draw the weights are then uniform and its
    ``elpd_loo`` term is exactly that value. Every other observation gets ArviZ
    1.x's own PSIS."""
    import xarray as xr
    from arviz_stats.base import array_stats
    from arviz_stats.utils import get_log_likelihood
    from scipy.special import logsumexp

    log_lik = get_log_likelihood(data, var_name=var_name)
    obs_dims = [d for d in log_lik.dims if d not in ("chain", "draw")]
    log_lik = log_lik.transpose("chain", "draw", *obs_dims)
    if reff is None:  # as ArviZ 1.x's loo: 1 for one chain, else mean ESS / draws
        from arviz_stats.loo.loo_helper import _get_r_eff

        reff = _get_r_eff(data, log_lik.sizes["chain"] * log_lik.sizes["draw"])
    values = np.asarray(log_lik.values, dtype=np.float64)
    flat = values.reshape(values.shape[0] * values.shape[1], -1)
    weights = np.empty_like(flat)
    khat = np.empty(flat.shape[1])
    for j in range(flat.shape[1]):
        try:
            weights[:, j], khat[j] = array_stats.psislw(flat[:, j], r_eff=reff)
        except ValueError:  # a constant tail: no Pareto fit, raw ratios (0.x's)
            ratios = -flat[:, j]
            weights[:, j], khat[j] = ratios - logsumexp(ratios), np.inf
    log_weights = xr.DataArray(
        weights.reshape(values.shape), dims=log_lik.dims, coords=log_lik.coords
    )
    obs_coords = {d: log_lik.coords[d] for d in obs_dims if d in log_lik.coords}
    pareto_k = xr.DataArray(
        khat.reshape(values.shape[2:]), dims=obs_dims, coords=obs_coords
    )
    return log_weights, pareto_k
