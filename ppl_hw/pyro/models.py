"""Ready-made Pyro models used by the demo, the examples and the tests.

They mirror :mod:`ppl_hw.numpyro.models` name for name and site for site.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pyro
import pyro.distributions as dist
import torch

from ..common.models import (
    BINARY_MLP_DOC,
    MLP_CLASSIFIER_DOC,
    TERNARY_MLP_DOC,
    check_mlp_args,
    discrete_prior_probs,
    layer_sizes,
)
from . import nn
from .distributions import DiscreteWeight

__all__ = ["binary_mlp_classifier", "mlp_classifier", "ternary_mlp_classifier"]

_ACTIVATIONS = {"tanh": torch.tanh, "relu": torch.relu}


def mlp_classifier(
    x,
    y=None,
    *,
    hidden: Sequence[int] = (64, 64),
    num_classes: int = 10,
    prior_scale: float = 1.0,
    activation: str = "tanh",
    batch_size: int | None = None,
    weight_prior=None,
):
    check_mlp_args(
        x, hidden, num_classes, prior_scale, activation, batch_size, weight_prior
    )
    act = _ACTIVATIONS[activation]
    n = x.shape[0]
    sizes = layer_sizes(x.shape[-1], hidden, num_classes)
    zero = x.new_zeros(())
    params = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        prior = dist.Normal(zero, prior_scale)
        w_prior = prior if weight_prior is None else weight_prior
        w = pyro.sample(f"w{i}", w_prior.expand([fan_in, fan_out]).to_event(2))
        b = pyro.sample(f"b{i}", prior.expand([fan_out]).to_event(1))
        params.append((w, b))
    with pyro.plate("data", n, subsample_size=batch_size):
        h = pyro.subsample(x, event_dim=1)
        for i, (w, b) in enumerate(params):
            h = nn.dense(h, w, b)
            if i < len(params) - 1:
                h = act(h)
        logits = pyro.deterministic("logits", h)
        obs = None if y is None else pyro.subsample(y, event_dim=0)
        pyro.sample("y", dist.Categorical(logits=logits), obs=obs)


mlp_classifier.__doc__ = MLP_CLASSIFIER_DOC.format(
    array="a float tensor",
    example="""\
        from pyro.infer import SVI, TraceMeanField_ELBO
        from pyro.infer.autoguide import AutoNormal
        guide = AutoNormal(mlp_classifier)
        svi = SVI(mlp_classifier, guide, pyro.optim.Adam({"lr": 1e-2}),
                  TraceMeanField_ELBO())""",
)


def binary_mlp_classifier(
    x,
    y=None,
    *,
    hidden: Sequence[int] = (128, 128),
    num_classes: int = 10,
    prior_scale: float = 1.0,
    batch_size: int | None = None,
):
    check_mlp_args(x, hidden, num_classes, prior_scale, "tanh", batch_size)
    n = x.shape[0]
    sizes = layer_sizes(x.shape[-1], hidden, num_classes)
    zero = x.new_zeros(())
    layers = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w = pyro.sample(
            f"w{i}",
            dist.Normal(zero, prior_scale).expand([fan_in, fan_out]).to_event(2),
        )
        scale = pyro.sample(
            f"scale{i}",
            dist.Normal(zero + 1.0, prior_scale).expand([fan_out]).to_event(1),
        )
        b = pyro.sample(
            f"b{i}", dist.Normal(zero, prior_scale).expand([fan_out]).to_event(1)
        )
        layers.append((w, scale, b))
    with pyro.plate("data", n, subsample_size=batch_size):
        h = pyro.subsample(x, event_dim=1)
        for i, (w, scale, b) in enumerate(layers):
            # 1/sqrt(fan_in) keeps h sign(W) of order one
            h = nn.binary_dense(h, w, scale * sizes[i] ** -0.5, b)
            if i < len(layers) - 1:
                h = nn.sign(h)
        logits = pyro.deterministic("logits", h)
        obs = None if y is None else pyro.subsample(y, event_dim=0)
        pyro.sample("y", dist.Categorical(logits=logits), obs=obs)


binary_mlp_classifier.__doc__ = BINARY_MLP_DOC.format(
    array="a float tensor",
    example="""\
        from ppl_hw.pyro.autoguide import AutoScaleDropout
        guide = AutoScaleDropout(binary_mlp_classifier, p=0.2)
        svi = SVI(binary_mlp_classifier, guide, pyro.optim.Adam({"lr": 1e-2}),
                  Trace_ELBO())""",
)


def ternary_mlp_classifier(
    x,
    y=None,
    *,
    hidden: Sequence[int] = (256, 256),
    num_classes: int = 10,
    values: Sequence[float] = (-1.0, 0.0, 1.0),
    p0: float | None = 0.5,
    batch_norm: bool = True,
    out_scale: float = 3.0,
    prior_scale: float = 1.0,
    batch_size: int | None = None,
):
    check_mlp_args(x, hidden, num_classes, prior_scale, "tanh", batch_size)
    prior = DiscreteWeight(
        values, probs=torch.tensor(discrete_prior_probs(values, p0), dtype=x.dtype)
    )
    n = x.shape[0]
    sizes = layer_sizes(x.shape[-1], hidden, num_classes)
    ws = [
        pyro.sample(f"w{i}", prior.expand([fan_in, fan_out]).to_event(2))
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes))
    ]
    b = pyro.sample(
        f"b{len(sizes) - 2}",
        dist.Normal(x.new_zeros(()), prior_scale).expand([sizes[-1]]).to_event(1),
    )
    with pyro.plate("data", n, subsample_size=batch_size):
        h = pyro.subsample(x, event_dim=1)
        for i, w in enumerate(ws):
            h = nn.dense(h, w) * sizes[i] ** -0.5
            if i < len(ws) - 1:
                h = nn.sign(nn.batch_norm(h) if batch_norm else h)
        logits = pyro.deterministic("logits", nn.sample_logits(out_scale * h + b))
        obs = None if y is None else pyro.subsample(y, event_dim=0)
        pyro.sample("y", dist.Categorical(logits=logits), obs=obs)


ternary_mlp_classifier.__doc__ = TERNARY_MLP_DOC.format(
    backend="pyro",
    array="a float tensor",
    example="""\
        from ppl_hw.pyro.autoguide import AutoDiscreteWeight
        from ppl_hw.pyro.infer import PFP_ELBO
        guide = AutoDiscreteWeight(ternary_mlp_classifier)
        svi = SVI(ternary_mlp_classifier, guide, pyro.optim.Adam({"lr": 1e-2}),
                  PFP_ELBO())""",
)
