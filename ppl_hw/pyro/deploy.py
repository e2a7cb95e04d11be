"""The deployment sweep on Pyro: :func:`deployment_sweep` and its
:class:`DeploymentSweep` table (:mod:`ppl_hw.common.deploy`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyro
import torch
from pyro import poutine
from pyro.infer import Predictive

from ..common import deploy as cd
from ..common.deploy import DeploymentSweep
from .handlers import crossbar

__all__ = ["DeploymentSweep", "deployment_sweep"]


def _trace(model: Any, x: Any) -> Any:
    return poutine.trace(model).get_trace(x)


def _posterior(guide: Any, x: Any, num_samples: int) -> dict:
    """``num_samples`` draws of the guide's latent sites, stacked."""
    draws = [_trace(guide, x) for _ in range(num_samples)]
    names = [
        name
        for name, s in draws[0].nodes.items()
        if s["type"] == "sample" and not s["is_observed"]
    ]
    return {n: torch.stack([tr.nodes[n]["value"] for tr in draws]) for n in names}


class _Job:
    """A sweep's cells on Pyro (:class:`ppl_hw.common.deploy.SweepJob`): the model
    on each chip, the inputs and the posterior samples. Pickled for ``executor=``
    with Pyro's param store (the model's own parameters, e.g. a ``PyroModule``'s)
    and without its chips (rebuilt, the same, in the worker)."""

    def __init__(
        self,
        model: Any,
        spec: cd.SweepSpec,
        y: np.ndarray,
        x: torch.Tensor,
        sites: Any,
        samples: dict,
        site_ndim: int,
        chips: dict,
    ):
        self.model, self.spec, self.y, self.x, self.sites = model, spec, y, x, sites
        self.samples, self.site_ndim, self.chips = samples, site_ndim, chips
        self.slices = cd.chunks(x.shape[0], spec.batch_size)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__, chips={})
        state["params"] = pyro.get_param_store().get_state()
        state["dtype"] = torch.get_default_dtype()
        return state

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """In a worker: the caller's param store and default dtype, no gradients;
        the worker's param store, dtype and random state restored afterwards."""
        store = pyro.get_param_store()
        saved = (store.get_state(), torch.get_default_dtype())
        rng = pyro.util.get_rng_state()
        try:
            store.set_state(self.params)
            torch.set_default_dtype(self.dtype)
            with torch.no_grad():
                yield
        finally:
            store.set_state(saved[0])
            torch.set_default_dtype(saved[1])
            pyro.util.set_rng_state(rng)

    def evaluate(self, t: float | None, chip_seed: int | None, read_seed: int):
        spec = self.spec
        if t is None:
            m = self.model
        elif (t, chip_seed) in self.chips:
            m = self.chips[t, chip_seed]
        else:
            m = cd.chip_model(crossbar, self.model, spec, self.sites, t, chip_seed)
        pyro.set_rng_seed(read_seed)
        predictive = Predictive(
            m, posterior_samples=self.samples, return_sites=[spec.site]
        )
        for sl in self.slices:
            value = predictive(self.x[sl])[spec.site]
            # Predictive adds a singleton axis per plate level
            tail = value.shape[value.dim() - self.site_ndim :]
            yield value.reshape(spec.num_samples, *tail).cpu().numpy()


def deployment_sweep(
    model: Any,
    guide: Any,
    x: Any,
    y: Any,
    *,
    device: Any,
    times: Any,
    chips: int = 5,
    num_samples: int = 100,
    seed: int = 0,
    rng_seed: int = 0,
    site: str | None = None,
    task: str = "classification",
    label: str | None = None,
    include_clean: bool = True,
    sites: Any = None,
    batch_size: int | None = None,
    keep_predictions: bool = False,
    executor: Any = None,
    shard: tuple[int, int] | None = None,
) -> DeploymentSweep:
    # locals() here: exactly the arguments
    spec = cd.check_sweep(locals(), type(guide).__name__)
    executor = cd.check_executor(executor)
    shard = cd.check_shard(shard, len(cd.sweep_cells(spec)))
    targets = cd.check_data(x, y, spec.task)
    if executor is not None:
        cd.check_picklable(
            model=model, sites=sites, params=pyro.get_param_store().get_state()
        )
    x = torch.as_tensor(x)
    slices = cd.chunks(x.shape[0], spec.batch_size)
    chips_ = cd.chip_models(crossbar, model, spec, sites)
    state = pyro.util.get_rng_state()
    try:
        with torch.no_grad():
            # the site's and the handler's checks, from one run of each on a slice
            # (the random state is restored below)
            site_ndim = 0
            for m in (model, next(iter(chips_.values()))):
                tr = _trace(m, x[slices[0]])
                if spec.site not in tr.nodes:
                    raise cd.missing_site_error(spec.site, tr.nodes)
                value = tr.nodes[spec.site]["value"]
                site_ndim = value.dim()
            n = slices[0].stop
            cd.check_site_shape(spec.site, value.shape, targets, n, spec.task)
            pyro.set_rng_seed(cd.sample_seed(spec.rng_seed))
            samples = _posterior(guide, x, spec.num_samples)
            job = _Job(model, spec, targets, x, sites, samples, site_ndim, chips_)
            return cd.run_sweep(job, executor=executor, shard=shard)
    finally:
        pyro.util.set_rng_state(state)


deployment_sweep.__doc__ = cd.DEPLOYMENT_SWEEP_DOC.format(
    reads=(
        "On Pyro a cell is ``pyro.set_rng_seed(read_seed)`` followed by "
        "``Predictive(chip, posterior_samples=samples, return_sites=[site])(x)`` "
        "(the samples drawn one guide trace at a time after "
        "``pyro.set_rng_seed(sample_seed(rng_seed))``); the global random state is "
        "restored when the sweep returns. The guide's parameters are those in "
        "Pyro's param store."
    ),
    host="torch",
    shipped=" (drawn here) and Pyro's param store (for the model's own parameters)",
    params="",
    batch="on from where slice ``j - 1`` left torch's generator",
    example="""\
        from ppl_hw import devices
        from ppl_hw.pyro.deploy import deployment_sweep

        sweep = deployment_sweep(
            model, guide, x_test, y_test,
            device=devices.PCM(), times=[1.0, 86_400.0, 31_536_000.0], chips=5,
        )
        print(sweep)  # mean ± sd over the chips
        sweep.plot("accuracy")""",
)
