r"""Predictive metrics for classifiers and regressors, and sample-based distances
(NumPy).

Every function accepts NumPy, JAX or PyTorch arrays (converted with
:func:`numpy.asarray`) and returns NumPy values. Class probabilities are arrays of
shape ``(N, C)`` holding the **posterior predictive** probabilities (already averaged
over posterior samples); :func:`mutual_information` takes the per-sample
probabilities of shape ``(S, N, C)``. Regression metrics take the predictive mean
(and variance) of each target.

Probabilities are checked (finite, in [0, 1], rows summing to 1 within
:data:`ppl_hw.core.metrics.PROB_ATOL`; :func:`accuracy` also takes logits, checked
finite) and empty inputs refused, each with a ``ValueError`` naming the argument.
Zero probabilities are handled: :func:`nll` clips at the smallest positive normal
float64 (so a confidently wrong prediction costs about 708 nats instead of ``inf``)
and the entropies use :math:`0 \log 0 = 0`; :func:`gaussian_nll` floors the variance
at the same number.

The functions are defined in :mod:`ppl_hw.core.metrics` (the core, so that the
deployment sweep of both backends scores with them) and re-exported here.
"""

from __future__ import annotations

from .core.metrics import (
    accuracy,
    energy_distance,
    expected_calibration_error,
    gaussian_nll,
    mutual_information,
    nll,
    predictive_entropy,
    rmse,
)

__all__ = [
    "accuracy",
    "energy_distance",
    "expected_calibration_error",
    "gaussian_nll",
    "mutual_information",
    "nll",
    "predictive_entropy",
    "rmse",
]
