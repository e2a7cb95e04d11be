"""A Bayesian network in one call from a flax (linen or nnx) or equinox module you
already wrote: :func:`bayesian` wraps NumPyro's own
:func:`~numpyro.contrib.module.random_flax_module`,
:func:`~numpyro.contrib.module.random_nnx_module` or
:func:`~numpyro.contrib.module.random_eqx_module` and adds the likelihood, giving an
ordinary NumPyro model for ``AutoNormal`` + SVI, ``Predictive``,
:class:`~ppl_hw.numpyro.infer.SGHMC`, the :class:`~ppl_hw.numpyro.handlers.crossbar`
handler and :func:`ppl_hw.coding.encode`. The same function, options and sites as
:mod:`ppl_hw.pyro.bnn`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.module import (
    random_eqx_module,
    random_flax_module,
    random_nnx_module,
)

from ..common import bnn as cb

__all__ = ["BayesianNetwork", "bayesian"]

_DIST = "a numpyro.distributions.Distribution"


def _kind(module: Any) -> str | None:
    """``"linen"``, ``"nnx"`` or ``"equinox"``; a module of a library that is not
    imported cannot be an instance of it, so nothing is imported here."""
    linen, nnx, eqx = (
        sys.modules.get(m) for m in ("flax.linen", "flax.nnx", "equinox")
    )
    if linen is not None and isinstance(module, linen.Module):
        return "linen"
    if nnx is not None and isinstance(module, nnx.Module):
        return "nnx"
    if eqx is not None and isinstance(module, eqx.Module):
        return "equinox"
    return None


def _flat_names(tree: Any, prefix: str = "") -> list[str]:
    """Leaf paths of a nested dict joined by ``"."``: the names
    ``random_flax_module``/``random_nnx_module`` give their sites."""
    out = []
    for key, item in tree.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        out += _flat_names(item, name) if isinstance(item, dict) else [name]
    return out


def _parameter_names(
    module: Any, input_shape: Sequence[int] | None = None
) -> tuple[str, ...]:
    """The names NumPyro's ``random_*_module`` gives the parameters of ``module``
    (without the ``"<name>/"`` prefix), in its order: the flax params tree's paths
    joined by ``"."`` (linen: traced with ``jax.eval_shape`` on ``input_shape``; no
    computation), the nnx ``Param`` state's paths, equinox's key paths of the
    floating-point array leaves."""
    kind = _kind(module)
    if kind == "linen":
        example = jnp.ones(tuple(input_shape or ()))
        shapes = jax.eval_shape(lambda: module.init(jax.random.key(0), example))
        return tuple(_flat_names(dict(shapes.get("params", {}))))
    if kind == "nnx":
        from flax import nnx

        return tuple(_flat_names(nnx.to_pure_dict(nnx.state(module, nnx.Param))))
    if kind == "equinox":
        import equinox as eqx
        from numpyro.contrib.module import eqx_to_dict

        return tuple(eqx_to_dict(eqx.partition(module, eqx.is_inexact_array)[0]))
    raise TypeError(
        "module must be a flax.linen.Module, a flax.nnx.Module or an equinox.Module, "
        f"got {module!r}"
    )


class BayesianNetwork:
    """The NumPyro model :func:`bayesian` returns: call it as
    ``model(x, y=None, *, batch_size=None, num_data=None)`` (see :func:`bayesian`
    for the sites).

    :ivar module: the network (for nnx, a clone of the user's module).
    :ivar kind: ``"linen"``, ``"nnx"`` or ``"equinox"``.
    :ivar name: the prefix of the sites: ``"<name>/<parameter>"``.
    :ivar likelihood: ``"categorical"``, ``"normal"``, ``"bernoulli"`` or ``None``.
    :ivar output_site: the deterministic site of the network's output: ``"logits"``,
        ``"mu"`` or ``"out"``.
    """

    def __init__(
        self,
        module: Any,
        kind: str,
        prior: Any,
        likelihood: str | None,
        scale: float | None,
        sigma_prior: Any,
        layers: tuple[str, ...] | None,
        name: str,
        input_shape: tuple[int, ...] | None,
    ):
        self.module = module
        self.kind = kind
        self.prior = prior
        self.likelihood = likelihood
        self.output_site = cb.OUTPUT_SITES[likelihood]
        self.scale = scale
        self.sigma_prior = sigma_prior
        self.layers = layers
        self.name = name
        self.input_shape = input_shape
        self._selected: dict[tuple[int, ...] | None, tuple[str, ...]] = {}
        if kind != "linen" or input_shape is not None:
            self._select(input_shape)

    def _select(self, input_shape: tuple[int, ...] | None) -> tuple[str, ...]:
        """The selected parameter names (checked) for a linen input shape."""
        if input_shape not in self._selected:
            names = _parameter_names(self.module, input_shape)
            cb.check_parameters(names, self.module)
            self._selected[input_shape] = cb.select_parameters(names, self.layers)
        return self._selected[input_shape]

    def site_names(self, x: Any = None) -> tuple[str, ...]:
        """The parameter sample sites, ``"<name>/<parameter>"``, in the module's
        order (a linen module without ``input_shape`` needs an input ``x``)."""
        shape = self._init_shape(x)
        return tuple(f"{self.name}/{p}" for p in self._select(shape))

    def _init_shape(self, x: Any) -> tuple[int, ...] | None:
        if self.kind != "linen" or self.input_shape is not None:
            return self.input_shape
        if x is None:
            raise ValueError(
                "x is needed for the site names of a flax.linen module built without "
                "input_shape, got x=None"
            )
        return (1, *tuple(jnp.shape(x))[1:])

    def _network(self, x: Any) -> Any:
        """Sample the parameters (outside any plate); the network as a function."""
        shape = self._init_shape(x)
        selected = self._select(shape)
        prior = (
            self.prior if self.layers is None else dict.fromkeys(selected, self.prior)
        )
        if self.kind == "linen":
            return random_flax_module(self.name, self.module, prior, input_shape=shape)
        if self.kind == "nnx":
            return random_nnx_module(self.name, self.module, prior)
        # equinox modules map one example: vmap over the data axis
        return jax.vmap(random_eqx_module(self.name, self.module, prior))

    def __call__(
        self,
        x: Any,
        y: Any = None,
        *,
        batch_size: int | None = None,
        num_data: int | None = None,
    ) -> Any:
        """Sample the parameters, run the network on ``x`` and observe ``y``.

        :param x: inputs, an array with the examples along the first axis.
        :param y: observations (``None`` to predict), one per example of ``x``.
        :param batch_size: subsample this many examples of ``x`` and ``y`` in the
            ``"data"`` plate.
        :param num_data: ``x`` is a minibatch of a data set of this many examples.
        :returns: the network's output (the ``"logits"``/``"mu"``/``"out"`` site).
        """
        n = cb.check_call(
            tuple(jnp.shape(x)),
            None if y is None else tuple(jnp.shape(y)),
            self.likelihood,
            batch_size,
            num_data,
        )
        net = self._network(x)
        if self.likelihood is None:
            return numpyro.deterministic(self.output_site, net(x))
        sigma: Any = None
        if self.likelihood == "normal":
            sigma = self.scale
            if sigma is None:
                sigma = numpyro.sample(cb.SIGMA_SITE, self.sigma_prior)
        if num_data is not None:
            # the plate of the whole data set, with this minibatch as its subsample
            idx = {cb.DATA_PLATE: jnp.arange(n)}
            with numpyro.handlers.substitute(data=idx):
                plate = numpyro.plate(cb.DATA_PLATE, num_data, subsample_size=n)
        else:
            plate = numpyro.plate(cb.DATA_PLATE, n, subsample_size=batch_size)
        with plate:
            if batch_size is not None:
                x = numpyro.subsample(x, event_dim=jnp.ndim(x) - 1)
                if y is not None:
                    y = numpyro.subsample(y, event_dim=jnp.ndim(y) - 1)
            out = net(x)
            if cb.squeezes_output(self.likelihood, tuple(out.shape)):
                out = out[..., 0]
            if y is not None:
                categorical = self.likelihood == "categorical"
                obs_shape = out.shape[:-1] if categorical else out.shape
                cb.check_obs_shape(tuple(jnp.shape(y)), tuple(obs_shape))
            out = numpyro.deterministic(self.output_site, out)
            if self.likelihood == "categorical":
                fn = dist.Categorical(logits=out).to_event(out.ndim - 2)
            elif self.likelihood == "bernoulli":
                fn = dist.Bernoulli(logits=out).to_event(out.ndim - 1)
            else:
                fn = dist.Normal(out, sigma).to_event(out.ndim - 1)
            numpyro.sample(cb.OBS_SITE, fn, obs=y)
        return out


def bayesian(
    module: Any,
    prior: Any = None,
    *,
    likelihood: str | None,
    scale: float | None = None,
    sigma_prior: Any = None,
    layers: Sequence[str] | None = None,
    name: str = "net",
    input_shape: Sequence[int] | None = None,
) -> BayesianNetwork:
    # -- every argument first -----------------------------------------------------
    kind = _kind(module)
    if kind is None:
        raise TypeError(
            "module must be a flax.linen.Module, a flax.nnx.Module or an "
            f"equinox.Module, got {module!r}"
        )
    if prior is None:
        prior = dist.Normal(0.0, 1.0)
    cb.check_prior("prior", prior, dist.Distribution, _DIST)
    likelihood, scale = cb.check_likelihood(
        likelihood, scale, sigma_prior, dist.Distribution, _DIST
    )
    if likelihood == "normal" and scale is None and sigma_prior is None:
        sigma_prior = dist.HalfNormal(1.0)
    layers = cb.check_layers(layers)
    if not isinstance(name, str):
        raise TypeError(f"name must be a string, got {name!r}")
    if not name:
        raise ValueError(f"name must be a non-empty string, got {name!r}")
    if input_shape is not None:
        if kind != "linen":
            raise ValueError(
                "input_shape is for flax.linen modules (nnx and equinox modules are "
                f"initialised already), got input_shape={input_shape!r} for a "
                f"{kind} module"
            )
        if not isinstance(input_shape, tuple | list) or not all(
            isinstance(d, int) and not isinstance(d, bool) for d in input_shape
        ):
            raise TypeError(
                "input_shape must be a tuple of ints (the shape of an example batch, "
                f"e.g. (1, 3)), got {input_shape!r}"
            )
        if not input_shape or min(input_shape) < 1:
            raise ValueError(
                "input_shape must be a non-empty tuple of ints >= 1, got "
                f"{input_shape!r}"
            )
        input_shape = tuple(input_shape)
    if kind == "nnx":  # NumPyro's nnx_module splits and merges the module: a copy
        from flax import nnx

        module = nnx.clone(module)
    return BayesianNetwork(
        module, kind, prior, likelihood, scale, sigma_prior, layers, name, input_shape
    )


bayesian.__doc__ = cb.BAYESIAN_DOC.format(
    module_kind="flax (linen or nnx) or equinox module",
    host="NumPyro",
    backend="numpyro",
    how="""The module's kind is detected and NumPyro's own
    :func:`~numpyro.contrib.module.random_flax_module` (linen),
    :func:`~numpyro.contrib.module.random_nnx_module` (nnx) or
    :func:`~numpyro.contrib.module.random_eqx_module` (equinox) places the prior
    (``layers``: through their dict form of ``prior``). The result, a
    :class:`BayesianNetwork`, is a callable and an ordinary NumPyro model.
    An equinox module maps one example (equinox's convention), so it runs under
    ``jax.vmap`` over the first axis of ``x``; under the crossbar handler this
    gives one output-noise draw for the whole batch, which the handler warns
    about (``ConverterWarning``).""",
    site_names="""As NumPyro's ``random_*_module`` names them,
    ``"<name>/<path>"``: the path of the flax params tree
    (``"net/Dense_0.kernel"``), of the nnx ``Param`` state (``"net/l1.kernel"``,
    ``"net/layers.0.kernel"``) or equinox's key path
    (``"net/layers[0].weight"``); :meth:`BayesianNetwork.site_names` lists them.
    The unselected parameters live in NumPyro's param site ``"<name>$params"``.""",
    dropout="no dropout ``rngs`` are passed to a flax module",
    point_params="""the leaves of NumPyro's param site ``"<name>$params"``
      (for equinox NumPyro keeps every leaf there, the sampled ones unused)""",
    own_prior="NumPyro's ``random_*_module`` with a dict or callable ``prior``",
    host_limits="""    - Flax linen modules with mutable collections (``BatchNorm`` with
      ``mutable=["batch_stats"]``) or that need ``rngs`` are not supported: use
      ``random_flax_module`` directly. A linen module is initialised by NumPyro
      on the first call (``input_shape``, default ``(1, *x.shape[1:])``); only
      the unselected parameters use the initial values.""",
    module_param="""a ``flax.linen.Module``, a ``flax.nnx.Module`` or an
        ``equinox.Module`` with parameters; not modified (nnx: a clone is used).""",
    dist_class="``numpyro.distributions.Distribution``",
    extra_params="""
    :param name: the prefix of the site names, ``"<name>/..."``
        (default ``"net"``).
    :param input_shape: linen only: the input shape ``module.init`` is traced
        with (``None``: ``(1, *x.shape[1:])`` of the first call's ``x``); given,
        ``layers`` are checked at once, else at the first call.""",
    returns="a :class:`BayesianNetwork`, the model (a callable).",
    example="""\
        class MLP(flax.linen.Module):
            @flax.linen.compact
            def __call__(self, x):
                h = flax.linen.tanh(flax.linen.Dense(16)(x))
                return flax.linen.Dense(1)(h)

        model = bayesian(MLP(), dist.Normal(0.0, 1.0), likelihood="normal")
        guide = AutoNormal(model)
        svi = SVI(model, guide, numpyro.optim.Adam(1e-2), TraceMeanField_ELBO())
        result = svi.run(jax.random.key(0), 2000, x, y, batch_size=64)
        pred = Predictive(model, guide=guide, params=result.params,
                          num_samples=100)(jax.random.key(1), x_test)
        pred["mu"]  # (100, N_test); pred["obs"], pred["net/Dense_0.kernel"], ...""",
)
