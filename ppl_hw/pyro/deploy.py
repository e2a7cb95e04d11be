"""The deployment sweep on Pyro: :func:`deployment_sweep` and its
:class:`DeploymentSweep` table (:mod:`ppl_hw.common.deploy`)."""

from __future__ import annotations

from typing import Any

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
) -> DeploymentSweep:
    # locals() here: exactly the arguments
    spec = cd.check_sweep(locals(), type(guide).__name__)
    targets = cd.check_data(x, y, spec.task)
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

            def evaluate(t: float | None, chip_seed: int | None, read_seed: int):
                m = model if t is None else chips_[t, chip_seed]
                pyro.set_rng_seed(read_seed)
                predictive = Predictive(
                    m, posterior_samples=samples, return_sites=[spec.site]
                )
                for sl in slices:
                    value = predictive(x[sl])[spec.site]
                    # Predictive adds a singleton axis per plate level
                    tail = value.shape[value.dim() - site_ndim :]
                    yield value.reshape(spec.num_samples, *tail).cpu().numpy()

            return cd.run_sweep(spec, targets, evaluate)
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
