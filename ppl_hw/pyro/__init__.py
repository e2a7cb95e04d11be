"""ppl_hw for Pyro (PyTorch): the same public names as :mod:`ppl_hw.numpyro`.

Submodules: :mod:`~ppl_hw.pyro.distributions` (device noise, discrete weights,
spike-and-slab), :mod:`~ppl_hw.pyro.handlers` (the crossbar handler, also as
:mod:`~ppl_hw.pyro.poutine`),
:mod:`~ppl_hw.pyro.nn` (crossbar-aware network primitives),
:mod:`~ppl_hw.pyro.models` (ready-made models),
:mod:`~ppl_hw.pyro.bnn` (a Bayesian network in one call from your own module),
:mod:`~ppl_hw.pyro.deploy` (the deployment sweep over chips and read times) and
:mod:`~ppl_hw.pyro.distributed` (data-parallel training on ``torch.distributed``).
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
    poutine,
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
    "poutine",
]
