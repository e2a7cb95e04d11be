"""A Bayesian network in one call from a ``torch.nn.Module`` you already wrote:
:func:`bayesian` converts a copy of it with Pyro's own
:func:`pyro.nn.module.to_pyro_module_`, puts a ``PyroSample`` prior on its parameters
and adds the likelihood, giving an ordinary Pyro model (a ``PyroModule``) for
``AutoNormal`` + SVI, ``Predictive``, :class:`~ppl_hw.pyro.infer.SGHMC`, the
:func:`~ppl_hw.pyro.handlers.crossbar` handler and :func:`ppl_hw.coding.encode`.
The same function, options and sites as :mod:`ppl_hw.numpyro.bnn`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, cast

import pyro
import pyro.distributions as dist
import torch
from pyro.nn import PyroModule, PyroSample
from pyro.nn.module import to_pyro_module_

from ..common import bnn as cb

__all__ = ["BayesianNetwork", "bayesian"]

_DIST = "a pyro.distributions.Distribution"


class BayesianNetwork(PyroModule):
    """The Pyro model :func:`bayesian` returns: a ``PyroModule`` whose
    ``forward(x, y=None, *, batch_size=None, num_data=None)`` samples the network's
    parameters, runs it and observes ``y`` (see :func:`bayesian` for the sites).

    :ivar net: the converted copy of the user's module (a ``PyroModule`` whose
        selected parameters are ``PyroSample`` attributes); its sample sites are
        named exactly as the original module's ``named_parameters()``.
    :ivar likelihood: ``"categorical"``, ``"normal"``, ``"bernoulli"`` or ``None``.
    :ivar output_site: the deterministic site of the network's output: ``"logits"``,
        ``"mu"`` or ``"out"``.
    """

    def __init__(
        self,
        net: torch.nn.Module,
        site_names: Sequence[str],
        likelihood: str | None,
        scale: float | None,
        sigma_prior: Any,
    ):
        super().__init__()
        # Registered without PyroModule's renaming, under the same context: the
        # sites keep the module's own names ("0.weight", not "net.0.weight") and
        # are drawn once per call of this model.
        self._modules["net"] = net
        cast(PyroModule, net)._pyro_set_supermodule("", self._pyro_context)
        self._site_names = tuple(site_names)
        self.likelihood = likelihood
        self.output_site = cb.OUTPUT_SITES[likelihood]
        self.scale = scale
        self.sigma_prior = sigma_prior

    @property
    def net(self) -> torch.nn.Module:
        """The converted copy of the user's module (see the class docstring)."""
        return cast(torch.nn.Module, self._modules["net"])

    def site_names(self, x: Any = None) -> tuple[str, ...]:
        """The parameter sample sites, in the module's order (``x`` is not needed:
        the argument keeps the NumPyro signature)."""
        return self._site_names

    def _sample_parameters(self) -> None:
        # Every PyroSample attribute is read once here, outside the "data" plate;
        # the shared context caches the draws for the network's own reads.
        for m in self.net.modules():
            for attr in list(getattr(m, "_pyro_samples", ())):
                getattr(m, attr)

    def forward(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None = None,
        *,
        batch_size: int | None = None,
        num_data: int | None = None,
    ) -> torch.Tensor:
        """Sample the parameters, run the network on ``x`` and observe ``y``.

        :param x: inputs, a tensor with the examples along the first axis.
        :param y: observations (``None`` to predict), one per example of ``x``.
        :param batch_size: subsample this many examples of ``x`` and ``y`` in the
            ``"data"`` plate.
        :param num_data: ``x`` is a minibatch of a data set of this many examples.
        :returns: the network's output (the ``"logits"``/``"mu"``/``"out"`` site).
        """
        n = cb.check_call(
            tuple(x.shape),
            None if y is None else tuple(y.shape),
            self.likelihood,
            batch_size,
            num_data,
        )
        self._sample_parameters()
        if self.likelihood is None:
            out = self.net(x)
            return pyro.deterministic(self.output_site, out, event_dim=out.dim())
        sigma: Any = None
        if self.likelihood == "normal":
            sigma = self.scale
            if sigma is None:
                sigma = pyro.sample(cb.SIGMA_SITE, self.sigma_prior)
        if num_data is not None:
            plate = pyro.plate(
                cb.DATA_PLATE, num_data, subsample=torch.arange(n, device=x.device)
            )
        else:
            plate = pyro.plate(cb.DATA_PLATE, n, subsample_size=batch_size)
        with plate:
            if batch_size is not None:
                x = pyro.subsample(x, event_dim=x.dim() - 1)
                if y is not None:
                    y = pyro.subsample(y, event_dim=y.dim() - 1)
            out = self.net(x)
            if cb.squeezes_output(self.likelihood, tuple(out.shape)):
                out = out[..., 0]
            if y is not None:
                obs_shape = (
                    out.shape[:-1] if self.likelihood == "categorical" else out.shape
                )
                cb.check_obs_shape(tuple(y.shape), tuple(obs_shape))
            out = pyro.deterministic(self.output_site, out, event_dim=out.dim() - 1)
            if self.likelihood == "categorical":
                fn = dist.Categorical(logits=out).to_event(out.dim() - 2)
            elif self.likelihood == "bernoulli":
                fn = dist.Bernoulli(logits=out).to_event(out.dim() - 1)
                if y is not None and not torch.is_floating_point(y):
                    y = y.to(out.dtype)
            else:
                fn = dist.Normal(out, sigma).to_event(out.dim() - 1)
            pyro.sample(cb.OBS_SITE, fn, obs=y)
        return out


def bayesian(
    module: torch.nn.Module,
    prior: Any = None,
    *,
    likelihood: str | None,
    scale: float | None = None,
    sigma_prior: Any = None,
    layers: Sequence[str] | None = None,
) -> BayesianNetwork:
    # -- every argument first -----------------------------------------------------
    if not isinstance(module, torch.nn.Module):
        raise TypeError(f"module must be a torch.nn.Module, got {module!r}")
    params = dict(module.named_parameters())
    names = list(params)
    cb.check_parameters(names, module)
    first = next(iter(params.values()))
    zero = torch.zeros((), dtype=first.dtype, device=first.device)
    if prior is None:
        prior = dist.Normal(zero, 1.0)
    cb.check_prior("prior", prior, dist.Distribution, _DIST)
    likelihood, scale = cb.check_likelihood(
        likelihood, scale, sigma_prior, dist.Distribution, _DIST
    )
    if likelihood == "normal" and scale is None and sigma_prior is None:
        sigma_prior = dist.HalfNormal(zero + 1.0)
    selected = set(cb.select_parameters(names, cb.check_layers(layers)))
    reserved = {cb.OBS_SITE, cb.DATA_PLATE, cb.OUTPUT_SITES[likelihood]}
    if sigma_prior is not None:
        reserved.add(cb.SIGMA_SITE)
    cb.check_reserved(names, reserved)
    # -- a converted copy with PyroSample priors ------------------------------------
    net = copy.deepcopy(module)
    to_pyro_module_(net)
    for path, sub in net.named_modules():
        for pname, p in list(sub.named_parameters(recurse=False)):
            if (f"{path}.{pname}" if path else pname) in selected:
                site = PyroSample(prior.expand(p.shape).to_event(p.dim()))
                setattr(sub, pname, site)
    order = [n for n in names if n in selected]
    return BayesianNetwork(net, order, likelihood, scale, sigma_prior)


bayesian.__doc__ = cb.BAYESIAN_DOC.format(
    module_kind="``torch.nn.Module``",
    host="Pyro",
    backend="pyro",
    how="""A deep copy of ``module`` is converted in place by Pyro's own
    :func:`pyro.nn.module.to_pyro_module_` (``module`` itself is left as it is) and
    each selected parameter becomes a ``PyroSample`` attribute; the result,
    a :class:`BayesianNetwork`, is a ``PyroModule`` and an ordinary Pyro model.""",
    site_names="""Exactly as ``module.named_parameters()`` names the
    parameters (``"0.weight"``, ``"fc.bias"``), PyroModule's convention;
    :meth:`BayesianNetwork.site_names` lists them. The unselected parameters are
    ``pyro.param`` sites under the same names.""",
    dropout="""in its ``train()``/``eval()`` mode, which ``model.train()``
      and ``model.eval()`` set""",
    point_params="``pyro.param`` sites, as ``PyroModule`` makes them",
    own_prior="``PyroSample`` attributes of your own on ``model.net``",
    host_limits="""    - Call the model outside any plate of yours: it opens its own
      ``"data"`` plate, and a parameter drawn inside a plate would get its batch
      shape.
    - Pyro's ``Predictive`` gives every site outside a plate a singleton axis for
      the ``"data"`` plate (weights ``(S, 1, *shape)``, ``"sigma"`` ``(S, 1)``);
      to feed such samples back as ``posterior_samples``, drop it
      (``{k: v.squeeze(1) for k, v in samples.items()}``): torch layers take
      unbatched weights.
    - ``module`` should be a plain ``torch.nn.Module`` (a ``PyroModule`` that has
      not run yet works too).
    - ``model.to(device)`` moves the parameters, not the priors: build the
      model from a module already on its device (the default priors are made
      there, in the parameters' dtype), or give priors made there.""",
    module_param="""a ``torch.nn.Module`` with parameters (an ``nn.Sequential``,
        your own class with ``Linear``/``Conv2d`` layers, ...); not modified.""",
    dist_class="``pyro.distributions.Distribution``",
    extra_params="",
    returns="a :class:`BayesianNetwork` (a ``PyroModule``), the model.",
    example="""\
        net = nn.Sequential(nn.Linear(3, 16), nn.Tanh(), nn.Linear(16, 1))
        model = bayesian(net, dist.Normal(0.0, 1.0), likelihood="normal")
        guide = AutoNormal(model)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), TraceMeanField_ELBO())
        for step in range(1000):
            svi.step(x, y, batch_size=64)
        pred = Predictive(model, guide=guide, num_samples=100)(x_test)
        pred["mu"]  # (100, N_test); pred["obs"], pred["0.weight"], ...""",
)
