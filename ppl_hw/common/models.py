"""Argument checks and shapes shared by the backends' ready-made models."""

from __future__ import annotations

from collections.abc import Sequence

from ..core.checks import check_int, check_number

__all__ = [
    "ACTIVATIONS",
    "BINARY_MLP_DOC",
    "MLP_CLASSIFIER_DOC",
    "TERNARY_MLP_DOC",
    "check_mlp_args",
    "discrete_prior_probs",
    "layer_sizes",
]

ACTIVATIONS = ("tanh", "relu")

MLP_CLASSIFIER_DOC = r"""Bayesian multilayer perceptron for classification.

    .. math::

        W_l \sim \mathcal N(0, s^2),\quad b_l \sim \mathcal N(0, s^2),\quad
        y_n \sim \mathrm{{Categorical}}(\mathrm{{logits}} = f(x_n; W, b)),

    with sample sites ``w0, b0, w1, b1, ...`` (``w_l`` has shape
    ``(fan_in, fan_out)``), hidden activation ``activation``, the logits recorded as
    the deterministic site ``"logits"`` and the labels as ``"y"`` inside the plate
    ``"data"``. The NumPyro and Pyro versions have the same sites and compute the same
    numbers.

    :param x: inputs, {array} of shape ``(N, D)``.
    :param y: integer labels, shape ``(N,)``, or ``None`` to predict.
    :param hidden: widths of the hidden layers.
    :param num_classes: number of classes.
    :param prior_scale: standard deviation ``s`` of the Normal prior of every weight.
    :param activation: ``"tanh"`` or ``"relu"``.
    :param batch_size: minibatch size of the ``"data"`` plate (``None``: full batch).
    :param weight_prior: a scalar distribution (batch shape ``()``) to use instead of
        ``Normal(0, s)`` for the weight matrices, e.g. ``SpikeAndSlab(0.5, 0.05, 1.0)``
        (the biases keep ``Normal(0, s)``).

    **Example**::

{example}
    """


def layer_sizes(d_in: int, hidden: Sequence[int], d_out: int) -> tuple[int, ...]:
    """The widths of an MLP: input, hidden layers, output."""
    return (int(d_in), *(int(h) for h in hidden), int(d_out))


def check_mlp_args(
    x, hidden, num_classes, prior_scale, activation, batch_size, weight_prior=None
) -> None:
    """Raise a ValueError naming the argument when an MLP model is mis-specified."""
    if weight_prior is not None:
        shape = tuple(getattr(weight_prior, "batch_shape", (None,)))
        if shape != () or tuple(getattr(weight_prior, "event_shape", (None,))) != ():
            raise ValueError(
                "weight_prior must be a scalar distribution (batch and event "
                "shape ()), "
                f"got {weight_prior!r}"
            )
    if len(getattr(x, "shape", ())) != 2:
        raise ValueError(
            f"x must be a 2-D array (N, D), got shape {getattr(x, 'shape', None)}"
        )
    try:
        widths = list(hidden)
    except TypeError:
        raise TypeError(
            f"hidden must be a sequence of ints (the hidden widths), got {hidden!r}"
        ) from None
    for i, h in enumerate(widths):
        check_int(f"hidden[{i}]", h, low=1)
    check_int("num_classes", num_classes, low=2)
    if getattr(prior_scale, "shape", None) == ():  # a 0-d NumPy/JAX/torch array
        prior_scale = float(prior_scale)
    check_number("prior_scale", prior_scale, low=0, open_low=True)
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"activation must be one of {sorted(ACTIVATIONS)}, got {activation!r}"
        )
    check_int("batch_size", batch_size, allow_none=True)
    if batch_size is not None and not 1 <= batch_size <= x.shape[0]:
        raise ValueError(f"batch_size must be in [1, N={x.shape[0]}], got {batch_size}")


BINARY_MLP_DOC = r"""Binary Bayesian MLP for classification: sign weights, sign
    activations and a per-output-channel scale in every layer (the network of scale
    dropout, Ahmed et al. 2023).

    .. math::

        h_{{l+1}} = \mathrm{{sign}}\big(\alpha_l \odot
            (h_l\,\mathrm{{sign}}(W_l))/\sqrt{{n_l}} + b_l\big),
        \qquad \mathrm{{logits}} = \alpha_L \odot
            (h_L\,\mathrm{{sign}}(W_L))/\sqrt{{n_L}} + b_L,

    with :math:`n_l` the layer's fan-in, real latent weights ``w<l>`` (only their signs
    act; straight-through gradients), scales ``scale<l>`` and biases ``b<l>``, all
    with ``Normal(0, s)`` priors except the scales, ``Normal(1, s)``. Inputs are used
    as given (real) in the first layer. ``AutoScaleDropout`` finds the ``scale<l>``
    sites by name.

    :param x: inputs, {array} of shape ``(N, D)``.
    :param y: integer labels, shape ``(N,)``, or ``None`` to predict.
    :param hidden: widths of the hidden layers.
    :param num_classes: number of classes.
    :param prior_scale: prior standard deviation ``s``.
    :param batch_size: minibatch size of the ``"data"`` plate (``None``: full batch).

    **Example**::

{example}
    """


TERNARY_MLP_DOC = r"""Discrete-weight sign-activation MLP for classification (Roth &
    Pernkopf): every weight matrix ``w<l>`` has a
    :class:`~ppl_hw.{backend}.distributions.DiscreteWeight` prior on the grid
    ``values`` (ternary by default), hidden layers are
    :math:`h_{{l+1}} = \mathrm{{sign}}(\mathrm{{BN}}(h_l W_l / \sqrt{{n_l}}))`,
    and the logits are :math:`c\, h_L W_L / \sqrt{{n_L}} + b` with a real output bias
    ``b<L>`` (``Normal(0, s)`` prior) and ``c = out_scale``. The network is written
    once: on arrays it is the deployed low-precision network; under
    ``PFP_ELBO`` the same code propagates moments (the logits go through
    ``nn.sample_logits``). Batch normalisation uses the batch's own statistics (also
    when predicting).

    :param x: inputs, {array} of shape ``(N, D)``.
    :param y: integer labels, shape ``(N,)``, or ``None`` to predict.
    :param hidden: widths of the hidden layers.
    :param num_classes: number of classes.
    :param values: the weight grid.
    :param p0: prior probability of the weight value 0 (the other values share the
        rest equally; ``p0 > 1/K`` favours zeros, i.e. sparsity); ``None`` for a
        uniform prior (needed when 0 is not on the grid).
    :param batch_norm: batch normalisation before each sign.
    :param out_scale: the output scale ``c``.
    :param prior_scale: prior standard deviation ``s`` of the output bias.
    :param batch_size: minibatch size of the ``"data"`` plate (``None``: full batch).

    **Example**::

{example}
    """


def discrete_prior_probs(values, p0) -> list[float]:
    """The prior probabilities over the grid: ``p0`` at 0, the rest shared."""
    from ..core.discrete import check_value_grid

    grid = check_value_grid(values)
    k = len(grid)
    if p0 is None:
        return [1.0 / k] * k
    if isinstance(p0, bool) or not isinstance(p0, int | float) or not 0 < p0 < 1:
        raise ValueError(f"p0 must be a probability in (0, 1) or None, got {p0!r}")
    if 0.0 not in grid:
        raise ValueError(f"p0 needs the value 0 on the grid, got values={list(grid)}")
    return [float(p0) if v == 0.0 else (1.0 - p0) / (k - 1) for v in grid]
