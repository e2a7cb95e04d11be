r"""Data-parallel Pyro on :mod:`torch.distributed`: :class:`DataParallelSVI`, and the
``process_group=`` option of :class:`ppl_hw.pyro.infer.SGHMC`.

Every process (rank) runs the same program with **the same seed**
(``pyro.set_rng_seed(seed)`` on every rank) and holds a replica of the parameters;
each rank computes the loss and gradients on its own share of the minibatch, the
gradients are averaged over the process group (one ``all_reduce``), and every rank
applies the same optimizer step, so the replicas stay identical, as in PyTorch's
``DistributedDataParallel``.

**Minibatches.** Write the model's data plate with the *per-rank* minibatch size,
``pyro.plate("data", N, subsample_size=B_local)``: the likelihood of each rank is
then scaled by ``N / B_local``, and the average over ``R`` ranks of these estimates is
exactly the estimate with scale ``N / B`` on the global minibatch of ``B = R B_local``
points. A plain ``pyro.plate`` would draw the *same* indices on every rank (the
generators are shared), which is why Pyro's own Lightning example passes minibatches
by hand. :class:`DataParallelSVI` instead draws the global minibatch once, as a
single process with ``subsample_size=B`` does (the same ``torch.randperm``, from the
shared generator), and gives each rank its contiguous share ``[r B_local, (r+1)
B_local)``. So the run equals, up to float rounding, the single-process run with
``subsample_size=R * B_local`` on the same seed: same minibatches, same guide samples
(drawn identically on every rank), and the averaged gradient is the global one.
(Full-batch training over ``R`` ranks is ``subsample_size=N // R``: each rank takes
its contiguous ``N / R`` points; the guide's set-up then draws one subsample more
than an unsubsampled single process, so its random stream differs from that run's.)
To feed minibatches by hand instead, draw the global indices from the shared
generator on every rank (``torch.randperm(N)[:B]``), keep this rank's share with
:func:`rank_slice` and pass it as ``pyro.plate("data", N, subsample=local)`` (to an
autoguide too, through its ``create_plates=``: Pyro's guides otherwise draw their
own subsample).

Exact equality with the single-process run needs every random draw of the guide to be
*global* (outside the data plate), as for the weight-space guides of BNNs. A guide
or model that draws noise per data point inside the plate (local latent variables,
the local reparameterisation trick) draws the same noise on every rank for different
points: still an unbiased estimate, but not the single-process run's draws.

Recipes (``train.py`` calls ``init_process_group``, seeds every rank alike and builds
the model with ``batch_size=B // dist.get_world_size()``):

* CPU processes on one machine: ``torchrun --standalone --nproc-per-node=2 train.py``
  with ``torch.distributed.init_process_group("gloo")`` and
  ``torch.set_num_threads(1)`` (or cores / ranks) in ``train.py``;
* several GPUs of one machine: ``torchrun --standalone --nproc-per-node=<gpus>
  train.py`` with ``init_process_group("nccl")``,
  ``torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))`` and the data on that
  device;
* several hosts: on each, ``torchrun --nnodes=<hosts> --nproc-per-node=<k>
  --rdzv-backend=c10d --rdzv-endpoint=<host0>:29500 train.py`` (NCCL between GPUs,
  gloo between CPUs).

Tested here: two CPU processes on gloo (the tests start them directly with a file
store; the ``torchrun --standalone`` line was run by hand). Not tested here: NCCL,
GPUs, several hosts.
"""

from __future__ import annotations

import hashlib
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import pyro
import torch
import torch.distributed as dist
from pyro.infer import SVI
from pyro.infer.util import torch_item
from pyro.poutine import trace as _trace
from pyro.poutine.messenger import Messenger
from pyro.poutine.subsample_messenger import _Subsample

from ..common.distributed import check_global_batch, check_plate_names, split_range

__all__ = ["DataParallelSVI", "rank_slice"]


def resolve_group(
    process_group: Any,
    argname: str = "process_group",
    none_means: str = "the world group",
) -> Any:
    """The process group (``None``: the world group), checked: torch.distributed
    initialised and this process a member; ``none_means`` words what ``None`` means
    to the caller in the error message."""
    non_member = getattr(getattr(dist, "GroupMember", None), "NON_GROUP_MEMBER", None)
    if process_group is not None and process_group is non_member:
        raise ValueError(
            f"{argname}: this process is not a member of the group (new_group "
            "returned GroupMember.NON_GROUP_MEMBER)"
        )
    if process_group is not None and not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            f"{argname} must be a torch.distributed.ProcessGroup (or None for "
            f"{none_means}), got {type(process_group).__name__}: {process_group!r}"
        )
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError(
            "torch.distributed is not initialised: call "
            "torch.distributed.init_process_group('gloo') (CPU) or ('nccl') (GPU) on "
            "every process first (torchrun sets the environment it reads)"
        )
    group = dist.group.WORLD if process_group is None else process_group
    if dist.get_rank(group) < 0:
        raise ValueError(f"{argname}: this process is not a member of the group")
    return group


def _rank_world(group: Any) -> tuple[int, int]:
    return dist.get_rank(group), dist.get_world_size(group)


def _comm_device(group: Any) -> torch.device:
    """Where small bookkeeping tensors go for the group's backend."""
    if dist.get_backend(group) == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def rank_slice(x: Any, process_group: Any = None, *, dim: int = 0) -> Any:
    """This rank's contiguous share of a global minibatch ``x`` (a tensor of data or
    of indices) along ``dim``: ``R`` equal shares in rank order, so concatenating the
    shares gives ``x`` back. ``ValueError`` when ``x.shape[dim]`` is not divisible by
    the group's size."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if not isinstance(dim, int) or not -x.dim() <= dim < x.dim():
        raise ValueError(f"dim={dim!r} is out of range for a {x.dim()}-d tensor")
    group = resolve_group(process_group)
    rank, world = _rank_world(group)
    start, stop = split_range(x.shape[dim], rank, world, "the minibatch")
    return x.narrow(dim, start, stop - start)


def check_shared_generator(group: Any, what: str) -> None:
    """``RuntimeError`` unless torch's global generator (and CUDA's, when in use) is
    in the same state on every rank of ``group``: one ``all_reduce`` of a digest."""
    state = torch.get_rng_state().numpy().tobytes()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state += torch.cuda.get_rng_state().numpy().tobytes()
    digest = int.from_bytes(hashlib.blake2b(state, digest_size=7).digest(), "little")
    t = torch.tensor([digest, -digest], dtype=torch.int64, device=_comm_device(group))
    dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    if int(t[0]) != -int(t[1]):
        raise RuntimeError(
            f"{what}: torch's random generator differs across ranks; seed every rank "
            "with the same seed (pyro.set_rng_seed(seed)) before the first step, and "
            "draw rank-specific randomness from your own torch.Generator"
        )


def all_reduce_mean(tensors: list[torch.Tensor], group: Any) -> list[torch.Tensor]:
    """The averages over ``group`` of ``tensors`` (the same shapes and dtypes on every
    rank), each in its own dtype: one flat ``all_reduce`` per (dtype, device), started
    together."""
    world = dist.get_world_size(group)
    buckets: dict[tuple, list[int]] = {}
    for i, t in enumerate(tensors):
        buckets.setdefault((t.dtype, t.device), []).append(i)
    works, flats = [], []
    for idx in buckets.values():
        flat = torch.cat([tensors[i].detach().reshape(-1) for i in idx])
        works.append(dist.all_reduce(flat, group=group, async_op=True))
        flats.append((flat, idx))
    for w in works:
        w.wait()
    out: list = [None] * len(tensors)
    for flat, idx in flats:
        flat.div_(world)
        pos = 0
        for i in idx:
            n = tensors[i].numel()
            out[i] = flat[pos : pos + n].view_as(tensors[i])
            pos += n
    return out


def broadcast_(tensors: list[torch.Tensor], group: Any) -> bool:
    """Overwrite ``tensors`` in place with group rank 0's values; ``True`` when they
    changed on any rank."""
    src = dist.get_global_rank(group, 0)
    changed = False
    buckets: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        buckets.setdefault((t.dtype, t.device), []).append(t)
    with torch.no_grad():
        for ts in buckets.values():
            flat = torch.cat([t.detach().reshape(-1) for t in ts])
            mine = flat.clone()
            dist.broadcast(flat, src=src, group=group)
            if not torch.equal(flat, mine):
                changed = True
                pos = 0
                for t in ts:
                    t.copy_(flat[pos : pos + t.numel()].view_as(t))
                    pos += t.numel()
    flag = torch.tensor([float(changed)], device=_comm_device(group))
    dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=group)
    return bool(flag.item())


class ShardSubsample(Messenger):
    """Gives each rank its contiguous share of a plate's subsample.

    At the subsample site of a plate ``pyro.plate(name, N, subsample_size=b)`` still
    to be drawn, it draws the *global* subsample of ``R b`` indices exactly as one
    process with ``subsample_size=R b`` does (the same ``torch.randperm``, from the
    generator shared by the ranks) and keeps rank ``r``'s indices ``[r b, (r+1) b)``.
    Full plates are left alone (every rank has all of it; ``ValueError`` when named
    in ``plates``). Sites already given (by ``replay``, ``condition``
    or an explicit ``subsample=``) are left alone, so the model replays the guide's
    share.

    :param rank, world: this rank and the number of ranks.
    :param plates: the plate names to shard; ``None``: every subsampled plate.
    """

    def __init__(self, rank: int, world: int, plates: frozenset[str] | None):
        super().__init__()
        self.rank, self.world, self.plates = rank, world, plates

    def _pyro_sample(self, msg: dict) -> None:
        fn = msg["fn"]
        if not isinstance(fn, _Subsample) or msg["value"] is not None:
            return
        if msg["is_observed"] or msg["done"]:
            return
        name, size, b = msg["name"], fn.size, fn.subsample_size
        if self.plates is not None and name not in self.plates:
            return
        if b is None or b >= size:
            if self.plates is None:
                return  # a full plate: every rank has all of it
            raise ValueError(
                f"shard={sorted(self.plates)!r}: plate {name!r} is not subsampled "
                f"(subsample_size {b} of {size}); to split all {size} points over "
                f"{self.world} ranks write subsample_size={size} // {self.world}"
            )
        total = check_global_batch(size, b, self.world, f"plate {name!r}")
        draw = _Subsample(size, total, device=fn.device).sample()
        msg["value"] = draw[self.rank * b : (self.rank + 1) * b]


class DataParallelSVI(SVI):
    r"""Pyro's :class:`~pyro.infer.SVI` over the ranks of a :mod:`torch.distributed`
    process group: each rank computes the loss and gradients on its share of the
    minibatch; the gradients of all the parameters the step touches (the guide's, and
    the model's ``pyro.param`` s) are averaged over the group before the optimizer
    step, so the parameters stay identical on every rank. See
    :mod:`ppl_hw.pyro.distributed` for how minibatches are shared (the data plate's
    ``subsample_size`` is the *per-rank* minibatch) and the launch recipes.

    Every rank must be seeded identically (``pyro.set_rng_seed(seed)``), so that the
    guide draws the same sample on every rank and the global minibatch is drawn once;
    the first step checks it (``RuntimeError`` otherwise). Parameters created during a
    step are broadcast from the group's rank 0 (if any rank's values differed, the
    step's gradients are computed again at the broadcast values). ``step`` and
    ``evaluate_loss`` return the loss averaged over the ranks: the single-process
    run's loss on the global minibatch.

    :param model, guide, optim, loss: as for :class:`pyro.infer.SVI`.
    :param process_group: the ``torch.distributed`` process group (default: the world
        group; ``init_process_group`` must have been called).
    :param shard: which subsampled plates to share out: ``None`` (default) all of
        them; else a plate name or names (each must be subsampled; the others are
        then left to every rank whole).
    """

    def __init__(
        self,
        model: Callable,
        guide: Callable,
        optim: Any,
        loss: Any,
        *,
        process_group: Any = None,
        shard: str | Sequence[str] | None = None,
    ):
        plates = check_plate_names(shard)
        self.process_group = resolve_group(process_group)
        self.rank, self.world_size = _rank_world(self.process_group)
        super().__init__(model, guide, optim, loss)
        self._shard = ShardSubsample(self.rank, self.world_size, plates)
        self._synced: weakref.WeakValueDictionary = weakref.WeakValueDictionary()
        self._checked = False

    def _check_generator(self) -> None:
        if not self._checked:
            check_shared_generator(self.process_group, "DataParallelSVI")
            self._checked = True

    def _params(self, capture: Any) -> list[tuple[str, torch.Tensor]]:
        """``(name, unconstrained tensor)`` of the params a trace touched, by name."""
        out = {}
        for name, site in capture.trace.nodes.items():
            if site["type"] == "param":
                out[name] = site["value"].unconstrained()
        return sorted(out.items())

    def _sync_new(self, params: list[tuple[str, torch.Tensor]]) -> bool:
        """Broadcast the params not seen before from rank 0; ``True`` if any rank's
        values changed."""
        new = [(n, p) for n, p in params if self._synced.get(n) is not p]
        # every rank holds the same names: the program is the same
        if not new:
            return False
        changed = broadcast_([p for _, p in new], self.process_group)
        for n, p in new:
            self._synced[n] = p
        return changed

    def _loss_and_grads(self, *args: Any, **kwargs: Any) -> tuple[Any, list]:
        with self._shard, _trace(param_only=True) as capture:
            loss = self.loss_and_grads(self.model, self.guide, *args, **kwargs)
        return loss, self._params(capture)

    def _reduce(self, loss: Any, tensors: list[torch.Tensor]) -> Any:
        """Average the loss and, for ``tensors``, the gradients over the group (a
        gradient ``None`` on every rank stays ``None``; on some ranks only, it counts
        as zero there). Returns the mean loss."""
        values = loss if isinstance(loss, tuple) else (loss,)
        meta = torch.tensor(
            [float(torch_item(v)) for v in values]
            + [float(p.grad is not None) for p in tensors],
            dtype=torch.float64,
            device=_comm_device(self.process_group),
        )
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in tensors]
        meta, *grads = all_reduce_mean([meta, *grads], self.process_group)
        k = len(values)
        for p, g, seen in zip(tensors, grads, meta[k:].tolist(), strict=True):
            p.grad = g.clone() if seen > 0 else None
        out = [float(v) for v in meta[:k].tolist()]
        return type(loss)(out) if isinstance(loss, tuple) else out[0]

    def step(self, *args: Any, **kwargs: Any) -> Any:
        """One optimizer step on the global minibatch; returns the loss averaged over
        the ranks."""
        self._check_generator()
        loss, params = self._loss_and_grads(*args, **kwargs)
        if self._sync_new(params):
            pyro.infer.util.zero_grads({p for _, p in params})
            loss, params = self._loss_and_grads(*args, **kwargs)
        tensors = [p for _, p in params]
        loss = self._reduce(loss, tensors)
        self.optim(tensors)
        pyro.infer.util.zero_grads(set(tensors))
        return loss

    def evaluate_loss(self, *args: Any, **kwargs: Any) -> Any:
        """The loss on the global minibatch, averaged over the ranks."""
        self._check_generator()

        def run() -> tuple[Any, list]:
            with torch.no_grad(), self._shard, _trace(param_only=True) as capture:
                loss = self.loss(self.model, self.guide, *args, **kwargs)
            return loss, self._params(capture)

        loss, params = run()
        if self._sync_new(params):
            loss, params = run()
        return self._reduce(loss, [])
