r"""Data-parallel NumPyro on JAX's own engines: a ``jax.sharding.Mesh`` of devices
(one GPU, several GPUs, host CPU devices) and several processes or hosts joined by
``jax.distributed``.

:class:`DataParallelSVI` is NumPyro's ``SVI`` with the per-example data sharded over
one mesh axis and everything else (other arguments, parameters, optimizer state)
replicated: every device evaluates the model on its share of the minibatch, and the
sum over the data plate and its gradient become an all-reduce inserted by XLA's SPMD
partitioner. The ELBO is the one-device ELBO (up to float32 summation order).
:func:`shard` and :func:`replicate` place any pytree of arrays the same way, e.g.
posterior samples or test inputs for ``Predictive``.

**Several processes.** After ``jax.distributed.initialize(...)`` (on CPU first
``jax.config.update("jax_cpu_collectives_implementation", "gloo")``) the mesh spans
the devices of all processes; each process passes **its own part** of every data
argument (the global minibatch is the concatenation of the parts in process order)
and the **same** value of everything else. The same script then runs on one device,
on a mesh in one process, and on many processes.

**Predictive** needs no wrapper::

    # test inputs sharded over the devices, posterior samples replicated
    out = Predictive(model, posterior_samples=replicate(mesh, samples))(
        key, shard(mesh, x_test))
    # posterior samples sharded: jit it and constrain the outputs to the sample
    # axis (Predictive's own vmap would otherwise gather the samples)
    predict = jax.jit(lambda k, s, x: shard(mesh, Predictive(
        model, posterior_samples=s)(k, x)))
    out = predict(key, shard(mesh, samples), replicate(mesh, x_test))

Both give the unsharded predictions (tests/numpyro/test_distributed.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np
import tqdm
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec
from numpyro.infer import SVI
from numpyro.infer.svi import SVIRunResult, SVIState
from numpyro.primitives import Messenger

from ..common import distributed as dc

__all__ = ["DataParallelSVI", "replicate", "shard"]


def _check_mesh(mesh: Any) -> Mesh:
    """The mesh with ``Auto`` axes (XLA's sharding propagation, which places the
    all-reduces): the same devices and axis names. ``jax.make_mesh`` makes
    ``Explicit`` axes by default, under which NumPyro's eager set-up code fails."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh, got {mesh!r}")
    auto = jax.sharding.AxisType.Auto
    if all(t == auto for t in mesh.axis_types):
        return mesh
    return Mesh(mesh.devices, mesh.axis_names, axis_types=(auto,) * mesh.devices.ndim)


def _is_array(x: Any) -> bool:
    return isinstance(x, np.ndarray | np.generic | jax.Array)


def _local_parts(mesh: Mesh, axis: str) -> int:
    """How many of the axis's shards this process's devices hold."""
    devices = np.moveaxis(mesh.devices, mesh.axis_names.index(axis), 0)
    me = jax.process_index()
    return sum(
        any(d.process_index == me for d in np.ravel(devices[i]))
        for i in range(devices.shape[0])
    )


def _place(x: Any, sharding: NamedSharding, *, local_part: bool) -> Any:
    """``x`` as a global array with ``sharding``. ``local_part``: in several
    processes, ``x`` is this process's part (along the sharded axis) of the global
    array; otherwise ``x`` is the global value itself (the same in every process)."""
    if isinstance(x, jax.core.Tracer):
        return lax.with_sharding_constraint(x, sharding)
    if isinstance(x, jax.Array) and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
        data = _place(jax.random.key_data(x), sharding, local_part=local_part)
        return jax.random.wrap_key_data(data, impl=jax.random.key_impl(x))
    if isinstance(x, jax.Array) and (
        not x.is_fully_addressable or jax.process_count() == 1
    ):
        if isinstance(x.sharding, NamedSharding) and x.sharding.is_equivalent_to(
            sharding, x.ndim
        ):
            return x
        return jax.device_put(x, sharding)
    if jax.process_count() == 1:
        return jax.device_put(x, sharding)
    data = np.asarray(x)
    data = data.astype(jax.dtypes.canonicalize_dtype(data.dtype), copy=False)
    return jax.make_array_from_process_local_data(
        sharding, data, None if local_part else data.shape
    )


def _shard_leaf(
    x: Any, sharding: NamedSharding, axis: str, what: str, local_part: bool
) -> Any:
    if x is None:
        return None
    if not _is_array(x):
        raise TypeError(f"{what} must be an array to shard, got {type(x).__name__}")
    shape = np.shape(x)
    if not shape:
        raise ValueError(f"{what} must have a leading (example) axis, got a scalar")
    mesh = sharding.mesh
    local = (
        local_part
        and jax.process_count() > 1
        and not isinstance(x, jax.core.Tracer)
        and not (isinstance(x, jax.Array) and not x.is_fully_addressable)
    )
    parts = _local_parts(mesh, axis) if local else mesh.shape[axis]
    where = " (this process's part)" if local else ""
    dc.check_divisible(what + where, shape[0], parts, axis)
    return _place(x, sharding, local_part=local_part)


def shard(mesh: Mesh, tree: Any, axis: str | None = None, *, name: str = "tree") -> Any:
    """Every array of ``tree`` placed on ``mesh`` split along its **leading** axis
    over mesh axis ``axis`` (default: the mesh's first axis); ``None`` leaves stay.

    In one process the arrays are the global arrays. After ``jax.distributed``
    initialisation each process passes **its own part** (the global array is the
    concatenation of the parts in process order); arrays that already span several
    processes are resharded. Under ``jax.jit`` this is a sharding constraint.

    :raises ValueError: an array whose leading size is not divisible by the number
        of devices on the axis (the name of the leaf and the sizes are in the
        message), or an unknown axis.
    :raises TypeError: ``mesh`` is not a ``jax.sharding.Mesh`` or a leaf is not an
        array.
    """
    axis = dc.check_mesh_axis(_check_mesh(mesh).axis_names, axis)
    sharding = NamedSharding(_check_mesh(mesh), PartitionSpec(axis))
    leaves = jax.tree_util.tree_flatten_with_path(tree, is_leaf=lambda v: v is None)
    out = [
        _shard_leaf(
            v, sharding, axis, name + jax.tree_util.keystr(path), local_part=True
        )
        for path, v in leaves[0]
    ]
    return jax.tree.unflatten(leaves[1], out)


def replicate(mesh: Mesh, tree: Any) -> Any:
    """Every array of ``tree`` replicated on all devices of ``mesh`` (other leaves
    unchanged). With several processes each process passes the same values."""
    sharding = NamedSharding(_check_mesh(mesh), PartitionSpec())
    return jax.tree.map(
        lambda v: _place(v, sharding, local_part=False) if _is_array(v) else v, tree
    )


class _ShardPlates(Messenger):
    """Split the indices of every subsampled plate over the mesh axis (the model's
    own minibatch), after checking the minibatch divides evenly."""

    def __init__(self, fn: Callable, svi: DataParallelSVI):
        self.svi = svi
        super().__init__(fn)

    def postprocess_message(self, msg: dict) -> None:
        if msg["type"] != "plate":
            return
        size, sub = msg["args"]
        if sub is None or sub == size:
            return
        svi = self.svi
        parts = svi.mesh.shape[svi.mesh_axis]
        what = f"the minibatch of subsampled plate {msg['name']!r} (subsample_size)"
        dc.check_divisible(what, int(np.shape(msg["value"])[0]), parts, svi.mesh_axis)
        msg["value"] = _place(msg["value"], svi._batch_sharding, local_part=False)
        svi._saw_plate = True


class DataParallelSVI(SVI):
    r"""NumPyro ``SVI`` data-parallel over a ``jax.sharding.Mesh``: the per-example
    arguments are split along their leading axis over ``mesh_axis``, every other array
    argument, the parameters and the optimizer state are replicated, and XLA turns the
    sums over the data into all-reduces. :meth:`init`, :meth:`update`,
    :meth:`stable_update`, :meth:`evaluate` and :meth:`run` are ``SVI``'s and give
    its ELBO (float32 summation order aside); the returned state and parameters are
    replicated.

    **Which arguments are data.** ``data_argnums`` (positions) and ``data_argnames``
    (keyword names) name the model/guide arguments holding per-example data (arrays
    or pytrees of arrays with the examples on the leading axis, e.g. ``x`` and
    ``y``); ``None`` values and arguments not passed are skipped. Two ways to feed a
    minibatch, both sharded:

    * pass the (global) minibatch of ``B`` examples as the data arguments, to a model
      whose data plate is ``numpyro.plate("data", N, subsample_size=B)``, so the
      likelihood is scaled by :math:`N/B` (``B`` the global size, not a device's
      share);
    * or let the model subsample (``numpyro.plate("data", N, subsample_size=B)`` with
      ``numpyro.subsample``, e.g. :func:`ppl_hw.numpyro.models.mlp_classifier` with
      ``batch_size=B``): the indices of every subsampled plate are split over the
      axis too (the data itself may be sharded or replicated).

    ``B`` must be divisible by the number of devices on the axis (a ``ValueError``
    naming the argument and the sizes otherwise, before any work).

    **Several processes** (``jax.distributed.initialize``): each process passes its
    own part of every data argument and the same value of every other argument;
    :meth:`init`/:meth:`update`/:meth:`run` assemble the global arrays
    (``jax.make_array_from_process_local_data``). To ``jax.jit`` the update yourself,
    place the arguments first with :meth:`place`.

    :param model: the model.
    :param guide: the guide (any NumPyro or ppl_hw guide).
    :param optim: as for ``SVI``.
    :param loss: as for ``SVI``.
    :param mesh: a ``jax.sharding.Mesh``, e.g. ``jax.make_mesh((jax.device_count(),),
        ("data",))`` (its axes are used as ``Auto`` axes: XLA propagates the
        shardings; :attr:`mesh` is that mesh).
    :param mesh_axis: the axis to shard over (default: the mesh's first axis).
    :param data_argnums: positions of the per-example arguments (an int or ints).
    :param data_argnames: keyword names of the per-example arguments.
    :param static_kwargs: as for ``SVI`` (replicated; keep data out of them).
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        optim: Any,
        loss: Any,
        *,
        mesh: Mesh,
        mesh_axis: str | None = None,
        data_argnums: int | tuple[int, ...] = (),
        data_argnames: str | tuple[str, ...] = (),
        **static_kwargs: Any,
    ):
        self.mesh = mesh = _check_mesh(mesh)
        self.mesh_axis = dc.check_mesh_axis(mesh.axis_names, mesh_axis)
        self.data_argnums = dc.normalize_argnums("data_argnums", data_argnums)
        self.data_argnames = dc.normalize_argnames("data_argnames", data_argnames)
        self._batch_sharding = NamedSharding(mesh, PartitionSpec(self.mesh_axis))
        self._replicated = NamedSharding(mesh, PartitionSpec())
        self._saw_plate = False
        #: the user's model (``self.model`` splits its subsampled plates)
        self.base_model = model
        super().__init__(_ShardPlates(model, self), guide, optim, loss, **static_kwargs)
        self.static_kwargs = self._replicate(self.static_kwargs)

    # -- placement -------------------------------------------------------------------

    def _replicate(self, tree: Any) -> Any:
        return jax.tree.map(
            lambda v: (
                _place(v, self._replicated, local_part=False) if _is_array(v) else v
            ),
            tree,
        )

    def _shard(self, tree: Any, what: str) -> Any:
        return shard(self.mesh, tree, self.mesh_axis, name=what)

    def place(self, *args: Any, **kwargs: Any) -> tuple[tuple, dict]:
        """``(args, kwargs)`` with the data arguments sharded and every other array
        replicated on the mesh (in several processes: the global arrays assembled
        from each process's part). What :meth:`update` does to its arguments; use it
        before calling a ``jax.jit``-ed ``update`` yourself."""
        nums, names = dc.data_argument_names(
            len(args), kwargs, self.data_argnums, self.data_argnames
        )
        args = tuple(
            self._shard(a, f"argument {i}") if i in nums else self._replicate(a)
            for i, a in enumerate(args)
        )
        kwargs = {
            k: self._shard(v, f"argument {k!r}") if k in names else self._replicate(v)
            for k, v in kwargs.items()
        }
        self._num_data = sum(
            1
            for leaf in jax.tree.leaves(
                [args[i] for i in nums] + [kwargs[k] for k in names]
            )
            if leaf is not None
        )
        return args, kwargs

    def _state(self, state: SVIState) -> SVIState:
        return SVIState(*self._replicate(tuple(state)))

    # -- SVI -------------------------------------------------------------------------

    def init(
        self, rng_key: Any, *args: Any, init_params: dict | None = None, **kwargs: Any
    ) -> SVIState:
        placed = self.place(*args, **kwargs)  # checks the data arguments
        if jax.process_count() > 1:  # the model must see the global arrays
            args, kwargs = placed
            rng_key, init_params = self._replicate((rng_key, init_params))
        # in one process the set-up (eager, hundreds of small programs) runs on the
        # arguments as given: the same values and the same programs as plain SVI's;
        # the state is replicated below
        self._saw_plate = False
        state = super().init(rng_key, *args, init_params=init_params, **kwargs)
        if not self._num_data and not self._saw_plate:
            raise ValueError(
                "DataParallelSVI has nothing to shard: name the per-example arguments "
                "with data_argnums=/data_argnames= (got data_argnums="
                f"{self.data_argnums}, data_argnames={self.data_argnames} for "
                f"{len(args)} positional arguments and keywords {sorted(kwargs)}), "
                "or use a model with a subsampled plate"
            )
        return self._state(state)

    def update(
        self,
        svi_state: SVIState,
        *args: Any,
        forward_mode_differentiation: bool = False,
        **kwargs: Any,
    ) -> tuple[SVIState, Any]:
        args, kwargs = self.place(*args, **kwargs)
        state, loss = super().update(
            self._state(svi_state),
            *args,
            forward_mode_differentiation=forward_mode_differentiation,
            **kwargs,
        )
        return self._state(state), loss

    def stable_update(
        self,
        svi_state: SVIState,
        *args: Any,
        forward_mode_differentiation: bool = False,
        **kwargs: Any,
    ) -> tuple[SVIState, Any]:
        args, kwargs = self.place(*args, **kwargs)
        state, loss = super().stable_update(
            self._state(svi_state),
            *args,
            forward_mode_differentiation=forward_mode_differentiation,
            **kwargs,
        )
        return self._state(state), loss

    def evaluate(self, svi_state: SVIState, *args: Any, **kwargs: Any) -> Any:
        args, kwargs = self.place(*args, **kwargs)
        return super().evaluate(self._state(svi_state), *args, **kwargs)

    def run(
        self,
        rng_key: Any,
        num_steps: int,
        *args: Any,
        progress_bar: bool = True,
        stable_update: bool = False,
        forward_mode_differentiation: bool = False,
        init_state: SVIState | None = None,
        init_params: dict | None = None,
        **kwargs: Any,
    ) -> SVIRunResult:
        """``SVI.run`` with the arguments placed once and passed to the compiled step
        as arguments (global arrays cannot be closed over in several processes)."""
        if num_steps < 1:
            raise ValueError("num_steps must be a positive integer.")
        args, kwargs = self.place(*args, **kwargs)
        if init_state is None:
            state = self.init(rng_key, *args, init_params=init_params, **kwargs)
        else:
            state = self._state(init_state)
        leaves, treedef = jax.tree.flatten((args, kwargs))
        is_arr = [isinstance(v, jax.Array) for v in leaves]
        arrays = [v for v, a in zip(leaves, is_arr, strict=True) if a]
        step = self.stable_update if stable_update else self.update

        def body(state: SVIState, arrays: list) -> tuple[SVIState, Any]:
            it = iter(arrays)
            full = [next(it) if a else v for v, a in zip(leaves, is_arr, strict=True)]
            a, k = jax.tree.unflatten(treedef, full)
            return step(
                state,
                *a,
                forward_mode_differentiation=forward_mode_differentiation,
                **k,
            )

        if progress_bar:
            jitted = jax.jit(body)
            losses = []
            with tqdm.trange(1, num_steps + 1) as t:
                every = max(num_steps // 20, 1)
                for i in t:
                    state, loss = jitted(state, arrays)
                    losses.append(loss)
                    if i % every == 0:
                        recent = [float(v) for v in losses[i - every :]]
                        t.set_postfix_str(
                            f"init loss: {float(losses[0]):.4f}, avg. loss "
                            f"[{i - every + 1}-{i}]: {sum(recent) / every:.4f}",
                            refresh=False,
                        )
            losses_arr = jax.numpy.stack(losses)
        else:

            def scan(state: SVIState, arrays: list) -> tuple[SVIState, Any]:
                return lax.scan(lambda s, _: body(s, arrays), state, None, num_steps)

            state, losses_arr = jax.jit(scan)(state, arrays)
        state = self._state(state)
        return SVIRunResult(self.get_params(state), state, losses_arr)
