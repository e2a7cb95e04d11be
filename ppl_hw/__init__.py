"""ppl_hw: Bayesian neural networks for analog hardware, for NumPyro and Pyro.

Importing :mod:`ppl_hw` loads neither JAX nor PyTorch: import the backend you use,
:mod:`ppl_hw.numpyro` or :mod:`ppl_hw.pyro`.
"""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
