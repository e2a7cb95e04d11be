"""Which latent sites each site depends on, by Pyro's own provenance tracking
(:class:`pyro.ops.provenance.ProvenanceTensor`, as
``pyro.infer.inspect.get_dependencies``). Used by the crossbar handler (which sites
are weights) and by ``AutoMeanKL`` (which Normal priors are fixed)."""

from __future__ import annotations

from typing import Any

import pyro
import torch
from pyro.poutine.messenger import Messenger
from pyro.poutine.util import site_is_subsample

__all__ = ["Provenance", "dependencies"]


class Provenance(Messenger):
    """Pyro's provenance tracking for the dry trace (as
    ``pyro.infer.inspect.TrackProvenance``, but also keeping what each site's log
    density and each deterministic value depends on): ``deps[name]`` is the set of
    latent sites a sample site's log density, or a deterministic site's value,
    depends on."""

    def __init__(self) -> None:
        super().__init__()
        self.deps: dict[str, frozenset] = {}

    def _pyro_post_sample(self, msg: dict) -> None:
        from pyro.ops.provenance import (
            ProvenanceTensor,
            detach_provenance,
            get_provenance,
        )

        if site_is_subsample(msg):
            return
        name = msg["name"]
        if msg["infer"].get("_deterministic"):
            self.deps[name] = frozenset(get_provenance(msg["value"]))
            return
        self.deps[name] = frozenset(get_provenance(msg["fn"].log_prob(msg["value"])))
        if not msg["is_observed"] and isinstance(msg["value"], torch.Tensor):
            value = detach_provenance(msg["value"])
            msg["value"] = ProvenanceTensor(value, frozenset({name}))


def dependencies(model: Any, args: tuple, kwargs: dict) -> dict[str, frozenset]:
    """``{site: latent sites its log density (or value) depends on}`` from one
    blocked, gradient-free trace of ``model`` that leaves torch's random stream
    where it was. Raises whatever the trace raises."""
    state = pyro.util.get_rng_state()
    try:
        prov = Provenance()
        with pyro.poutine.block(), torch.no_grad(), prov:
            pyro.poutine.trace(model).get_trace(*args, **kwargs)
    finally:
        pyro.util.set_rng_state(state)
    return prov.deps
