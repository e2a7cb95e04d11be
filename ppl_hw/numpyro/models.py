"""Ready-made NumPyro models used by the demo, the examples and the tests.

They are ordinary NumPyro models: any NumPyro guide, kernel or handler applies.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpyro
import numpyro.distributions as dist

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

_ACTIVATIONS = {"tanh": jnp.tanh, "relu": jax.nn.relu}


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
    params = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        prior = dist.Normal(0.0, prior_scale)
        w_prior = prior if weight_prior is None else weight_prior
        w = numpyro.sample(f"w{i}", w_prior.expand([fan_in, fan_out]).to_event(2))
        b = numpyro.sample(f"b{i}", prior.expand([fan_out]).to_event(1))
        params.append((w, b))
    with numpyro.plate("data", n, subsample_size=batch_size):
        h = numpyro.subsample(x, event_dim=1)
        for i, (w, b) in enumerate(params):
            h = nn.dense(h, w, b)
            if i < len(params) - 1:
                h = act(h)
        logits = numpyro.deterministic("logits", h)
        obs = None if y is None else numpyro.subsample(y, event_dim=0)
        numpyro.sample("y", dist.Categorical(logits=logits), obs=obs)


mlp_classifier.__doc__ = MLP_CLASSIFIER_DOC.format(
    array="an array",
    example="""\
        from numpyro.infer import SVI, TraceMeanField_ELBO
        from numpyro.infer.autoguide import AutoNormal
        guide = AutoNormal(mlp_classifier)
        svi = SVI(mlp_classifier, guide, numpyro.optim.Adam(1e-2),
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
    layers = []
    for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes)):
        w = numpyro.sample(
            f"w{i}", dist.Normal(0.0, prior_scale).expand([fan_in, fan_out]).to_event(2)
        )
        scale = numpyro.sample(
            f"scale{i}", dist.Normal(1.0, prior_scale).expand([fan_out]).to_event(1)
        )
        b = numpyro.sample(
            f"b{i}", dist.Normal(0.0, prior_scale).expand([fan_out]).to_event(1)
        )
        layers.append((w, scale, b))
    with numpyro.plate("data", n, subsample_size=batch_size):
        h = numpyro.subsample(x, event_dim=1)
        for i, (w, scale, b) in enumerate(layers):
            # 1/sqrt(fan_in) keeps h sign(W) of order one
            h = nn.binary_dense(h, w, scale * sizes[i] ** -0.5, b)
            if i < len(layers) - 1:
                h = nn.sign(h)
        logits = numpyro.deterministic("logits", h)
        obs = None if y is None else numpyro.subsample(y, event_dim=0)
        numpyro.sample("y", dist.Categorical(logits=logits), obs=obs)


binary_mlp_classifier.__doc__ = BINARY_MLP_DOC.format(
    array="an array",
    example="""\
        from ppl_hw.numpyro.autoguide import AutoScaleDropout
        guide = AutoScaleDropout(binary_mlp_classifier, p=0.2)
        svi = SVI(binary_mlp_classifier, guide, numpyro.optim.Adam(1e-2),
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
    prior = DiscreteWeight(values, probs=jnp.asarray(discrete_prior_probs(values, p0)))
    n = x.shape[0]
    sizes = layer_sizes(x.shape[-1], hidden, num_classes)
    ws = [
        numpyro.sample(f"w{i}", prior.expand([fan_in, fan_out]).to_event(2))
        for i, (fan_in, fan_out) in enumerate(itertools.pairwise(sizes))
    ]
    b = numpyro.sample(
        f"b{len(sizes) - 2}",
        dist.Normal(0.0, prior_scale).expand([sizes[-1]]).to_event(1),
    )
    with numpyro.plate("data", n, subsample_size=batch_size):
        h = numpyro.subsample(x, event_dim=1)
        for i, w in enumerate(ws):
            h = nn.dense(h, w) * sizes[i] ** -0.5
            if i < len(ws) - 1:
                h = nn.sign(nn.batch_norm(h) if batch_norm else h)
        logits = numpyro.deterministic("logits", nn.sample_logits(out_scale * h + b))
        obs = None if y is None else numpyro.subsample(y, event_dim=0)
        numpyro.sample("y", dist.Categorical(logits=logits), obs=obs)


ternary_mlp_classifier.__doc__ = TERNARY_MLP_DOC.format(
    backend="numpyro",
    array="an array",
    example="""\
        from ppl_hw.numpyro.autoguide import AutoDiscreteWeight
        from ppl_hw.numpyro.infer import PFP_ELBO
        guide = AutoDiscreteWeight(ternary_mlp_classifier)
        svi = SVI(ternary_mlp_classifier, guide, numpyro.optim.Adam(1e-2),
                  PFP_ELBO())""",
)
