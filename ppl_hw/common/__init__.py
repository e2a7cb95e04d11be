"""The common layer: backend-neutral plumbing that is not maths.

``ppl_hw.core`` <- ``ppl_hw.common`` <- ``ppl_hw.numpyro`` / ``ppl_hw.pyro``: modules
here import the core and each other, never an adapter. One module per adapter module
(``common/autoguide.py`` beside ``numpyro/autoguide.py`` and ``pyro/autoguide.py``,
and so on) holds what both adapters share: argument checks, frozen settings,
bookkeeping and docstrings. :mod:`~ppl_hw.common.checks` has every "``x`` must be ...,
got ..." check; :mod:`~ppl_hw.common.registry` is how the adapters offer themselves
to the neutral entry points (:mod:`ppl_hw.coding`, :mod:`ppl_hw.arviz`) without those
importing them. See ``docs/architecture.md``.
"""

__all__: list[str] = []
