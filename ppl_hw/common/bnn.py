"""Argument checks, site names and the docstring shared by the backends'
``bnn.bayesian``: a Bayesian network made in one call from a network the user
already wrote (see :func:`ppl_hw.numpyro.bnn.bayesian` and
:func:`ppl_hw.pyro.bnn.bayesian`).

Nothing here imports a host: the adapters pass their own distribution base class
where a check needs one.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from ..core.checks import check_choice, check_int, check_number

__all__ = [
    "BAYESIAN_DOC",
    "DATA_PLATE",
    "LIKELIHOODS",
    "OBS_SITE",
    "OUTPUT_SITES",
    "SIGMA_SITE",
    "check_call",
    "check_layers",
    "check_likelihood",
    "check_obs_shape",
    "check_parameters",
    "check_prior",
    "check_reserved",
    "layer_names",
    "select_parameters",
    "squeezes_output",
]

LIKELIHOODS = ("categorical", "normal", "bernoulli", None)
#: the deterministic site that records the network's output, per likelihood
OUTPUT_SITES = {
    "categorical": "logits",
    "bernoulli": "logits",
    "normal": "mu",
    None: "out",
}
OBS_SITE = "obs"
SIGMA_SITE = "sigma"
DATA_PLATE = "data"


def check_prior(name: str, prior: Any, base: Any, expected: str) -> Any:
    """``prior`` is an instance of the host's distribution class ``base`` (described
    as ``expected`` in the message) with batch and event shape ``()``."""
    if not isinstance(prior, base):
        raise TypeError(
            f"{name} must be {expected} with event shape () (a scalar distribution, "
            f"e.g. Normal(0.0, 1.0)), got {prior!r}"
        )
    event, batch = tuple(prior.event_shape), tuple(prior.batch_shape)
    if event != () or batch != ():
        raise ValueError(
            f"{name} must be a scalar distribution (batch and event shape ()), got "
            f"{prior!r} with batch shape {batch} and event shape {event}; it is "
            "expanded to each parameter's shape"
        )
    return prior


def _check_positive_support(name: str, prior: Any) -> None:
    low = getattr(prior.support, "lower_bound", None)
    try:
        ok = low is not None and float(low) >= 0.0
    except (TypeError, ValueError):  # a batched bound cannot be one float
        ok = False
    if not ok:
        raise ValueError(
            f"{name} must have positive support (it is the noise scale), got "
            f"{prior!r} with support {prior.support}"
        )


def check_likelihood(
    likelihood: Any, scale: Any, sigma_prior: Any, base: Any, expected: str
) -> tuple[Any, float | None]:
    """The likelihood's options: returns ``(likelihood, scale)`` with ``scale`` a
    float (fixed Normal noise) or ``None`` (learned ``"sigma"`` site, or no noise
    scale for the other likelihoods)."""
    check_choice("likelihood", likelihood, LIKELIHOODS)
    if likelihood != "normal":
        for arg, value in (("scale", scale), ("sigma_prior", sigma_prior)):
            if value is not None:
                raise ValueError(
                    f"{arg} applies to likelihood='normal' only, got {arg}={value!r} "
                    f"with likelihood={likelihood!r}"
                )
        return likelihood, None
    scale = check_number("scale", scale, low=0.0, open_low=True, allow_none=True)
    if scale is not None and sigma_prior is not None:
        raise ValueError(
            f"give either scale (fixed noise) or sigma_prior (learned noise), got "
            f"scale={scale!r} and sigma_prior={sigma_prior!r}"
        )
    if sigma_prior is not None:
        check_prior("sigma_prior", sigma_prior, base, expected)
        _check_positive_support("sigma_prior", sigma_prior)
    return likelihood, scale


def check_layers(layers: Any) -> tuple[str, ...] | None:
    """``layers`` is ``None`` or a non-empty list of names (strings); the names
    themselves are checked against the module by :func:`select_parameters`."""
    if layers is None:
        return None
    if isinstance(layers, str) or not isinstance(layers, Iterable):
        raise TypeError(
            "layers must be a list of layer or parameter names or None, got "
            f"{layers!r}"
            + (
                f" (for one layer write [{layers!r}])"
                if isinstance(layers, str)
                else ""
            )
        )
    layers = tuple(layers)
    bad = [v for v in layers if not isinstance(v, str)]
    if bad:
        raise TypeError(
            f"layers must hold strings (names), got {bad[0]!r} in {list(layers)}"
        )
    if not layers:
        raise ValueError(
            "layers must name at least one layer (None: every parameter), got []"
        )
    return layers


def _matches(param: str, layer: str) -> bool:
    return param == layer or param.startswith((layer + ".", layer + "["))


def layer_names(params: Sequence[str]) -> list[str]:
    """The layers of a module: each parameter's path without its last part
    (``"0.weight"`` -> ``"0"``, ``"Dense_0.kernel"`` -> ``"Dense_0"``,
    ``"layers[1].bias"`` -> ``"layers[1]"``), in order, once each; a parameter of the
    top module is its own layer."""
    out: dict[str, None] = {}
    for p in params:
        head = p.rsplit(".", 1)[0] if "." in p else p
        out[head] = None
    return list(out)


def select_parameters(
    params: Sequence[str], layers: tuple[str, ...] | None
) -> tuple[str, ...]:
    """The parameter names ``layers`` selects (all for ``None``), in the module's
    order. A name selects a parameter equal to it or under it (followed by ``.`` or
    ``[``); a name that selects nothing raises a ValueError naming it and listing
    the module's layers."""
    if layers is None:
        return tuple(params)
    for layer in layers:
        if not any(_matches(p, layer) for p in params):
            raise ValueError(
                f"layers: unknown layer {layer!r}; the module's layers are "
                f"{layer_names(params)} and its parameters {list(params)} (a "
                "parameter name, or any part of a path ending before '.' or '[', "
                "also selects)"
            )
    return tuple(p for p in params if any(_matches(p, lay) for lay in layers))


def check_parameters(params: Sequence[str], module: Any) -> None:
    """The module has parameters."""
    if not params:
        raise ValueError(
            f"module has no parameters, so there is nothing to put a prior on, got "
            f"{type(module).__name__} {_short(module)}"
        )


def check_reserved(sites: Iterable[str], reserved: Iterable[str]) -> None:
    """No parameter site takes a name the model uses for its own sites."""
    clash = sorted(set(sites) & set(reserved))
    if clash:
        raise ValueError(
            f"module has parameter(s) {clash} whose site names clash with the "
            f"model's own sites {sorted(set(reserved))}; rename them"
        )


def check_call(
    x_shape: tuple[int, ...],
    y_shape: tuple[int, ...] | None,
    likelihood: Any,
    batch_size: Any,
    num_data: Any,
) -> int:
    """The model's call arguments; returns the number of examples in ``x``."""
    if len(x_shape) < 1:
        raise ValueError(f"x must have a leading data axis, got shape {x_shape}")
    n = int(x_shape[0])
    if likelihood is None:
        for arg, value in (
            ("y", y_shape),
            ("batch_size", batch_size),
            ("num_data", num_data),
        ):
            if value is not None:
                shown = f"an array of shape {value}" if arg == "y" else repr(value)
                raise ValueError(
                    f"{arg} needs a likelihood (likelihood=None returns the network "
                    f"output for your own likelihood), got {arg}={shown}"
                )
        return n
    if batch_size is not None and num_data is not None:
        raise ValueError(
            "give batch_size (x is the whole data set, subsampled here) or num_data "
            "(x is already a minibatch of num_data examples), not both, got "
            f"batch_size={batch_size!r} and num_data={num_data!r}"
        )
    check_int("batch_size", batch_size, low=1, high=n, allow_none=True)
    check_int("num_data", num_data, low=n, allow_none=True)
    if y_shape is not None and (len(y_shape) < 1 or int(y_shape[0]) != n):
        raise ValueError(
            f"y must have one entry per example of x ({n} along its first axis), got "
            f"shape {y_shape}"
        )
    return n


def squeezes_output(likelihood: Any, shape: tuple[int, ...]) -> bool:
    """``"normal"`` and ``"bernoulli"`` drop a trailing output axis of size 1 (a
    network ending in ``Linear(h, 1)`` gives ``mu`` of shape ``(N,)``)."""
    return likelihood in ("normal", "bernoulli") and len(shape) >= 2 and shape[-1] == 1


def check_obs_shape(y_shape: tuple[int, ...], expected: tuple[int, ...]) -> None:
    """``y`` has the shape the likelihood observes (per example: the output's
    shape without the class axis for ``"categorical"``)."""
    if tuple(y_shape[1:]) != tuple(expected[1:]):
        raise ValueError(
            f"y must have shape (N, *{tuple(expected[1:])}) to match the network "
            f"output (shape {tuple(expected)} per batch under the likelihood), got "
            f"shape {tuple(y_shape)}"
        )


def _short(obj: Any, limit: int = 80) -> str:
    text = " ".join(repr(obj).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


BAYESIAN_DOC = r"""Turn an ordinary {module_kind} into a Bayesian network: a
    {host} model with a prior on every parameter (or on those of ``layers``).

    {how}

    **The model** is ``model(x, y=None, *, batch_size=None, num_data=None)``:

    - it samples the parameters first, outside any plate, each from
      ``prior.expand(shape).to_event(len(shape))`` (one site per parameter, named
      as below);
    - with ``likelihood="normal"`` and no ``scale``, a learned noise scale
      ``"sigma"`` from ``sigma_prior`` (default ``HalfNormal(1.0)``);
    - then runs the network on ``x`` inside ``plate("data", N)``, records its output
      as the deterministic site ``"logits"`` (``"categorical"``, ``"bernoulli"``),
      ``"mu"`` (``"normal"``) or ``"out"`` (``likelihood=None``), and observes
      ``y`` at the site ``"obs"``:

      ============== ============================== ==========================
      likelihood     ``"obs"``                      output site (shape)
      ============== ============================== ==========================
      "categorical"  ``Categorical(logits=out)``    ``"logits"`` ``(N, C)``
      "normal"       ``Normal(mu, sigma or scale)`` ``"mu"`` ``(N,)`` or ``(N, K)``
      "bernoulli"    ``Bernoulli(logits=out)``      ``"logits"`` ``(N,)``
      None           none (no plate either)         ``"out"``, as the network
      ============== ============================== ==========================

      ``"normal"`` and ``"bernoulli"`` drop a trailing output axis of size 1, so a
      network ending in a layer of width 1 gives ``mu`` of shape ``(N,)`` and
      takes ``y`` of shape ``(N,)``; ``y`` of any other shape raises a ValueError;
    - it returns the output (``"logits"``/``"mu"``/``"out"``).

    ``batch_size=B`` subsamples ``B`` of the ``N`` examples of ``x`` and ``y`` in
    the ``"data"`` plate (scaled by ``N/B``: SVI on minibatches, and the minibatches
    of :class:`~ppl_hw.{backend}.infer.SGHMC`, which finds the plate by itself).
    ``num_data=M`` says ``x`` is already a minibatch (from a data loader) of a data
    set of ``M`` examples: the plate has size ``M`` and scales the likelihood by
    ``M/N``; do not use it with SGHMC (which draws its own minibatches).
    ``likelihood=None`` runs the network on ``x`` without a plate and returns its
    output, for a likelihood of your own.

    **Site names.** {site_names}

    **What it does not do.**

    - Only parameters get priors: buffers (batch norm's running statistics) and
      other state are left as the host handles them.
    - Dropout inside the module runs as the module runs it: {dropout}.
    - Parameters not selected by ``layers`` stay ordinary point parameters,
      trained by SVI and held fixed under MCMC: {point_params}.
    - One prior for all selected parameters; no per-layer or fan-in scaled
      priors (for those: {own_prior}). The prior's dtype is the sites' dtype.
    - One input: the network is called as ``module(x)``; a network with several
      inputs or call arguments needs a small wrapper module around it.
{host_limits}

    :param module: {module_param}
    :param prior: the prior of every selected parameter: a scalar
        {dist_class} (batch and event shape ``()``); default
        ``Normal(0.0, 1.0)``.
    :param likelihood: required, keyword: ``"categorical"`` (logits),
        ``"normal"``, ``"bernoulli"`` (logits) or ``None``.
    :param scale: ``"normal"`` only: a fixed observation noise scale (``> 0``);
        ``None`` (default) learns it as the site ``"sigma"``.
    :param sigma_prior: ``"normal"`` without ``scale`` only: the prior of
        ``"sigma"``, a scalar distribution with positive support; default
        ``HalfNormal(1.0)``.
    :param layers: ``None`` (every parameter) or a list of names: a submodule
        (``"0"``, ``"fc"``, ``"Dense_1"``, ``"layers[0]"``) selects all parameters
        under it, a parameter name selects that parameter. A name that selects
        nothing raises a ValueError listing the module's layers.{extra_params}
    :returns: {returns}
    :raises TypeError, ValueError: for a bad argument, naming it and the value,
        before any work.

    **Example**::

{example}
    """
