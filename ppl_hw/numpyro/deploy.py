"""The deployment sweep on NumPyro: :func:`deployment_sweep` and its
:class:`DeploymentSweep` table (:mod:`ppl_hw.common.deploy`)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
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


class _Job:
    """A sweep's cells on NumPyro (:class:`ppl_hw.common.deploy.SweepJob`): the
    model on each chip, the inputs and the posterior samples. Pickled for
    ``executor=`` with its arrays as NumPy arrays and without its chips (rebuilt,
    the same, in the worker)."""

    def __init__(
        self,
        model: Any,
        spec: cd.SweepSpec,
        y: np.ndarray,
        x: Any,
        sites: Any,
        samples: dict,
        chips: dict,
    ):
        self.model, self.spec, self.y, self.x, self.sites = model, spec, y, x, sites
        self.samples, self.chips = samples, chips
        self.slices = cd.chunks(x.shape[0], spec.batch_size)
        self.x64 = bool(jax.config.jax_enable_x64)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__, chips={})
        state["x"] = np.asarray(self.x)
        state["samples"] = jax.tree.map(np.asarray, self.samples)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        with self.session():
            self.x = jnp.asarray(self.x)
            self.samples = jax.tree.map(jnp.asarray, self.samples)

    @contextlib.contextmanager
    def session(self) -> Iterator[None]:
        """The caller's ``jax_enable_x64`` for the worker's cells."""
        before = bool(jax.config.jax_enable_x64)
        if before != self.x64:
            jax.config.update("jax_enable_x64", self.x64)
        try:
            yield
        finally:
            if before != self.x64:
                jax.config.update("jax_enable_x64", before)

    def trace_once(self, m: Any) -> tuple[int, ...]:
        """The site's shape on the first slice. Traced, not run: the site's and the
        handler's checks (its dry run, once per handler) at the cost of a trace,
        where an eager dry run under vmap would compile each of its operations."""
        fn = functools.partial(_site_value, m, self.spec.site, self.x[self.slices[0]])
        return jax.eval_shape(fn, _key(0), {}).shape

    def evaluate(self, t: float | None, chip_seed: int | None, read_seed: int):
        spec = self.spec
        if t is None:
            m = self.model
        elif (t, chip_seed) in self.chips:
            m = self.chips[t, chip_seed]
        else:
            m = cd.chip_model(crossbar, self.model, spec, self.sites, t, chip_seed)
        self.trace_once(m)
        key = _key(read_seed)
        for j, sl in enumerate(self.slices):
            k = key if len(self.slices) == 1 else jax.random.fold_in(key, j)
            fn = functools.partial(_site_value, m, spec.site, self.x[sl])
            keys = jax.random.split(k, spec.num_samples)
            yield np.asarray(jax.vmap(fn)(keys, self.samples))


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
    executor: Any = None,
    shard: tuple[int, int] | None = None,
) -> DeploymentSweep:
    # locals() here: exactly the arguments
    spec = cd.check_sweep(locals(), type(guide).__name__)
    executor = cd.check_executor(executor)
    shard = cd.check_shard(shard, len(cd.sweep_cells(spec)))
    targets = cd.check_data(x, y, spec.task)
    if executor is not None:
        cd.check_picklable(model=model, sites=sites)
    x = jnp.asarray(x)
    chips_ = cd.chip_models(crossbar, model, spec, sites)
    job = _Job(model, spec, targets, x, sites, {}, chips_)
    n = job.slices[0].stop
    cd.check_site_shape(spec.site, job.trace_once(model), targets, n, spec.task)
    job.trace_once(next(iter(chips_.values())))
    job.samples = _posterior(
        guide, params, x, spec.num_samples, cd.sample_seed(spec.rng_seed)
    )
    return cd.run_sweep(job, executor=executor, shard=shard)


deployment_sweep.__doc__ = cd.DEPLOYMENT_SWEEP_DOC.format(
    reads=(
        "On NumPyro a cell is the ``vmap`` over the posterior samples of "
        "``trace(seed(substitute(chip, data=sample), key))`` (what "
        "``Predictive(chip, posterior_samples=samples, parallel=True)`` computes), "
        "with ``key`` one of ``jax.random.split(jax.random.key(read_seed, "
        'impl="rbg"), num_samples)``: the ``"rbg"`` keys compile much faster '
        "under ``vmap`` than the default threefry."
    ),
    host="JAX",
    shipped=" (drawn here)",
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
