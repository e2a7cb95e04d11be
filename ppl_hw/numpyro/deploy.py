"""The deployment sweep on NumPyro: :func:`deployment_sweep` and its
:class:`DeploymentSweep` table (:mod:`ppl_hw.common.deploy`)."""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from numpyro import handlers

from ..common import deploy as cd
from ..common.deploy import DeploymentSweep
from .handlers import crossbar

__all__ = ["DeploymentSweep", "deployment_sweep"]


def _key(seed: int) -> Any:
    """A key of the ``"rbg"`` implementation: its normal draws under ``vmap``
    compile in a fraction of the time of the default threefry's."""
    return jax.random.key(seed, impl="rbg")


def _site_value(model: Any, site: str, x: Any, key: Any, sample: dict) -> Any:
    """The value of ``site`` in one run of ``model(x)`` with the latent sites in
    ``sample`` substituted and every other draw from ``key``."""
    seeded = handlers.seed(handlers.substitute(model, data=sample), key)
    tr = handlers.trace(seeded).get_trace(x)
    if site not in tr:
        raise cd.missing_site_error(site, tr)
    return tr[site]["value"]


def _posterior(guide: Any, params: Any, x: Any, num_samples: int, seed: int) -> dict:
    """``num_samples`` draws of the guide's latent sites (``vmap``-ed)."""
    if params is not None:
        guide = handlers.substitute(guide, data=params)

    def one(key: Any) -> dict:
        tr = handlers.trace(handlers.seed(guide, key)).get_trace(x)
        return {
            name: s["value"]
            for name, s in tr.items()
            if s["type"] == "sample" and not s["is_observed"]
        }

    return jax.vmap(one)(jax.random.split(_key(seed), num_samples))


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
    params: Any = None,
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
    x = jnp.asarray(x)
    slices = cd.chunks(x.shape[0], spec.batch_size)
    chips_ = cd.chip_models(crossbar, model, spec, sites)

    def trace_once(m: Any) -> tuple[int, ...]:
        # traced, not run: the site's and the handler's checks (its dry run, once
        # per handler) at the cost of a trace, where an eager dry run under vmap
        # would compile each of its operations
        fn = functools.partial(_site_value, m, spec.site, x[slices[0]])
        return jax.eval_shape(fn, _key(0), {}).shape

    n = slices[0].stop
    cd.check_site_shape(spec.site, trace_once(model), targets, n, spec.task)
    trace_once(next(iter(chips_.values())))
    samples = _posterior(
        guide, params, x, spec.num_samples, cd.sample_seed(spec.rng_seed)
    )

    def evaluate(t: float | None, chip_seed: int | None, read_seed: int):
        m = model if t is None else chips_[t, chip_seed]
        trace_once(m)
        key = _key(read_seed)
        for j, sl in enumerate(slices):
            k = key if len(slices) == 1 else jax.random.fold_in(key, j)
            fn = functools.partial(_site_value, m, spec.site, x[sl])
            keys = jax.random.split(k, spec.num_samples)
            yield np.asarray(jax.vmap(fn)(keys, samples))

    return cd.run_sweep(spec, targets, evaluate)


deployment_sweep.__doc__ = cd.DEPLOYMENT_SWEEP_DOC.format(
    reads=(
        "On NumPyro a cell is the ``vmap`` over the posterior samples of "
        "``trace(seed(substitute(chip, data=sample), key))`` (what "
        "``Predictive(chip, posterior_samples=samples, parallel=True)`` computes), "
        "with ``key`` one of ``jax.random.split(jax.random.key(read_seed, "
        'impl="rbg"), num_samples)``: the ``"rbg"`` keys compile much faster '
        "under ``vmap`` than the default threefry."
    ),
    params=(
        "\n    :param params: the guide's parameters (``SVI``'s ``params``), "
        "substituted into it; ``None`` for a guide without parameters."
    ),
    batch=("with the key ``jax.random.fold_in(key, j)`` (one slice: ``key`` itself)"),
    example="""\
        from ppl_hw import devices
        from ppl_hw.numpyro.deploy import deployment_sweep

        sweep = deployment_sweep(
            model, guide, x_test, y_test, params=svi_result.params,
            device=devices.PCM(), times=[1.0, 86_400.0, 31_536_000.0], chips=5,
        )
        print(sweep)  # mean ± sd over the chips
        sweep.plot("accuracy")""",
)
