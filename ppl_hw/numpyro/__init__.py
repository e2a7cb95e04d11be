"""ppl_hw for NumPyro (JAX).

Submodules: :mod:`~ppl_hw.numpyro.distributions` (device noise, discrete weights,
spike-and-slab), :mod:`~ppl_hw.numpyro.handlers` (the crossbar handler),
:mod:`~ppl_hw.numpyro.nn` (crossbar-aware network primitives),
:mod:`~ppl_hw.numpyro.models` (ready-made models),
:mod:`~ppl_hw.numpyro.bnn` (a Bayesian network in one call from your own module),
:mod:`~ppl_hw.numpyro.deploy` (the deployment sweep over chips and read times) and
:mod:`~ppl_hw.numpyro.distributed` (data-parallel training on JAX meshes and
``jax.distributed``).
"""

# arviz and coding register this adapter with ppl_hw.arviz and ppl_hw.coding
from . import (  # noqa: F401
    arviz,
    autoguide,
    bnn,
    coding,
    deploy,
    distributed,
    distributions,
    handlers,
    infer,
    models,
    nn,
)

__all__ = [
    "autoguide",
    "bnn",
    "deploy",
    "distributed",
    "distributions",
    "handlers",
    "infer",
    "models",
    "nn",
]
