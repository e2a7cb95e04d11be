"""The deployment sweep's backend-neutral parts: argument checks, the chips' and
reads' seeds, scoring, the result table (:class:`DeploymentSweep`: rows, summary,
pandas, text and figure) and the shared docstring.

Each adapter's ``deployment_sweep`` (:mod:`ppl_hw.numpyro.deploy`,
:mod:`ppl_hw.pyro.deploy`) validates its arguments here, draws the posterior samples
and runs the model under ``crossbar`` on its host; :func:`run_sweep` walks the cells,
scores them and builds the table.

**Seeds.** Chip ``i`` of a sweep is programmed with ``chip_seed = seed + i`` (the
handler's ``seed``). Every other draw comes from ``rng_seed`` through
:class:`numpy.random.SeedSequence`, each for a purpose: the posterior samples from
:func:`sample_seed` ``(rng_seed)``, the reads of a cell from :func:`read_seed`
``(rng_seed, chip_seed, t)`` (the off-chip row's from ``(rng_seed, None, None)``).
A cell's numbers are a function of the posterior, ``rng_seed``, its chip seed and its
read time alone: not of the other chips or times, nor of the order the cells are
evaluated in, so one cell is recomputed by a sweep of that one cell
(``times=[t], chips=1, seed=chip_seed``, the same ``rng_seed``).

**In parallel.** The cells, in their canonical order (:func:`sweep_cells`: the
off-chip row, then each time's chips), are therefore split freely:
``shard=(index, count)`` evaluates one contiguous block of them
(:func:`shard_slice`) and :meth:`DeploymentSweep.concat` merges complete sets of
shards back into the canonical order; ``executor=`` fans the cells out to any
:class:`concurrent.futures.Executor` (:func:`fan_out`), the adapter's job (the model,
the inputs and the posterior samples drawn once in the calling process) pickled
once. The table is the same whatever the workers and shards (but for ``seconds``).
"""

from __future__ import annotations

import concurrent.futures
import math
import pickle
import struct
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np

from ..core import checks, metrics
from ..core.device import Device

__all__ = [
    "DEFAULT_SITES",
    "DEPLOYMENT_SWEEP_DOC",
    "METRICS",
    "NUM_BINS",
    "SWEEP_OPTIONS",
    "TASKS",
    "DeploymentSweep",
    "SweepJob",
    "SweepSpec",
    "check_data",
    "check_executor",
    "check_picklable",
    "check_shard",
    "check_site_shape",
    "check_sweep",
    "chip_model",
    "chip_models",
    "chunks",
    "fan_out",
    "format_seconds",
    "missing_site_error",
    "read_seed",
    "run_sweep",
    "sample_seed",
    "shard_slice",
    "sweep_cells",
]

TASKS = ("classification", "regression")
METRICS = {"classification": ("accuracy", "nll", "ece"), "regression": ("rmse", "nll")}
"""The metric columns of each task, in table order."""
DEFAULT_SITES = {"classification": "logits", "regression": "y"}
"""The site evaluated when ``site=None``."""
NUM_BINS = 15
"""Confidence bins of the ECE (:func:`ppl_hw.metrics.expected_calibration_error`)."""

_MAX_SEED = 2**32
"""Chips are keyed by 32-bit seeds (the handler's NumPy draws)."""
_TAG_SAMPLES, _TAG_READS = 0x53414D50, 0x52454144  # "SAMP", "READ"
_NAMES = {"accuracy": "accuracy", "nll": "NLL", "ece": "ECE", "rmse": "RMSE"}


@dataclass(frozen=True)
class SweepSpec:
    """The validated arguments of a deployment sweep (``sites`` is checked by the
    crossbar handlers the adapter builds before any work)."""

    device: Device
    times: tuple[float, ...]
    chips: int
    num_samples: int
    seed: int
    rng_seed: int
    site: str
    task: str
    label: str
    include_clean: bool
    batch_size: int | None
    keep_predictions: bool

    @property
    def chip_seeds(self) -> tuple[int, ...]:
        """The chips' seeds: ``seed + i`` for chip ``i``."""
        return tuple(self.seed + i for i in range(self.chips))

    def settings(self) -> dict:
        """The sweep's arguments as a dict (the device by name), with the posterior
        samples' seed."""
        out = asdict(self)
        out["device"] = self.device.name
        out["times"] = list(self.times)
        out["sample_seed"] = sample_seed(self.rng_seed)
        return out


SWEEP_OPTIONS = (
    "device",
    "times",
    "chips",
    "num_samples",
    "seed",
    "rng_seed",
    "site",
    "task",
    "label",
    "include_clean",
    "batch_size",
    "keep_predictions",
)
"""The arguments of ``deployment_sweep`` that :class:`SweepSpec` holds."""


def check_sweep(arguments: Mapping[str, Any], default_label: str) -> SweepSpec:
    """Validate the arguments of ``deployment_sweep`` (a TypeError or ValueError
    naming the argument and the value) before any work. ``arguments`` holds them by
    name (the adapter's ``locals()``; other names are ignored); ``label=None``
    becomes ``default_label``."""
    return _check_sweep(
        **{k: arguments[k] for k in SWEEP_OPTIONS}, default_label=default_label
    )


def _check_sweep(
    *,
    device: Any,
    times: Any,
    chips: Any,
    num_samples: Any,
    seed: Any,
    rng_seed: Any,
    site: Any,
    task: Any,
    label: Any,
    include_clean: Any,
    batch_size: Any,
    keep_predictions: Any,
    default_label: str,
) -> SweepSpec:
    if not isinstance(device, Device):
        raise TypeError(
            "device must be a ppl_hw.config.Device (e.g. ppl_hw.devices.PCM()), "
            f"got {type(device).__name__}"
        )
    if isinstance(times, str | bytes | Mapping) or not isinstance(times, Iterable):
        raise TypeError(
            f"times must be a sequence of seconds since programming, got {times!r}"
        )
    times = list(times)
    if np.ndim(np.asarray(times, dtype=object)) != 1 or len(times) == 0:
        raise ValueError(
            f"times must be a non-empty 1-D sequence of seconds, got {times!r}"
        )
    ts = tuple(
        checks.check_number(f"times[{i}]", t, low=0.0) for i, t in enumerate(times)
    )
    if len(set(ts)) != len(ts):
        raise ValueError(f"times must not repeat a time, got {list(ts)}")
    chips = checks.check_int("chips", chips, low=1)
    num_samples = checks.check_int("num_samples", num_samples, low=1)
    seed = checks.check_int("seed", seed, low=0)
    if seed + chips > _MAX_SEED:
        raise ValueError(
            f"seed + chips must be <= 2**32 (32-bit chip seeds), got seed={seed}, "
            f"chips={chips}"
        )
    rng_seed = checks.check_int("rng_seed", rng_seed, low=0)
    task = checks.check_choice("task", task, TASKS)
    if site is None:
        site = DEFAULT_SITES[task]
    elif not isinstance(site, str):
        raise TypeError(f"site must be a site name (str) or None, got {site!r}")
    if label is None:
        label = default_label
    elif not isinstance(label, str):
        raise TypeError(f"label must be a str or None, got {label!r}")
    for name, flag in (
        ("include_clean", include_clean),
        ("keep_predictions", keep_predictions),
    ):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {flag!r}")
    batch_size = checks.check_int("batch_size", batch_size, low=1, allow_none=True)
    options = (chips, num_samples, seed, rng_seed, site, task, label, include_clean)
    return SweepSpec(device, ts, *options, batch_size, keep_predictions)


def chip_models(
    crossbar: Callable, model: Any, spec: SweepSpec, sites: Any
) -> dict[tuple[float, int], Any]:
    """The model on each chip and read time, ``(t, chip_seed) -> crossbar(model,
    ...)`` with the host's ``crossbar`` (built before any work: the handler checks
    its arguments)."""
    return {
        (t, cs): chip_model(crossbar, model, spec, sites, t, cs)
        for t in spec.times
        for cs in spec.chip_seeds
    }


def chip_model(
    crossbar: Callable, model: Any, spec: SweepSpec, sites: Any, t: float, seed: int
) -> Any:
    """The model on the chip ``seed`` read at ``t``: ``crossbar(model, ...)`` with
    the host's ``crossbar``."""
    return crossbar(model, device=spec.device, sites=sites, t_inference=t, seed=seed)


def check_data(x: Any, y: Any, task: str) -> np.ndarray:
    """The targets as a NumPy array, after checking them against the inputs: one
    target (row) per input; class labels are integers, regression targets finite."""
    n_x = np.shape(x)[0] if np.ndim(x) else None
    if n_x is None or n_x == 0:
        raise ValueError(
            f"x must be an array of inputs with a leading data axis, got shape "
            f"{tuple(np.shape(x))}"
        )
    if hasattr(y, "detach"):  # torch, without importing it
        y = y.detach().cpu().numpy()
    labels = np.asarray(y)
    if labels.dtype == object or not (
        np.issubdtype(labels.dtype, np.number) or labels.dtype == np.bool_
    ):
        raise TypeError(f"y must be a numeric array, got {type(y).__name__}")
    if labels.ndim == 0 or labels.shape[0] != n_x:
        raise ValueError(
            f"y must hold one target per input ({n_x}), got shape {labels.shape}"
        )
    if task == "classification":
        if labels.ndim != 1:
            raise ValueError(
                f"y must be class labels of shape ({n_x},), got shape {labels.shape}"
            )
        if not np.issubdtype(labels.dtype, np.integer):
            if not np.all(np.mod(labels, 1) == 0):
                raise ValueError("y must be integer class labels")
            labels = labels.astype(np.int64)
        if labels.min() < 0:
            raise ValueError(f"y must be class labels >= 0, got {labels.min()}")
    elif not np.all(np.isfinite(labels)):
        raise ValueError("y must be finite regression targets")
    return labels


def check_site_shape(
    site: str, shape: Sequence[int], y: np.ndarray, n: int, task: str
) -> None:
    """Before any work: one posterior sample's value of ``site`` on the first ``n``
    inputs (shape ``shape``, from a trace) fits the task and the targets ``y``."""
    shape = tuple(int(d) for d in shape)
    if task == "classification":
        if len(shape) != 2 or shape[0] != n:
            raise ValueError(
                f"site {site!r} must hold logits of shape ({n}, C), got shape {shape}"
            )
        if y.max() >= shape[1]:
            raise ValueError(
                f"y must be class labels < {shape[1]} (the classes of site "
                f"{site!r}), got {y.max()}"
            )
    elif shape not in ((n, *y.shape[1:]), (n, *y.shape[1:], 1)):
        raise ValueError(
            f"site {site!r} must hold one value of the shape of a target "
            f"{y.shape[1:]} per input, shape ({n}, ...), got shape {shape}"
        )


def missing_site_error(site: str, names: Iterable[str]) -> ValueError:
    """The error for a ``site`` the model does not have."""
    return ValueError(
        f"site {site!r} is not a site of the model; its sites are {sorted(names)}"
    )


def chunks(n: int, batch_size: int | None) -> list[slice]:
    """The slices of ``n`` inputs evaluated at once (one slice without
    ``batch_size``)."""
    step = n if batch_size is None else batch_size
    return [slice(i, min(i + step, n)) for i in range(0, n, step)]


def _derive(*words: int) -> int:
    """A 32-bit seed from non-negative integers, via NumPy's ``SeedSequence`` (the
    same on every platform and NumPy version)."""
    return int(np.random.SeedSequence(list(words)).generate_state(1)[0])


def sample_seed(rng_seed: int) -> int:
    """The seed of a sweep's posterior samples."""
    return _derive(_TAG_SAMPLES, rng_seed)


def read_seed(rng_seed: int, chip_seed: int | None, t: float | None) -> int:
    """The seed of a cell's reads (read noise, converter noise and any other draw
    of the model run): from ``rng_seed``, the chip's seed and the read time's
    float64 bits; ``(None, None)`` for the off-chip row."""
    if chip_seed is None or t is None:
        return _derive(_TAG_READS, rng_seed, 0)
    (bits,) = struct.unpack("<Q", struct.pack("<d", float(t)))
    return _derive(_TAG_READS, rng_seed, 1, chip_seed, bits >> 32, bits & 0xFFFFFFFF)


def _softmax_mean(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    p = np.exp(z)
    p /= p.sum(axis=-1, keepdims=True)
    return p.mean(axis=0)


def _reduce(
    chunk: np.ndarray, task: str, site: str, n: int, num_samples: int
) -> np.ndarray:
    """One chunk of site samples ``(S, n, ...)`` -> the predictive of its inputs:
    class probabilities ``(n, C)``, or the stacked mean and variance ``(2, n, ...)``."""
    s = np.asarray(chunk, dtype=np.float64)
    if s.ndim < 2 or s.shape[:2] != (num_samples, n):
        raise ValueError(
            f"site {site!r} must hold one value per posterior sample and input, "
            f"shape ({num_samples}, {n}, ...), got shape {s.shape}"
        )
    if task == "classification":
        if s.ndim != 3:
            raise ValueError(
                f"site {site!r} must hold logits of shape ({num_samples}, {n}, C), "
                f"got shape {s.shape}"
            )
        return _softmax_mean(s)
    return np.stack([s.mean(axis=0), s.var(axis=0)])


def _score(prediction: np.ndarray, y: np.ndarray, task: str, site: str) -> dict:
    if task == "classification":
        return {
            "accuracy": metrics.accuracy(prediction, y),
            "nll": metrics.nll(prediction, y),
            "ece": metrics.expected_calibration_error(prediction, y, NUM_BINS),
        }
    mean, var = prediction
    if mean.shape != y.shape and mean.shape == (*y.shape, 1):
        mean, var = mean[..., 0], var[..., 0]
    if mean.shape != y.shape:
        raise ValueError(
            f"site {site!r} must hold values of the shape of y {y.shape} per "
            f"posterior sample, got {mean.shape}"
        )
    return {"rmse": metrics.rmse(mean, y), "nll": metrics.gaussian_nll(mean, var, y)}


Cell = tuple[float | None, int | None, int | None]
"""A cell of a sweep: ``(t, chip, chip_seed)``; ``(None, None, None)`` off-chip."""


class SweepJob(Protocol):
    """What an adapter hands :func:`run_sweep`: the validated arguments, the targets
    and the evaluation of a cell. With ``executor=`` it is pickled (once) and run in
    the workers, inside :meth:`session`."""

    spec: SweepSpec
    y: np.ndarray

    def evaluate(
        self, t: float | None, chip_seed: int | None, read_seed: int
    ) -> Iterable[Any]:
        """Run the model (on the chip ``chip_seed`` read at ``t``; off-chip for
        ``None``) over the chunks of :func:`chunks`; yield each chunk's site samples
        ``(S, n, ...)`` as NumPy arrays."""
        ...

    def session(self) -> Any:
        """A context manager around a worker's cells: the host's global state the
        cells need (and its restoration)."""
        ...


def sweep_cells(spec: SweepSpec) -> list[Cell]:
    """The cells of a sweep in their canonical order (the table's): the off-chip row
    (``include_clean``), then each time's chips."""
    cells: list[Cell] = [(None, None, None)] if spec.include_clean else []
    for t in spec.times:
        cells.extend((t, i, cs) for i, cs in enumerate(spec.chip_seeds))
    return cells


def check_shard(shard: Any, n_cells: int) -> tuple[int, int] | None:
    """``None`` or ``(index, count)``: ``0 <= index < count <= n_cells`` (the
    sweep's cells, so that no shard is empty)."""
    if shard is None:
        return None
    if (
        not isinstance(shard, tuple | list)
        or len(shard) != 2
        or not all(
            isinstance(v, int | np.integer) and not isinstance(v, bool | np.bool_)
            for v in shard
        )
    ):
        raise TypeError(
            f"shard must be None or a pair of ints (index, count), got {shard!r}"
        )
    index, count = (int(v) for v in shard)
    if count < 1 or not 0 <= index < count:
        raise ValueError(
            f"shard must be (index, count) with 0 <= index < count, got {shard!r}"
        )
    if count > n_cells:
        raise ValueError(
            f"shard count must be at most the sweep's {n_cells} cells (no shard "
            f"empty), got shard={shard!r}"
        )
    return index, count


def shard_slice(n_cells: int, index: int, count: int) -> slice:
    """The cells of shard ``index`` of ``count``: a contiguous block of the
    canonical order, ``n_cells * index // count`` up to ``n_cells * (index + 1) //
    count`` (sizes differ by at most one)."""
    return slice(n_cells * index // count, n_cells * (index + 1) // count)


def check_executor(executor: Any) -> concurrent.futures.Executor | None:
    """``None`` or a :class:`concurrent.futures.Executor` of processes (any object
    with ``submit(fn, *args)`` returning a future). Refused: a
    thread pool (the cells run under the host's handlers, kept on a process-global
    stack, and Pyro's global random state) and a process pool that forks (measured:
    a forked child of a process that has run JAX or torch hangs)."""
    if executor is None:
        return None
    if not callable(getattr(executor, "submit", None)):
        raise TypeError(
            "executor must be None or a concurrent.futures.Executor (an object with "
            "a submit method: ProcessPoolExecutor(mp_context=multiprocessing."
            "get_context('spawn')), dask's Client.get_executor(), Ray's), got "
            f"{executor!r}"
        )
    if isinstance(executor, concurrent.futures.ThreadPoolExecutor):
        raise ValueError(
            "executor must run the cells in processes, got a ThreadPoolExecutor: "
            "the cells run under the host's effect handlers, kept on a "
            "process-global stack (and Pyro's global random state), which threads "
            "would interleave"
        )
    context = getattr(executor, "_mp_context", None)
    if (
        isinstance(executor, concurrent.futures.ProcessPoolExecutor)
        and context is not None
        and context.get_start_method() == "fork"
    ):
        raise ValueError(
            "executor is a ProcessPoolExecutor that forks (start method 'fork', "
            "Linux's default before Python 3.14): a forked child of a process that "
            "has run JAX or torch hangs (their thread pools do not survive fork); "
            "create it with mp_context=multiprocessing.get_context('spawn') (or "
            "'forkserver')"
        )
    return executor


def _dumps(obj: Any) -> bytes:
    """``obj`` pickled with cloudpickle when installed (functions of ``__main__``
    and closures by value), else with :mod:`pickle`; a TypeError saying so if it
    cannot be."""
    try:
        import cloudpickle

        dumps, how = cloudpickle.dumps, "cloudpickle"
    except ImportError:  # pragma: no cover - cloudpickle is usually installed
        dumps, how = pickle.dumps, "pickle (cloudpickle is not installed)"
    try:
        return dumps(obj)
    except Exception as err:
        raise TypeError(
            "executor= sends the model (with sites, the inputs and the posterior "
            f"samples) to the workers, so it must be picklable; {how} failed: "
            f"{type(err).__name__}: {err}. Define the model and what it refers to "
            "at module level (with functools.partial for other arguments), keep "
            "locks, files and other unpicklable objects out of it, or run the "
            "sweep in shards (shard=) instead"
        ) from err


def check_picklable(**parts: Any) -> None:
    """Before any work: what :func:`fan_out` will send can be pickled (see
    :func:`_dumps`)."""
    _dumps(parts)


_JOBS: dict[str, Any] = {}
"""A worker's last job, by its token: unpickled once per worker, not per cell."""


def _run_cells(payload: bytes, token: str, cells: list[Cell]) -> list[tuple]:
    """In a worker: the job's rows and predictions of ``cells``."""
    job = _JOBS.get(token)
    if job is None:
        _JOBS.clear()
        try:
            job = pickle.loads(payload)
        except Exception as err:
            raise TypeError(
                "a worker could not unpickle the sweep's model "
                f"({type(err).__name__}: {err}): the workers need the same "
                "packages, and the modules the model is defined in importable (or "
                "the model pickled by value: cloudpickle does so for __main__)"
            ) from err
        _JOBS[token] = job
    with job.session():
        return [_score_cell(job, cell) for cell in cells]


def fan_out(
    executor: concurrent.futures.Executor, job: SweepJob, cells: Sequence[Cell]
) -> list[tuple[dict, np.ndarray | None]]:
    """The rows and predictions of ``cells`` (in their order), one task per cell on
    ``executor``; ``job`` is pickled once, and unpickled once per worker."""
    payload, token = _dumps(job), uuid.uuid4().hex
    futures = [executor.submit(_run_cells, payload, token, [c]) for c in cells]
    try:
        return [out for f in futures for out in f.result()]
    finally:  # after an error: the cells not started yet are dropped
        for f in futures:
            if callable(getattr(f, "cancel", None)):
                f.cancel()


def _score_cell(job: SweepJob, cell: Cell) -> tuple[dict, np.ndarray | None]:
    """One cell's row and predictive."""
    spec, y = job.spec, job.y
    t, chip, chip_seed = cell
    sizes = [sl.stop - sl.start for sl in chunks(y.shape[0], spec.batch_size)]
    start = time.perf_counter()
    rs = read_seed(spec.rng_seed, chip_seed, t)
    parts = [
        _reduce(c, spec.task, spec.site, size, spec.num_samples)
        for c, size in zip(job.evaluate(t, chip_seed, rs), sizes, strict=True)
    ]
    axis = 0 if spec.task == "classification" else 1
    prediction = np.concatenate(parts, axis=axis)
    scores = _score(prediction, y, spec.task, spec.site)
    row = {
        "label": spec.label,
        "device": None if t is None else spec.device.name,
        "t": t,
        "chip": chip,
        "chip_seed": chip_seed,
        "read_seed": rs,
        **scores,
        "seconds": time.perf_counter() - start,
    }
    return row, prediction if spec.keep_predictions else None


def run_sweep(
    job: SweepJob,
    *,
    executor: concurrent.futures.Executor | None = None,
    shard: tuple[int, int] | None = None,
) -> DeploymentSweep:
    """Evaluate and score the sweep's cells (:func:`sweep_cells`; with ``shard``,
    its block of them): here, one after the other, or on ``executor``
    (:func:`fan_out`). ``executor`` and ``shard`` are checked by
    :func:`check_executor` and :func:`check_shard`."""
    cells = sweep_cells(job.spec)
    if shard is not None:
        cells = cells[shard_slice(len(cells), *shard)]
    if executor is None:
        results = [_score_cell(job, c) for c in cells]
    else:
        results = fan_out(executor, job, cells)
    settings = job.spec.settings()
    if shard is not None:
        settings["shard"] = list(shard)
    return DeploymentSweep([r for r, _ in results], [p for _, p in results], [settings])


def _merge_shards(sweeps: list[DeploymentSweep]) -> list[DeploymentSweep]:
    """Each complete set of shards of one sweep (settings equal but for ``shard``,
    indices ``0 .. count - 1`` once each) as one sweep in the canonical order, in
    the place of its first shard; everything else as it is."""
    groups: list[tuple[dict, list[int]]] = []  # (settings without shard, positions)
    for i, s in enumerate(sweeps):
        if len(s.settings) == 1 and s.settings[0].get("shard") is not None:
            base = {k: v for k, v in s.settings[0].items() if k != "shard"}
            for b, members in groups:
                if b == base:
                    members.append(i)
                    break
            else:
                groups.append((base, [i]))
    out: list[DeploymentSweep | None] = list(sweeps)
    for base, members in groups:
        shards = [tuple(sweeps[i].settings[0]["shard"]) for i in members]
        count = shards[0][1]
        if sorted(shards) != [(k, count) for k in range(count)]:
            continue  # not a complete set: left as they are
        order = [m for _, m in sorted(zip(shards, members, strict=True))]
        merged = DeploymentSweep(
            [r for m in order for r in sweeps[m].rows],
            [p for m in order for p in sweeps[m].predictions],
            [base],
        )
        out[members[0]] = merged
        for m in members[1:]:
            out[m] = None
    return [s for s in out if s is not None]


_UNITS = (
    ("year", 31_536_000.0),
    ("month", 2_592_000.0),
    ("week", 604_800.0),
    ("day", 86_400.0),
    ("h", 3_600.0),
    ("min", 60.0),
    ("s", 1.0),
)


def format_seconds(t: float | None) -> str:
    """A read time for people: ``"1 s"``, ``"1 h"``, ``"2 days"``, ``"1 year"``,
    ``"1.5 s"`` (the largest unit it reaches; 30 days make a month, 365 a year);
    ``"off-chip"`` for ``None``."""
    if t is None:
        return "off-chip"
    for unit, size in _UNITS:
        if t >= size or unit == "s":
            value = t / size
            text = f"{value:.3g}"
            plural = unit in ("year", "month", "week", "day") and text != "1"
            return f"{text} {unit}{'s' if plural else ''}"
    raise AssertionError("unreachable")


def _mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (``ddof=1``; ``nan`` for one value)."""
    a = np.asarray(values, dtype=np.float64)
    sd = float(np.std(a, ddof=1)) if a.size > 1 else math.nan
    return float(np.mean(a)), sd


class DeploymentSweep:
    r"""The result of ``deployment_sweep``: one row per off-chip posterior and per
    (read time, chip).

    ``rows`` is a list of dicts with the keys ``label`` (the method), ``device``
    (the device's name; ``None`` off-chip), ``t`` (seconds since programming; ``None``
    off-chip), ``chip`` (the chip's index in its sweep; ``None`` off-chip),
    ``chip_seed`` (the seed the crossbar handler programmed it with), ``read_seed``
    (the seed of the cell's reads), the metrics (classification: ``accuracy``,
    ``nll``, ``ece``; regression: ``rmse``, ``nll``) and ``seconds`` (the time the
    cell took). ``predictions[i]`` is row ``i``'s predictive (``keep_predictions``;
    else ``None``): class probabilities ``(N, C)``, or for regression the mean and
    variance stacked, ``(2, *y.shape)``. ``settings`` holds each concatenated sweep's
    arguments (with ``sample_seed``, the posterior samples' seed).

    Combine methods with ``DeploymentSweep.concat([a, b])`` or ``a + b``.
    """

    def __init__(
        self,
        rows: Sequence[dict],
        predictions: Sequence[np.ndarray | None] | None = None,
        settings: Sequence[dict] = (),
    ):
        self.rows = [dict(r) for r in rows]
        preds = [None] * len(self.rows) if predictions is None else list(predictions)
        if len(preds) != len(self.rows):
            raise ValueError(
                f"predictions must have one entry per row ({len(self.rows)}), got "
                f"{len(preds)}"
            )
        self.predictions = preds
        self.settings = [dict(s) for s in settings]
        names = {tuple(k for k in r if k in _NAMES) for r in self.rows}
        if len(names) > 1:
            raise ValueError(
                "a DeploymentSweep holds one task's metrics, got the columns "
                f"{sorted(names)}"
            )

    @property
    def metrics(self) -> tuple[str, ...]:
        """The metric columns, in table order."""
        return tuple(k for k in self.rows[0] if k in _NAMES) if self.rows else ()

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        labels = list(dict.fromkeys(r["label"] for r in self.rows))
        return f"DeploymentSweep({len(self.rows)} rows, labels={labels})"

    @classmethod
    def concat(cls, sweeps: Iterable[DeploymentSweep]) -> DeploymentSweep:
        """One table of several sweeps (e.g. one per method), rows in order; their
        metrics must be the same (one task). The shards of a sweep
        (``deployment_sweep(..., shard=(index, count))``, settings equal but for
        ``shard``) are merged, wherever all ``count`` of them are given and in
        whatever order, into the sweep's canonical order at the place of the first:
        the table, predictions and settings of the sweep run in one piece (but for
        ``seconds``)."""
        sweeps = list(sweeps)
        for s in sweeps:
            if not isinstance(s, DeploymentSweep):
                raise TypeError(
                    f"concat takes DeploymentSweep objects, got {type(s).__name__}"
                )
        sweeps = _merge_shards(sweeps)
        return cls(
            [r for s in sweeps for r in s.rows],
            [p for s in sweeps for p in s.predictions],
            [st for s in sweeps for st in s.settings],
        )

    def __add__(self, other: Any) -> DeploymentSweep:
        if not isinstance(other, DeploymentSweep):
            return NotImplemented
        return DeploymentSweep.concat([self, other])

    def summary(self) -> list[dict]:
        """Per (label, device, t) in the order of the rows: ``n`` (the chips; 1 for
        the off-chip row) and each metric's mean and standard deviation over the
        chips (``"<metric>_mean"``, ``"<metric>_sd"``; ``numpy.std`` with ``ddof=1``,
        ``nan`` for one chip)."""
        groups: dict[tuple, list[dict]] = {}
        for r in self.rows:
            groups.setdefault((r["label"], r["device"], r["t"]), []).append(r)
        out = []
        for (label, device, t), rows in groups.items():
            entry: dict[str, Any] = {
                "label": label,
                "device": device,
                "t": t,
                "n": len(rows),
            }
            for m in self.metrics:
                entry[f"{m}_mean"], entry[f"{m}_sd"] = _mean_sd([r[m] for r in rows])
            out.append(entry)
        return out

    def to_pandas(self, summary: bool = False) -> Any:
        """The rows (or, with ``summary=True``, :meth:`summary`) as a
        :class:`pandas.DataFrame`; needs pandas."""
        try:
            import pandas as pd
        except ImportError as err:
            raise ImportError(
                "DeploymentSweep.to_pandas needs pandas (pip install pandas); "
                "the rows are in .rows and the summary in .summary() without it"
            ) from err
        frame = pd.DataFrame(self.summary() if summary else self.rows)
        for col in ("chip", "chip_seed", "read_seed", "n"):
            if col in frame:  # integers, with <NA> for the off-chip rows
                frame[col] = frame[col].astype("Int64")
        return frame

    def format(self) -> str:
        """The summary as a Markdown table: mean ± sd over the chips (accuracy in
        %)."""
        heads = " | ".join(_NAMES[m] for m in self.metrics)
        lines = [
            f"| method | device | t | chips | {heads} |",
            "|---|---|---|---:|" + "---:|" * len(self.metrics),
        ]
        for g in self.summary():
            cells = []
            for m in self.metrics:
                mean, sd = g[f"{m}_mean"], g[f"{m}_sd"]
                scale, fmt, unit = (
                    (100, ".1f", " %") if m == "accuracy" else (1, ".3f", "")
                )
                text = f"{scale * mean:{fmt}}"
                if not math.isnan(sd):
                    text += f" ± {scale * sd:{fmt}}"
                cells.append(text + unit)
            lines.append(
                f"| {g['label']} | {g['device'] or '—'} | {format_seconds(g['t'])} "
                f"| {'—' if g['t'] is None else g['n']} | " + " | ".join(cells) + " |"
            )
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()

    def plot(self, metric: str = "accuracy", ax: Any = None) -> Any:
        """``metric`` against the read time (log axis; symmetric-log when a time is
        0), mean ± sd over the chips as error bars, one line per (label, device); each
        label's off-chip value as a dashed horizontal line of its colour. Draws on
        ``ax`` (default: the axes of a new :class:`matplotlib.figure.Figure`, no
        pyplot) and returns it."""
        metric = checks.check_choice("metric", metric, self.metrics)
        if ax is None:
            from matplotlib.figure import Figure

            ax = Figure(figsize=(6.0, 4.0), layout="constrained").subplots()
        summary = self.summary()
        labels = list(dict.fromkeys(g["label"] for g in summary))
        colors = {label: f"C{i % 10}" for i, label in enumerate(labels)}
        styles = ["-", "--", ":", "-."]
        devices = list(dict.fromkeys(g["device"] for g in summary if g["device"]))
        times = sorted({g["t"] for g in summary if g["t"] is not None})
        for label in labels:
            for device in devices:
                on = sorted(
                    (
                        g
                        for g in summary
                        if g["label"] == label
                        and g["device"] == device
                        and g["t"] is not None
                    ),
                    key=lambda g: g["t"],
                )
                if not on:
                    continue
                sd = [
                    0.0 if math.isnan(g[f"{metric}_sd"]) else g[f"{metric}_sd"]
                    for g in on
                ]
                ax.errorbar(
                    [g["t"] for g in on],
                    [g[f"{metric}_mean"] for g in on],
                    yerr=sd,
                    color=colors[label],
                    linestyle=styles[devices.index(device) % len(styles)],
                    marker="o",
                    capsize=3,
                    label=f"{label} on {device}",
                )
            for g in summary:
                if g["label"] == label and g["t"] is None:
                    ax.axhline(
                        g[f"{metric}_mean"],
                        color=colors[label],
                        linestyle="--",
                        linewidth=1,
                        label=f"{label} off-chip",
                    )
                    break
        if times and times[0] == 0:
            # t = 0 on a log axis: linear from 0 to the first positive time
            positive = [t for t in times if t > 0]
            ax.set_xscale("symlog", linthresh=positive[0] if positive else 1.0)
            ax.set_xlim(0, 3 * times[-1] if positive else 1.0)
        elif times:
            ax.set_xscale("log")
        ax.set_xlabel("time since programming (s)")
        ax.set_ylabel(_NAMES[metric])
        ax.grid(True, which="major", alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
        return ax


DEPLOYMENT_SWEEP_DOC = r"""Evaluate a trained posterior on ``chips`` simulated chips of
    ``device`` read at each of ``times``: one row per (time, chip), and one off-chip
    row.

    ``num_samples`` posterior samples are drawn from the guide once and shared by every
    row (so the rows differ by their chip and reads only, and on
    ``ppl_hw.devices.Ideal()`` every row equals the off-chip one). Each cell runs the
    model under ``crossbar(model, device=device, sites=sites, t_inference=t,
    seed=chip_seed)`` (``reprogram="once"``) on every sample, as ``Predictive`` does,
    and scores the predictive of ``site``:

    * ``task="classification"``: ``site`` (default ``"logits"``) holds logits of shape
      ``(N, C)``; the predictive probabilities are the softmax of each sample's logits
      averaged over the samples, scored by :func:`ppl_hw.metrics.accuracy`,
      :func:`~ppl_hw.metrics.nll` and :func:`~ppl_hw.metrics.expected_calibration_error`
      (15 bins).
    * ``task="regression"``: ``site`` (default ``"y"``, the observed site, whose
      samples include the observation noise; a mean site gives the epistemic part
      only) holds values of the shape of ``y`` (or with a trailing axis of 1); with
      the samples' mean :math:`\mu_n` and variance :math:`\sigma_n^2` (divided by
      ``num_samples``), ``rmse`` is :func:`ppl_hw.metrics.rmse` of :math:`\mu` and
      ``nll`` the Gaussian :func:`ppl_hw.metrics.gaussian_nll` of ``y`` under
      :math:`\mathcal N(\mu_n, \sigma_n^2)`.

    **Seeds and reproduction.** Chip ``i`` is ``crossbar(..., seed=seed + i)``,
    recorded as ``chip_seed``. The posterior samples and every read come from
    ``rng_seed``: a cell's reads from its ``read_seed``, derived from ``rng_seed``,
    its chip seed and its time (:func:`ppl_hw.common.deploy.read_seed`), so a cell
    does not depend on the other chips or times or on the order of evaluation:
    ``deployment_sweep(..., times=[t], chips=1, seed=chip_seed)`` with the same
    ``rng_seed`` (and ``num_samples``, ``batch_size``) recomputes it exactly. {reads}

    **In parallel.** The table is the same on any number of workers (but for the
    ``seconds`` column): the posterior samples are drawn once, from ``rng_seed``,
    and each cell is keyed by its chip and time, never by a worker.
    ``executor=`` sends each cell (the off-chip row, then each time's chips) to any
    :class:`concurrent.futures.Executor` of processes — a
    ``ProcessPoolExecutor(mp_context=multiprocessing.get_context("spawn"))`` (a pool
    that forks is refused: a forked child of a process that has run {host} hangs),
    ``dask.distributed.Client(...).get_executor()``, Ray's executor — with the model,
    ``sites``, the inputs and the posterior samples{shipped} pickled once
    (cloudpickle when installed, else pickle; a :class:`TypeError` before any work
    if they cannot be), and unpickled once per worker; a thread pool is refused
    (the host's handlers live on a process-global stack), and a script that starts
    a "spawn" pool needs the ``if __name__ == "__main__":`` guard (the workers
    import it). ``shard=(index, count)``
    evaluates only block ``index`` of ``count`` of the cells in their canonical
    order, for independent processes or hosts with no executor (each draws the same
    posterior samples); ``DeploymentSweep.concat(shards)`` merges all ``count``
    shards, in any order, into the table of the sweep run in one piece. Both can be
    combined (a pool per host).

    :param model: the model, called as ``model(x)`` (use :func:`functools.partial`
        for other arguments).
    :param guide: the trained guide.
    :param x: the test inputs (one per row of the leading axis).
    :param y: the targets: integer labels ``(N,)``, or regression targets.
    :param device: the :class:`~ppl_hw.core.device.Device` (e.g.
        ``ppl_hw.devices.PCM()``).
    :param times: seconds since programming, non-negative and distinct.
    :param chips: the number of chips, ``>= 1``.
    :param num_samples: posterior samples, ``>= 1``.
    :param seed: the first chip's seed, ``>= 0`` (chip ``i``: ``seed + i``).
    :param rng_seed: the seed of the posterior samples and the reads, ``>= 0``.{params}
    :param site: the site scored (``None``: ``"logits"`` for classification, ``"y"``
        for regression).
    :param task: ``"classification"`` or ``"regression"``.
    :param label: the method's name in the rows (``None``: the guide's class name).
    :param include_clean: also evaluate the posterior off-chip (a row with ``t``,
        ``chip`` and ``device`` ``None``).
    :param sites: which model sites sit on the chip (the handler's ``sites``).
    :param batch_size: evaluate the inputs in slices of this many (``None``: all at
        once); slice ``j`` of a cell reads {batch}.
    :param keep_predictions: keep each row's predictive in
        :attr:`DeploymentSweep.predictions`.
    :param executor: a :class:`concurrent.futures.Executor` of processes the cells
        are fanned out to, one task per cell (``None``: evaluated here, one after
        the other).
    :param shard: ``(index, count)``: evaluate only shard ``index`` (``0 <= index <
        count``) of ``count`` contiguous blocks of the cells, ``count`` at most the
        number of cells (``None``: all of them); recorded in ``settings``.
    :returns: a :class:`DeploymentSweep`.

    Arguments are checked before any work (a :class:`TypeError` or
    :class:`ValueError` naming the argument); so are ``site`` and ``sites`` against
    the model, from a trace of it.

    **Example**::

{example}
    """
