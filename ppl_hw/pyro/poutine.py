"""``ppl_hw.pyro.poutine``: the Pyro spelling of :mod:`ppl_hw.pyro.handlers` (Pyro
calls its effect handlers ``pyro.poutine``); the same objects under both names."""

from .handlers import CrossbarMessenger, active_crossbar, crossbar

__all__ = ["CrossbarMessenger", "active_crossbar", "crossbar"]
