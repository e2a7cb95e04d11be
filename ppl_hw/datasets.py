r"""Data sets that work offline: embedded, made by formula, or read from the user's
own files — never downloaded.

Each loader returns a :class:`Split` ``(x_train, y_train, x_test, y_test)`` of NumPy
arrays (inputs float32, class labels int64, regression targets float32), so it
unpacks directly::

    x_train, y_train, x_test, y_test = load_digits()

Convert with ``jnp.asarray`` / ``torch.as_tensor`` for a backend.

**Image data sets from files.** :func:`load_mnist`, :func:`load_fashion_mnist` and
:func:`load_cifar10` read the files as published (MNIST and Fashion-MNIST: the four
IDX files, gzipped or not; CIFAR-10: the python pickle batches) from a directory the
user already has; the train/test split is the published one (60 000 / 10 000 and
50 000 / 10 000 images). Pixels are scaled to [0, 1] as float32 (``uint8 / 255``),
labels are int64 in 0..9. ``layout`` gives the image axes:

============ ===================== ===================== ==========================
``layout``   MNIST, Fashion-MNIST  CIFAR-10              for
============ ===================== ===================== ==========================
``"NCHW"``   ``(N, 1, 28, 28)``    ``(N, 3, 32, 32)``    ppl_hw's ``nn.conv2d``,
                                                         torch (the default)
``"NHWC"``   ``(N, 28, 28, 1)``    ``(N, 32, 32, 3)``    ``flax.linen.Conv``
``"flat"``   ``(N, 784)``          ``(N, 3072)``         dense networks
============ ===================== ===================== ==========================

``"flat"`` is the ``"NCHW"`` array flattened: MNIST's pixels row by row, CIFAR-10's
as in its files (the 1 024 red, then green, then blue values, each plane row by row).

Every file is checked field by field before its pixels are read: IDX magic numbers
(``0x00000803`` images, ``0x00000801`` labels: unsigned bytes, 3 or 1 dimensions),
28 × 28 images, sizes against the file's length (a truncated file, or bytes after the
data, are refused), label count equal to image count, labels in 0..9; CIFAR-10's keys
``b"data"`` (uint8, ``(N, 3072)``) and ``b"labels"`` (N ints in 0..9). A missing file
raises :class:`FileNotFoundError`, a malformed one :class:`ValueError`, both naming the
file.

**Unpickling is code execution.** CIFAR-10's python batches are pickles, and loading
a pickle can run any code its author put in. :func:`load_cifar10` therefore uses a
restricted unpickler that resolves only the globals a NumPy array needs
(``numpy.ndarray``, ``numpy.dtype``, NumPy's array and scalar reconstructors); any
other global (``os.system``, ``builtins.eval``, ...) is refused with a
:class:`ValueError` before it is called. Only plain containers, numbers, strings and
NumPy arrays can come out of such a file.
"""

from __future__ import annotations

import gzip
import io
import os
import pickle
import random
import zlib
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from .core.checks import check_choice, check_int, check_number

__all__ = [
    "IMAGE_LAYOUTS",
    "SPARSE_REGRESSION_SIZES",
    "Split",
    "load_cifar10",
    "load_digits",
    "load_fashion_mnist",
    "load_mnist",
    "make_mnist1d",
    "make_sparse_regression",
    "make_toy_regression",
]


class Split(NamedTuple):
    """A train/test split of inputs and targets."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def _check_int(name: str, value: object, low: int) -> int:
    return int(check_int(name, value, low=low))


def _check_seed(name: str, value: object) -> int:
    """A seed of :func:`numpy.random.default_rng` (an int >= 0, never truncated)."""
    return int(check_int(name, value, low=0))


def _check_range(name: str, value: Any) -> tuple[float, float]:
    try:
        lo, hi = value
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a pair (low, high), got {value!r}") from None
    lo = check_number(f"{name}[0]", lo)
    hi = check_number(f"{name}[1]", hi)
    if not lo < hi:
        raise ValueError(f"{name} must be (low, high) with low < high, got {value!r}")
    return lo, hi


def load_digits(*, test_size: float = 0.25, random_state: int = 0) -> Split:
    """The UCI 8×8 handwritten digits (1 797 images, 10 classes), embedded in
    scikit-learn, with a fixed split.

    Pixel intensities 0..16 are scaled to [0, 1] (float32, 64 features); the split is
    :func:`sklearn.model_selection.train_test_split` with ``test_size`` and
    ``random_state`` (default: 1 347 train / 450 test images).

    :param test_size: fraction of the images held out for testing, in (0, 1).
    :param random_state: seed of the split.
    """
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    check_number(
        "test_size",
        test_size,
        low=0,
        high=1,
        open_low=True,
        open_high=True,
        interval=True,
    )
    _check_seed("random_state", random_state)
    data = _load()
    x = (data.data / 16.0).astype(np.float32)
    y = data.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_size, random_state=random_state
    )
    return Split(x_tr, y_tr, x_te, y_te)


def make_toy_regression(
    n_train: int = 20,
    n_test: int = 200,
    *,
    noise_scale: float = 3.0,
    train_range: tuple[float, float] = (-4.0, 4.0),
    test_range: tuple[float, float] = (-6.0, 6.0),
    seed: int = 0,
) -> Split:
    r"""The 1-D regression toy of Hernández-Lobato & Adams (2015):

    .. math:: y = x^3 + \varepsilon,\quad \varepsilon \sim \mathcal N(0, s^2),

    with training inputs uniform on ``train_range`` and test inputs an evenly spaced
    grid on ``test_range`` (wider, so the predictive spread outside the data shows).
    Test targets are noise-free :math:`x^3`.

    :param n_train: number of training points.
    :param n_test: number of grid points.
    :param noise_scale: noise standard deviation ``s`` (default 3).
    :param train_range: interval of the training inputs.
    :param test_range: interval of the test grid.
    :param seed: seed of :func:`numpy.random.default_rng`.
    :returns: a :class:`Split` with inputs of shape ``(n, 1)``.
    """
    n_train = _check_int("n_train", n_train, 1)
    n_test = _check_int("n_test", n_test, 1)
    noise_scale = check_number("noise_scale", noise_scale, low=0)
    train_range = _check_range("train_range", train_range)
    test_range = _check_range("test_range", test_range)
    rng = np.random.default_rng(_check_seed("seed", seed))
    x_tr = rng.uniform(*train_range, size=n_train)
    y_tr = x_tr**3 + noise_scale * rng.standard_normal(n_train)
    x_te = np.linspace(*test_range, n_test)
    return Split(
        x_tr[:, None].astype(np.float32),
        y_tr.astype(np.float32),
        x_te[:, None].astype(np.float32),
        (x_te**3).astype(np.float32),
    )


SPARSE_REGRESSION_SIZES = {"smoke": (100, 2048, 512), "full": (1000, 10_240, 1_024)}
"""``(num_features, n_train, n_test)`` of :func:`make_sparse_regression` per size."""


def _sparse_regression_mean(x: np.ndarray) -> np.ndarray:
    x1, x2, x3, x4, x5 = (x[:, j] for j in range(5))
    return (
        np.tanh(2.0 * np.tanh(2.0 * x1 - x2))
        + 2.0 * np.tanh(np.tanh(x3 - 2.0 * x4))
        - np.tanh(2.0 * x5)
    )


def _truncated_standard_normal(
    rng: np.random.Generator, shape, bound: float
) -> np.ndarray:
    z = rng.standard_normal(shape)
    bad = np.abs(z) > bound
    while np.any(bad):  # rejection; at bound 10 this essentially never loops
        z[bad] = rng.standard_normal(int(bad.sum()))
        bad = np.abs(z) > bound
    return z


def make_sparse_regression(
    size: str = "smoke",
    *,
    num_features: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    noise_scale: float = 1.0,
    seed: int = 0,
) -> Split:
    r"""Ke & Fan's (2022) sparse regression, Example 1: five relevant inputs out of P.

    Inputs are correlated through a shared factor,
    :math:`x_j = (z_0 + z_j)/\sqrt 2` with :math:`z \sim \mathcal N(0, 1)` truncated to
    [-10, 10], and

    .. math::

        y = \tanh(2\tanh(2x_1 - x_2)) + 2\tanh(\tanh(x_3 - 2x_4)) - \tanh(2x_5)
            + \varepsilon,\quad \varepsilon \sim \mathcal N(0, 1),

    so only features 0..4 (``x1..x5``) matter. Test targets carry noise too (the
    authors' test MSE of 1.108 is measured against noisy targets, noise variance 1).

    :param size: ``"smoke"`` (P = 100, 2 048 train, 512 test) or ``"full"``
        (the paper's P = 1 000, 10 240 train, 1 024 test); see
        :data:`SPARSE_REGRESSION_SIZES`.
    :param num_features: override P (>= 5).
    :param n_train: override the number of training points.
    :param n_test: override the number of test points.
    :param noise_scale: standard deviation of ε (default 1).
    :param seed: seed of :func:`numpy.random.default_rng`.
    """
    if size not in SPARSE_REGRESSION_SIZES:
        raise ValueError(
            f"size must be one of {sorted(SPARSE_REGRESSION_SIZES)}, got {size!r}"
        )
    p0, ntr0, nte0 = SPARSE_REGRESSION_SIZES[size]
    p = _check_int("num_features", p0 if num_features is None else num_features, 5)
    ntr = _check_int("n_train", ntr0 if n_train is None else n_train, 1)
    nte = _check_int("n_test", nte0 if n_test is None else n_test, 1)
    noise_scale = check_number("noise_scale", noise_scale, low=0)
    rng = np.random.default_rng(_check_seed("seed", seed))
    n = ntr + nte
    z0 = _truncated_standard_normal(rng, (n, 1), 10.0)
    z = _truncated_standard_normal(rng, (n, p), 10.0)
    x = (z0 + z) / np.sqrt(2.0)
    y = _sparse_regression_mean(x) + noise_scale * rng.standard_normal(n)
    x, y = x.astype(np.float32), y.astype(np.float32)
    return Split(x[:ntr], y[:ntr], x[ntr:], y[ntr:])


def make_mnist1d(
    *, num_samples: int = 5000, train_split: float = 0.8, seed: int = 42
) -> Split:
    """MNIST-1D (Greydanus 2020), generated locally with ``mnist1d.make_dataset``.

    Needs the optional ``mnist1d`` package (``pip install "ppl_hw[mnist1d]"``); never
    downloads (``get_dataset`` is not used). Inputs are 40-sample float32 signals,
    labels 0..9; the default arguments give the standard 4 000 / 1 000 split. The
    global :mod:`random` and :mod:`numpy.random` states, which ``mnist1d`` reseeds,
    are restored afterwards.

    :param num_samples: total number of signals (a multiple of 10 is used exactly).
    :param train_split: fraction used for training, in (0, 1).
    :param seed: the generator's seed (42 is the published data set).
    """
    num_samples = _check_int("num_samples", num_samples, 10)
    train_split = check_number(
        "train_split",
        train_split,
        low=0,
        high=1,
        open_low=True,
        open_high=True,
        interval=True,
    )
    seed = _check_seed("seed", seed)
    n_total = 10 * (num_samples // 10)  # mnist1d makes num_samples // 10 per class
    n_train = int(n_total * train_split)
    if not 0 < n_train < n_total:
        raise ValueError(
            f"train_split={train_split!r} of num_samples={num_samples} leaves "
            f"{n_train} training and {n_total - n_train} test signals; both need "
            "at least one"
        )
    try:
        import mnist1d
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            'make_mnist1d needs the optional "mnist1d" package: '
            'pip install "ppl_hw[mnist1d]"'
        ) from err
    args = mnist1d.get_dataset_args()
    args.num_samples = num_samples
    args.train_split = float(train_split)
    args.seed = int(seed)
    # mnist1d seeds the global generators; put back what the caller had.
    np_state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        data = mnist1d.data.make_dataset(args)
    finally:
        np.random.set_state(np_state)  # noqa: NPY002
        random.setstate(py_state)
    return Split(
        data["x"].astype(np.float32),
        data["y"].astype(np.int64),
        data["x_test"].astype(np.float32),
        data["y_test"].astype(np.int64),
    )


# -- image data sets from the user's files -----------------------------------------

IMAGE_LAYOUTS = ("NCHW", "NHWC", "flat")
"""The ``layout`` options of :func:`load_mnist`, :func:`load_fashion_mnist` and
:func:`load_cifar10` (the module docstring has the shapes)."""

_NUM_CLASSES = 10
_IDX_IMAGES = 0x00000803  # unsigned bytes (0x08), 3 dimensions
_IDX_LABELS = 0x00000801  # unsigned bytes (0x08), 1 dimension
_MNIST_SIDE = 28
_MNIST_FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
_CIFAR_DIR = "cifar-10-batches-py"
_CIFAR_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
_CIFAR_TEST = "test_batch"
_CIFAR_CHW = (3, 32, 32)
_CHUNK = 1 << 22  # bytes per read of a gzipped file


def _check_dir(path: Any, what: str) -> Path:
    """``path`` as a :class:`~pathlib.Path` to an existing directory."""
    if isinstance(path, bytes) or not isinstance(path, str | os.PathLike):
        raise TypeError(
            f"path must be a str or os.PathLike naming the directory of {what}, "
            f"got {path!r}"
        )
    directory = Path(path)
    if not directory.exists():
        raise FileNotFoundError(
            f"path {str(directory)!r} does not exist: expected the directory of {what}"
        )
    if not directory.is_dir():
        raise ValueError(
            f"path must be the directory holding {what}, got the file "
            f"{str(directory)!r}"
        )
    return directory


def _check_layout(layout: Any) -> str:
    return str(check_choice("layout", layout, IMAGE_LAYOUTS))


def _to_float(
    parts: list[np.ndarray], chw: tuple[int, int, int], layout: str
) -> np.ndarray:
    """Rows of ``uint8`` pixels (``(n_i, C*H*W)``, NCHW order) → one float32 array
    in ``layout``, scaled by 1/255; allocated once, filled part by part."""
    c, h, w = chw
    n = sum(p.shape[0] for p in parts)
    shape = {"NCHW": (n, c, h, w), "NHWC": (n, h, w, c), "flat": (n, c * h * w)}
    out = np.empty(shape[layout], dtype=np.float32)
    start = 0
    for p in parts:
        m = p.shape[0]
        src = p.reshape(m, c, h, w)
        if layout == "NHWC":
            src = src.transpose(0, 2, 3, 1)
        elif layout == "flat":
            src = p
        np.divide(src, np.float32(255.0), out=out[start : start + m])
        start += m
    return out


def _check_labels(file: Path, labels: np.ndarray) -> np.ndarray:
    bad = np.flatnonzero((labels < 0) | (labels >= _NUM_CLASSES))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{str(file)!r}: label {int(labels[i])} at position {i} is not a class of "
            f"0..{_NUM_CLASSES - 1} ({bad.size} such labels)"
        )
    return labels.astype(np.int64)


# ---- IDX (MNIST, Fashion-MNIST) ---------------------------------------------------


def _idx_candidates(name: str) -> list[str]:
    """The spellings of one IDX file: as published (``train-images-idx3-ubyte``),
    gzipped, and the ``train-images.idx3-ubyte`` of some unpacked archives."""
    dotted = name.replace("-idx", ".idx")
    return [name, f"{name}.gz", dotted, f"{dotted}.gz"]


def _idx_dir(path: Path, torchvision: str) -> Path:
    """``path``, or torchvision's ``path/<Name>/raw`` if only that holds the files."""
    for d in (path, path / torchvision / "raw"):
        if any(
            (d / c).is_file() for n in _MNIST_FILES.values() for c in _idx_candidates(n)
        ):
            return d
    return path


def _idx_file(directory: Path, name: str, dataset: str) -> Path:
    for candidate in _idx_candidates(name):
        if (directory / candidate).is_file():
            return directory / candidate
    raise FileNotFoundError(
        f"{dataset}: no file {str(directory / name)!r} (nor {name}.gz, nor the "
        f"{name.replace('-idx', '.idx')!r} spelling): expected the {dataset} IDX files "
        f"{', '.join(_MNIST_FILES.values())} (gzipped or not) in {str(directory)!r}"
    )


def _open(file: Path) -> Any:
    return gzip.open(file, "rb") if file.suffix == ".gz" else open(file, "rb")


class _IdxHeader(NamedTuple):
    file: Path
    dims: tuple[int, ...]
    header_bytes: int
    payload_bytes: int


def _idx_header(file: Path, magic: int, what: str) -> _IdxHeader:
    """Read and check an IDX header; for an uncompressed file, its length too."""
    ndim = magic & 0xFF
    header_bytes = 4 + 4 * ndim
    name = repr(str(file))
    try:
        with _open(file) as f:
            head = f.read(header_bytes)
    except EOFError:
        raise ValueError(f"{name}: truncated: the gzip stream ends early") from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{name}: not a readable gzip file ({err})") from None
    if len(head) < 4:
        raise ValueError(
            f"{name}: truncated: {len(head)} bytes, shorter than an IDX magic number"
        )
    got = int.from_bytes(head[:4], "big")
    if got != magic:
        hint = ""
        if head[:2] == b"\x1f\x8b":
            hint = "; it is gzipped: name it with the .gz suffix"
        elif got in (_IDX_IMAGES, _IDX_LABELS):
            other = "images" if got == _IDX_IMAGES else "labels"
            hint = f"; 0x{got:08x} is an IDX file of {other}"
        elif head[:2] == b"\x00\x00" and head[2] != 0x08:
            hint = f"; data type byte 0x{head[2]:02x}, expected 0x08 (unsigned byte)"
        raise ValueError(
            f"{name}: wrong magic number 0x{got:08x}, expected 0x{magic:08x} for "
            f"{what} (IDX: unsigned bytes, {ndim} dimension{'s' if ndim > 1 else ''})"
            f"{hint}"
        )
    if len(head) < header_bytes:
        raise ValueError(
            f"{name}: truncated inside its header ({len(head)} of {header_bytes} bytes)"
        )
    dims = tuple(
        int.from_bytes(head[i : i + 4], "big") for i in range(4, header_bytes, 4)
    )
    if ndim == 3 and dims[1:] != (_MNIST_SIDE, _MNIST_SIDE):
        raise ValueError(
            f"{name}: images of {dims[1]} x {dims[2]} pixels, expected "
            f"{_MNIST_SIDE} x {_MNIST_SIDE}"
        )
    if dims[0] < 1:
        raise ValueError(f"{name}: holds no {what} (count 0 in its header)")
    payload = dims[0] * _MNIST_SIDE * _MNIST_SIDE if ndim == 3 else dims[0]
    if file.suffix != ".gz":  # the length is known before anything is read
        size = file.stat().st_size
        if size != header_bytes + payload:
            raise ValueError(
                _idx_size_error(
                    name, what, dims, header_bytes, payload, size - header_bytes
                )
            )
    return _IdxHeader(file, dims, header_bytes, payload)


def _idx_size_error(
    name: str, what: str, dims: tuple[int, ...], header: int, payload: int, got: int
) -> str:
    shape = " x ".join(str(d) for d in dims)
    if got < payload:
        return (
            f"{name}: truncated: its header announces {shape} {what} ({payload} bytes "
            f"after the {header}-byte header), the file holds {got}"
        )
    return (
        f"{name}: {got - payload} extra bytes after the {payload} bytes of {what} "
        f"its header announces ({shape}): not an IDX file of {what}"
    )


def _idx_payload(header: _IdxHeader, what: str) -> np.ndarray:
    """The payload of a checked IDX file, as flat uint8. A gzipped file is
    decompressed piece by piece and never beyond one byte more than announced."""
    file, name = header.file, repr(str(header.file))
    want = header.payload_bytes
    if file.suffix != ".gz":
        with open(file, "rb") as f:
            f.seek(header.header_bytes)
            return np.fromfile(f, dtype=np.uint8, count=want)
    buf = bytearray()
    try:
        with gzip.open(file, "rb") as f:
            f.read(header.header_bytes)
            while len(buf) <= want:
                piece = f.read(min(want + 1 - len(buf), _CHUNK))
                if not piece:
                    break
                buf += piece
    except EOFError:
        raise ValueError(
            f"{name}: truncated: the gzip stream ends before the {want} bytes of "
            f"{what} its header announces"
        ) from None
    except (gzip.BadGzipFile, zlib.error) as err:
        raise ValueError(f"{name}: not a readable gzip file ({err})") from None
    if len(buf) != want:
        raise ValueError(
            _idx_size_error(
                name, what, header.dims, header.header_bytes, want, len(buf)
            )
        )
    return np.frombuffer(bytes(buf), dtype=np.uint8)


def _load_idx(path: Any, layout: Any, dataset: str, torchvision: str) -> Split:
    layout = _check_layout(layout)
    directory = _idx_dir(_check_dir(path, f"the {dataset} IDX files"), torchvision)
    files = {k: _idx_file(directory, n, dataset) for k, n in _MNIST_FILES.items()}
    # every header (and every uncompressed length) before any pixel is read
    headers = {
        k: _idx_header(
            f,
            _IDX_IMAGES if k.startswith("x") else _IDX_LABELS,
            "images" if k.startswith("x") else "labels",
        )
        for k, f in files.items()
    }
    for part in ("train", "test"):
        x, y = headers[f"x_{part}"], headers[f"y_{part}"]
        if x.dims[0] != y.dims[0]:
            raise ValueError(
                f"{str(y.file)!r} holds {y.dims[0]} labels but {str(x.file)!r} holds "
                f"{x.dims[0]} images: the counts must match"
            )
    out = {}
    for part in ("train", "test"):
        y_head = headers[f"y_{part}"]
        labels = _check_labels(y_head.file, _idx_payload(y_head, "labels"))
        raw = _idx_payload(headers[f"x_{part}"], "images")
        n = labels.shape[0]
        out[part] = (
            _to_float([raw.reshape(n, -1)], (1, _MNIST_SIDE, _MNIST_SIDE), layout),
            labels,
        )
    return Split(*out["train"], *out["test"])


def load_mnist(path: str | os.PathLike, *, layout: str = "NCHW") -> Split:
    """MNIST (LeCun et al. 1998) from the user's copy of its four IDX files.

    ``path`` is the directory holding ``train-images-idx3-ubyte``,
    ``train-labels-idx1-ubyte``, ``t10k-images-idx3-ubyte`` and
    ``t10k-labels-idx1-ubyte``, each plain or gzipped (``.gz``; the plain file is
    used when both exist; ``train-images.idx3-ubyte`` spellings are found too), or a
    torchvision root holding them in ``MNIST/raw``. Nothing is downloaded.

    The split is the published one: the ``train`` files (60 000 images) and the
    ``t10k`` files (10 000). Images are float32 in [0, 1] (``uint8 / 255``) in
    ``layout`` (module docstring: ``"NCHW"`` ``(N, 1, 28, 28)``, ``"NHWC"``
    ``(N, 28, 28, 1)`` or ``"flat"`` ``(N, 784)``), labels int64 in 0..9, both in
    the files' order.

    Every header is checked before any pixel is read (magic number, 28 × 28 images,
    each uncompressed file's length against its header, label count against image
    count); a gzipped file is decompressed no further than its header announces plus
    one byte. A missing file raises :class:`FileNotFoundError`, a malformed one
    :class:`ValueError`; both name the file.

    :param path: the directory (``str`` or :class:`os.PathLike`).
    :param layout: ``"NCHW"`` (default), ``"NHWC"`` or ``"flat"``.
    :returns: a :class:`Split` ``(x_train, y_train, x_test, y_test)``.
    """
    return _load_idx(path, layout, "MNIST", "MNIST")


def load_fashion_mnist(path: str | os.PathLike, *, layout: str = "NCHW") -> Split:
    """Fashion-MNIST (Xiao, Rasul & Vollgraf 2017) from the user's copy of its four
    IDX files: the same file names and format as MNIST (see :func:`load_mnist`; a
    torchvision root holds them in ``FashionMNIST/raw``).

    The split is the published one (60 000 / 10 000 images); images float32 in
    [0, 1] (``uint8 / 255``) in ``layout``, labels int64 in 0..9 (T-shirt/top,
    trouser, pullover, dress, coat, sandal, shirt, sneaker, bag, ankle boot).

    :param path: the directory (``str`` or :class:`os.PathLike`).
    :param layout: ``"NCHW"`` (default), ``"NHWC"`` or ``"flat"``.
    :returns: a :class:`Split` ``(x_train, y_train, x_test, y_test)``.
    """
    return _load_idx(path, layout, "Fashion-MNIST", "FashionMNIST")


# ---- CIFAR-10 (python pickle batches) ---------------------------------------------

_RECONSTRUCT: Any = np.zeros(1).__reduce__()[0]  # NumPy's ndarray reconstructor
_SCALAR: Any = np.int64(0).__reduce__()[0]  # NumPy's scalar reconstructor


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> Any:
    # an array pickle starts from an empty ndarray, then sets its state
    if cls is not np.ndarray or tuple(shape) != (0,):
        raise pickle.UnpicklingError(
            f"unexpected array reconstruction {cls!r}, shape {shape!r}"
        )
    return _RECONSTRUCT(cls, shape, typecode)


def _dtype(spec: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(spec, bytes | str):
        raise pickle.UnpicklingError(f"unexpected dtype {spec!r}")
    # copy=True (as NumPy pickles it): the state set next must not alter the
    # shared built-in dtype
    text = spec.decode("ascii") if isinstance(spec, bytes) else spec
    d = np.dtype(text, align=bool(align), copy=bool(copy))
    if d.kind not in "biuf":
        raise pickle.UnpicklingError(f"refused dtype {d} (only numeric arrays)")
    return d


def _scalar(typecode: Any, *state: Any) -> Any:
    if not isinstance(typecode, np.dtype) or typecode.kind not in "biuf":
        raise pickle.UnpicklingError(f"refused scalar of type {typecode!r}")
    return _SCALAR(typecode, *state)


_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): _scalar,
    ("numpy._core.multiarray", "scalar"): _scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): _dtype,
}


class _ArrayUnpickler(pickle.Unpickler):
    """Resolves only the globals of NumPy arrays (:data:`_ALLOWED_GLOBALS`):
    unpickling anything else could run code."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"refused to load the global {module}.{name}: only NumPy arrays are "
                "allowed (unpickling a global can run code)"
            ) from None


def _cifar_dir(path: Path) -> Path:
    if path.name == _CIFAR_DIR or any(
        (path / n).exists() for n in (*_CIFAR_TRAIN, _CIFAR_TEST)
    ):
        return path
    if (path / _CIFAR_DIR).is_dir():
        return path / _CIFAR_DIR
    raise FileNotFoundError(
        f"CIFAR-10: no batches in {str(path)!r} and no {_CIFAR_DIR!r} in it: expected "
        f"data_batch_1 .. data_batch_5 and test_batch (the python version, "
        "cifar-10-python.tar.gz extracted)"
    )


def _cifar_key(file: Path, batch: dict, key: str) -> Any:
    for k in (key.encode("ascii"), key):
        if k in batch:
            return batch[k]
    keys = ", ".join(repr(k) for k in list(batch)[:8])
    raise ValueError(
        f"{str(file)!r}: no key b{key!r} in the batch (keys: {keys}): not a CIFAR-10 "
        "python batch"
    )


def _cifar_batch(file: Path) -> tuple[np.ndarray, np.ndarray]:
    """One batch's ``(uint8 pixels (n, 3072), int64 labels (n,))``, checked."""
    name = repr(str(file))
    if not file.is_file():
        raise FileNotFoundError(
            f"CIFAR-10: no file {name}: expected the python batches "
            f"{', '.join(_CIFAR_TRAIN)} and {_CIFAR_TEST} in {str(file.parent)!r}"
        )
    raw = file.read_bytes()
    stream = io.BytesIO(raw)
    try:
        batch = _ArrayUnpickler(stream, encoding="bytes").load()
    except EOFError:
        raise ValueError(f"{name}: truncated: the pickle ends early") from None
    except pickle.UnpicklingError as err:
        what = "truncated" if "truncated" in str(err) else "not a CIFAR-10 batch"
        raise ValueError(f"{name}: {what}: {err}") from None
    except Exception as err:  # malformed opcodes or array state
        raise ValueError(
            f"{name}: not a CIFAR-10 python batch, the pickle does not load "
            f"({type(err).__name__}: {err})"
        ) from None
    if stream.tell() != len(raw):
        raise ValueError(
            f"{name}: {len(raw) - stream.tell()} extra bytes after the pickle"
        )
    if not isinstance(batch, dict):
        raise ValueError(
            f"{name}: holds a {type(batch).__name__}, expected the dict of a CIFAR-10 "
            "python batch"
        )
    data = _cifar_key(file, batch, "data")
    size = int(np.prod(_CIFAR_CHW))
    if (
        not isinstance(data, np.ndarray)
        or data.dtype != np.uint8
        or data.ndim != 2
        or data.shape[1] != size
    ):
        desc = (
            f"{data.dtype} array of shape {data.shape}"
            if isinstance(data, np.ndarray)
            else type(data).__name__
        )
        raise ValueError(
            f"{name}: b'data' is a {desc}, expected uint8 of shape (N, {size})"
        )
    labels = _cifar_key(file, batch, "labels")
    if isinstance(labels, np.ndarray):
        ok = labels.ndim == 1 and labels.dtype.kind in "iu"
    else:
        ok = isinstance(labels, list | tuple) and all(
            isinstance(v, int | np.integer) and not isinstance(v, bool) for v in labels
        )
    if not ok:
        raise ValueError(
            f"{name}: b'labels' must be a list of ints, got {type(labels).__name__}"
        )
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if labels.shape[0] != data.shape[0]:
        raise ValueError(
            f"{name}: {labels.shape[0]} labels for {data.shape[0]} images: the counts "
            "must match"
        )
    return data, _check_labels(file, labels)


def load_cifar10(path: str | os.PathLike, *, layout: str = "NCHW") -> Split:
    """CIFAR-10 (Krizhevsky 2009) from the user's copy of its python batches.

    ``path`` is the directory ``cifar-10-batches-py`` (``cifar-10-python.tar.gz``
    extracted; also a torchvision root) or its parent. The split is the published
    one: ``data_batch_1`` .. ``data_batch_5`` (50 000 images, in that order) and
    ``test_batch`` (10 000). Each batch is a pickled dict with ``b"data"`` (uint8,
    ``(N, 3072)``: per image 1 024 red, 1 024 green, 1 024 blue values, each plane
    row by row) and ``b"labels"`` (N ints). Images are float32 in [0, 1]
    (``uint8 / 255``) in ``layout`` (``"NCHW"`` ``(N, 3, 32, 32)``, ``"NHWC"``
    ``(N, 32, 32, 3)``, ``"flat"`` ``(N, 3072)`` as in the file), labels int64 in
    0..9 (airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck).

    **Security:** the batches are pickles, and unpickling can run code. They are read
    with a restricted unpickler that resolves only NumPy's array globals and refuses
    every other (module docstring), so a tampered file raises :class:`ValueError`
    instead of running anything.

    All six batches are read and checked (keys, dtype, shape, label count and range)
    before the float32 arrays are allocated. A missing batch raises
    :class:`FileNotFoundError`, a malformed one :class:`ValueError`; both name the
    file.

    :param path: the directory (``str`` or :class:`os.PathLike`).
    :param layout: ``"NCHW"`` (default), ``"NHWC"`` or ``"flat"``.
    :returns: a :class:`Split` ``(x_train, y_train, x_test, y_test)``.
    """
    layout = _check_layout(layout)
    directory = _cifar_dir(_check_dir(path, "the CIFAR-10 python batches"))
    for n in (*_CIFAR_TRAIN, _CIFAR_TEST):  # every file present before any is read
        if not (directory / n).is_file():
            _cifar_batch(directory / n)  # raises FileNotFoundError, naming it
    train = [_cifar_batch(directory / n) for n in _CIFAR_TRAIN]
    test = [_cifar_batch(directory / _CIFAR_TEST)]
    return Split(
        _to_float([d for d, _ in train], _CIFAR_CHW, layout),
        np.concatenate([y for _, y in train]),
        _to_float([d for d, _ in test], _CIFAR_CHW, layout),
        test[0][1],
    )
