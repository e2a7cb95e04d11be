"""The file loaders of ppl_hw.datasets on tiny files the tests write themselves in the
published formats: MNIST / Fashion-MNIST IDX (big-endian headers, plain and gzipped)
and CIFAR-10's python batches (Python 2 protocol-2 pickles of dicts with bytes keys,
as in ``cifar-10-python.tar.gz``). The reference of every round trip is the array
the test wrote, scaled by NumPy in float64 and rounded to float32."""

import gzip
import io
import os
import pickle
import re
import struct
import tracemalloc

import numpy as np
import pytest

from ppl_hw import datasets
from ppl_hw.datasets import load_cifar10, load_fashion_mnist, load_mnist

IDX_NAMES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
N_TRAIN, N_TEST = 12, 5


# -- writers of the published formats ----------------------------------------------


def idx_bytes(array, type_byte=0x08):
    """An IDX file: two zero bytes, the data type, the number of dimensions, each
    dimension as a big-endian uint32, then the data (uint8, C order)."""
    array = np.asarray(array, dtype=np.uint8)
    head = bytes([0, 0, type_byte, array.ndim])
    head += struct.pack(f">{array.ndim}I", *array.shape)
    return head + array.tobytes()


def write(path, data, gz=False):
    path = path.with_name(path.name + ".gz") if gz else path
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    return path


def mnist_arrays(seed=0):
    rng = np.random.default_rng(seed)
    arrays = {
        "x_train": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, N_TRAIN, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, N_TEST, dtype=np.uint8),
    }
    arrays["x_train"][0, 0, :2] = (0, 255)  # both ends of the scale
    arrays["y_train"][:2] = (0, 9)
    return arrays


def write_mnist(directory, arrays, gz=False):
    directory.mkdir(parents=True, exist_ok=True)
    return {
        k: write(directory / IDX_NAMES[k], idx_bytes(a), gz) for k, a in arrays.items()
    }


def expected_images(pixels, layout):
    """uint8 (N, C, H, W) -> the loader's float32 array in ``layout``."""
    x = (pixels / 255.0).astype(np.float32)  # float64 division, then rounded
    if layout == "NHWC":
        return x.transpose(0, 2, 3, 1)
    if layout == "flat":
        return x.reshape(len(x), -1)
    return x


class Py2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2's cPickle wrote CIFAR-10's batches: ``str`` (bytes) as
    SHORT_BINSTRING / BINSTRING, NumPy's reconstructor under its old module name,
    dtype flags as ints (NumPy 1's ``('u1', 0, 1)``)."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        data = obj.encode("latin-1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str

    def save_global(self, obj, name=None):
        module, name = obj.__module__, name or obj.__name__
        module = module.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name}\n".encode())
        self.memoize(obj)

    def reducer_override(self, obj):
        if isinstance(obj, np.dtype):
            fn, (spec, align, copy), state = obj.__reduce__()
            return fn, (spec, int(align), int(copy)), state
        return NotImplemented


def py2_pickle(obj):
    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue()


def cifar_batch(n, seed, label="training batch 1 of 5"):
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in rng.integers(0, 10, n)]
    return {
        b"batch_label": label.encode(),
        b"labels": labels,
        b"data": data,
        b"filenames": [f"image_{seed}_{i:06d}.png".encode() for i in range(n)],
    }


CIFAR_SIZES = {f"data_batch_{i}": 3 + i for i in range(1, 6)} | {"test_batch": 4}


def write_cifar(parent, dump=py2_pickle):
    directory = parent / "cifar-10-batches-py"
    directory.mkdir(parents=True, exist_ok=True)
    batches = {}
    for seed, (name, n) in enumerate(CIFAR_SIZES.items()):
        batches[name] = cifar_batch(n, seed, label=name)
        (directory / name).write_bytes(dump(batches[name]))
    return directory, batches


# -- MNIST / Fashion-MNIST ------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "flat"])
def test_mnist_round_trip(tmp_path, gz, layout):
    arrays = mnist_arrays()
    write_mnist(tmp_path, arrays, gz)
    split = load_mnist(tmp_path, layout=layout)
    assert isinstance(split, datasets.Split)
    for part in ("train", "test"):
        x, y = getattr(split, f"x_{part}"), getattr(split, f"y_{part}")
        ref = expected_images(arrays[f"x_{part}"][:, None], layout)
        assert x.dtype == np.float32 and x.shape == ref.shape
        np.testing.assert_array_equal(x, ref)
        assert y.dtype == np.int64
        np.testing.assert_array_equal(y, arrays[f"y_{part}"])
    assert split.x_train.reshape(N_TRAIN, -1)[0, :2].tolist() == [0.0, 1.0]


def test_layouts_are_views_of_one_another(tmp_path):
    write_mnist(tmp_path, mnist_arrays())
    nchw, nhwc, flat = (
        load_mnist(tmp_path, layout=k) for k in ("NCHW", "NHWC", "flat")
    )
    np.testing.assert_array_equal(nchw.x_test[:, 0], nhwc.x_test[..., 0])
    np.testing.assert_array_equal(nchw.x_test.reshape(N_TEST, -1), flat.x_test)
    assert nchw.x_train.shape == (N_TRAIN, 1, 28, 28)
    assert nhwc.x_train.shape == (N_TRAIN, 28, 28, 1)
    assert flat.x_train.shape == (N_TRAIN, 784)


def test_fashion_mnist_mixed_files_and_torchvision_root(tmp_path):
    """Fashion-MNIST has MNIST's names and format; files may be gzipped one by one,
    spelt ``train-images.idx3-ubyte``, or sit in torchvision's ``<Name>/raw``."""
    arrays = mnist_arrays(seed=1)
    raw = tmp_path / "FashionMNIST" / "raw"
    raw.mkdir(parents=True)
    for k, a in arrays.items():
        name = IDX_NAMES[k]
        if k == "y_train":
            name = name.replace("-idx", ".idx")
        write(raw / name, idx_bytes(a), gz=k.startswith("x"))
    split = load_fashion_mnist(tmp_path)
    np.testing.assert_array_equal(
        split.x_train, expected_images(arrays["x_train"][:, None], "NCHW")
    )
    np.testing.assert_array_equal(split.y_test, arrays["y_test"])
    # given the raw directory itself, and as a string
    np.testing.assert_array_equal(load_fashion_mnist(str(raw)).y_train, split.y_train)


def test_plain_file_is_preferred_to_its_gz(tmp_path):
    arrays = mnist_arrays()
    write_mnist(tmp_path, arrays)
    other = mnist_arrays(seed=5)
    write(tmp_path / IDX_NAMES["y_train"], idx_bytes(other["y_train"]), gz=True)
    np.testing.assert_array_equal(load_mnist(tmp_path).y_train, arrays["y_train"])


def _mnist_with(tmp_path, key, data, gz=False):
    files = write_mnist(tmp_path, mnist_arrays())
    files[key].unlink()
    return write(tmp_path / IDX_NAMES[key], data, gz)


def _raises(exc, file, fn, *args, match=""):
    with pytest.raises(exc, match=re.escape(str(file)) + ".*" + match):
        fn(*args)


@pytest.mark.parametrize("gz", [False, True])
def test_idx_wrong_magic(tmp_path, gz):
    arrays = mnist_arrays()
    # a labels file where the images belong
    bad = _mnist_with(tmp_path, "x_train", idx_bytes(arrays["y_train"]), gz)
    _raises(ValueError, bad, load_mnist, tmp_path, match="0x00000801")
    # data type 0x0D (float) instead of 0x08 (unsigned byte)
    bad = _mnist_with(tmp_path, "y_test", idx_bytes(arrays["y_test"], 0x0D), gz)
    _raises(ValueError, bad, load_mnist, tmp_path, match="0x0d")


def test_idx_gzip_suffix_must_match_the_content(tmp_path):
    data = gzip.compress(idx_bytes(mnist_arrays()["x_test"]), mtime=0)
    bad = _mnist_with(tmp_path, "x_test", data)
    _raises(ValueError, bad, load_mnist, tmp_path, match="gzipped")
    # and a plain file named .gz
    bad.unlink()
    bad = write(bad.with_name(bad.name + ".gz"), idx_bytes(mnist_arrays()["x_test"]))
    _raises(ValueError, bad, load_mnist, tmp_path, match="not a readable gzip file")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_truncated(tmp_path, gz):
    data = idx_bytes(mnist_arrays()["x_train"])
    bad = _mnist_with(tmp_path, "x_train", data[:-100], gz)
    _raises(ValueError, bad, load_mnist, tmp_path, match="truncated")
    labels = idx_bytes(mnist_arrays()["y_train"])
    bad = _mnist_with(tmp_path, "y_train", labels[:6], gz)  # inside the header
    _raises(ValueError, bad, load_mnist, tmp_path, match="truncated")


def test_idx_truncated_gzip_stream(tmp_path):
    data = gzip.compress(idx_bytes(mnist_arrays()["x_train"]), mtime=0)
    bad = _mnist_with(tmp_path, "x_train", data[: len(data) // 2])
    bad = bad.rename(bad.with_name(bad.name + ".gz"))
    _raises(ValueError, bad, load_mnist, tmp_path, match="truncated")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_extra_trailing_bytes(tmp_path, gz):
    data = idx_bytes(mnist_arrays()["y_test"]) + b"\x00"
    bad = _mnist_with(tmp_path, "y_test", data, gz)
    _raises(ValueError, bad, load_mnist, tmp_path, match="1 extra bytes")


@pytest.mark.parametrize("gz", [False, True])
def test_idx_header_is_checked_before_the_pixels_are_allocated(tmp_path, gz):
    """Headers announcing 10**6 images (784 MB as float32) and labels over a few
    bytes are refused without allocating them."""
    files = write_mnist(tmp_path, mnist_arrays())
    for key, head in (
        ("x_train", bytes([0, 0, 8, 3]) + struct.pack(">3I", 10**6, 28, 28)),
        ("y_train", bytes([0, 0, 8, 1]) + struct.pack(">I", 10**6)),
    ):
        files[key].unlink()
        write(tmp_path / IDX_NAMES[key], head + bytes(784 * 3), gz)
    tracemalloc.start()
    try:
        match = re.escape(str(tmp_path)) + "/train-(images|labels)-idx.*truncated"
        with pytest.raises(ValueError, match=match):
            load_mnist(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**21  # 2 MiB: a gzip read buffer, nothing of the announced size


def test_idx_missing_file(tmp_path):
    files = write_mnist(tmp_path, mnist_arrays())
    files["y_test"].unlink()
    _raises(
        FileNotFoundError,
        tmp_path / IDX_NAMES["y_test"],
        load_mnist,
        tmp_path,
        match="IDX files",
    )
    _raises(FileNotFoundError, tmp_path / "nowhere", load_mnist, tmp_path / "nowhere")


def test_idx_label_out_of_range(tmp_path):
    labels = mnist_arrays()["y_train"].copy()
    labels[7] = 10
    bad = _mnist_with(tmp_path, "y_train", idx_bytes(labels))
    _raises(ValueError, bad, load_mnist, tmp_path, match="label 10 at position 7")


def test_idx_mismatched_counts(tmp_path):
    labels = mnist_arrays()["y_test"][:-1]
    bad = _mnist_with(tmp_path, "y_test", idx_bytes(labels))
    _raises(ValueError, bad, load_mnist, tmp_path, match="4 labels")


def test_idx_wrong_image_size(tmp_path):
    images = np.zeros((N_TRAIN, 32, 32), np.uint8)
    bad = _mnist_with(tmp_path, "x_train", idx_bytes(images))
    _raises(ValueError, bad, load_mnist, tmp_path, match="32 x 32")


def test_bad_arguments(tmp_path):
    write_mnist(tmp_path, mnist_arrays())
    with pytest.raises(ValueError, match=r"layout must be one of.*'nchw'"):
        load_mnist(tmp_path, layout="nchw")
    with pytest.raises(TypeError, match=r"path must be a str or os\.PathLike.*3"):
        load_mnist(3)
    with pytest.raises(ValueError, match=r"got the file .*t10k-images-idx3-ubyte"):
        load_mnist(tmp_path / IDX_NAMES["x_test"])
    with pytest.raises(ValueError, match="layout must be one of"):
        load_cifar10(tmp_path, layout=None)


# -- CIFAR-10 -------------------------------------------------------------------------


def test_the_written_batches_are_python2_pickles(tmp_path):
    """What the round trip below reads is the original's opcode vocabulary: protocol
    2, bytes as BINSTRING (no ``_codecs.encode``), ``numpy.core.multiarray``."""
    import pickletools

    data = py2_pickle(cifar_batch(2, 0))
    ops = {op.name for op, _, _ in pickletools.genops(data)}
    assert data[:2] == b"\x80\x02"
    assert {"SHORT_BINSTRING", "BINSTRING", "GLOBAL", "SETITEMS"} <= ops
    assert not ops & {"BINUNICODE", "SHORT_BINBYTES", "BINBYTES", "STACK_GLOBAL"}
    assert b"numpy.core.multiarray\n_reconstruct\n" in data
    assert b"_codecs" not in data


@pytest.mark.parametrize("layout", ["NCHW", "NHWC", "flat"])
def test_cifar10_round_trip(tmp_path, layout):
    directory, batches = write_cifar(tmp_path)
    for path in (directory, tmp_path):  # the batches' directory or its parent
        split = load_cifar10(path, layout=layout)
        train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
        pixels = np.concatenate([b[b"data"] for b in train]).reshape(-1, 3, 32, 32)
        for x, ref_pixels, y, ref_labels in (
            (
                split.x_train,
                pixels,
                split.y_train,
                [v for b in train for v in b[b"labels"]],
            ),
            (
                split.x_test,
                batches["test_batch"][b"data"].reshape(-1, 3, 32, 32),
                split.y_test,
                batches["test_batch"][b"labels"],
            ),
        ):
            ref = expected_images(ref_pixels, layout)
            assert x.dtype == np.float32 and x.shape == ref.shape
            np.testing.assert_array_equal(x, ref)
            assert y.dtype == np.int64 and y.tolist() == ref_labels
    assert split.x_train.shape[0] == sum(CIFAR_SIZES.values()) - 4


def test_cifar10_channel_planes(tmp_path):
    """The file's row is 1 024 red, 1 024 green, 1 024 blue values, each plane row
    by row: pixel (row 1, column 2) of channel c sits at c * 1024 + 1 * 32 + 2."""
    directory, batches = write_cifar(tmp_path)
    row = batches["test_batch"][b"data"][0]
    nhwc = load_cifar10(directory, layout="NHWC").x_test[0]
    for c in range(3):
        assert nhwc[1, 2, c] == np.float32(row[c * 1024 + 32 + 2] / 255.0)


def test_cifar10_python3_pickles_load(tmp_path):
    """A batch pickled again on Python 3 (protocol 4, NumPy 2 names, labels an
    int64 array) reads the same."""
    directory, batches = write_cifar(tmp_path)
    test = dict(batches["test_batch"])
    test[b"labels"] = np.asarray(test[b"labels"], dtype=np.int64)
    (directory / "test_batch").write_bytes(pickle.dumps(test, protocol=4))
    np.testing.assert_array_equal(load_cifar10(directory).y_test, test[b"labels"])


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_cifar10_refuses_globals_other_than_numpy_arrays(tmp_path):
    directory, batches = write_cifar(tmp_path)
    marker = tmp_path / "pwned"
    evil = {**batches["data_batch_3"], b"extra": _Exploit(marker)}
    bad = directory / "data_batch_3"
    bad.write_bytes(pickle.dumps(evil, protocol=4))
    _raises(ValueError, bad, load_cifar10, directory, match="refused.*system")
    # Python 3's protocol 2 pickles bytes through _codecs.encode: refused too
    bad.write_bytes(pickle.dumps(batches["data_batch_3"], protocol=2))
    _raises(ValueError, bad, load_cifar10, directory, match="refused.*_codecs")
    assert not marker.exists()
    # an array reconstruction of a huge shape is refused, not allocated
    huge = py2_pickle(batches["data_batch_3"]).replace(
        b"K\x00\x85", b"J\x00\x00\x00\x40\x85", 1
    )
    bad.write_bytes(huge)
    _raises(ValueError, bad, load_cifar10, directory, match="reconstruction")


def _cifar_with(tmp_path, name, batch=None, data=None):
    directory, batches = write_cifar(tmp_path)
    if data is None:
        data = py2_pickle({**batches[name], **(batch or {})})
    (directory / name).write_bytes(data)
    return directory, directory / name, batches


@pytest.mark.parametrize(
    "change, match",
    [
        ({b"data": np.zeros((5, 3072), np.int64)}, "int64 array of shape"),
        (
            {b"data": np.zeros((5, 3071), np.uint8)},
            r"expected uint8 of shape \(N, 3072\)",
        ),
        ({b"data": [0] * 3072}, "b'data' is a list"),
        ({b"labels": [0, 1, 2, 3, 10]}, "label 10 at position 4"),
        ({b"labels": [0, 1, 2, -1, 4]}, "label -1 at position 3"),
        ({b"labels": [0, 1, 2, 3]}, "4 labels for 5 images"),
        ({b"labels": [0.0, 1.0, 2.0, 3.0, 4.0]}, "list of ints"),
    ],
)
def test_cifar10_malformed_fields(tmp_path, change, match):
    directory, bad, _ = _cifar_with(tmp_path, "data_batch_2", change)
    _raises(ValueError, bad, load_cifar10, directory, match=match)


def test_cifar10_missing_key(tmp_path):
    directory, batches = write_cifar(tmp_path)
    batch = dict(batches["test_batch"])
    del batch[b"labels"]
    bad = directory / "test_batch"
    bad.write_bytes(py2_pickle(batch))
    _raises(ValueError, bad, load_cifar10, directory, match="no key b'labels'")
    bad.write_bytes(py2_pickle([batch]))
    _raises(ValueError, bad, load_cifar10, directory, match="holds a list")


def test_cifar10_truncated_and_trailing_bytes(tmp_path):
    directory, batches = write_cifar(tmp_path)
    bad = directory / "data_batch_5"
    data = py2_pickle(batches["data_batch_5"])
    bad.write_bytes(data[: len(data) // 2])
    _raises(ValueError, bad, load_cifar10, directory, match="truncated")
    bad.write_bytes(data + b"\x00\x00")
    _raises(ValueError, bad, load_cifar10, directory, match="2 extra bytes")
    bad.write_bytes(b"not a pickle")
    _raises(ValueError, bad, load_cifar10, directory)


def test_cifar10_missing_batch(tmp_path):
    directory, _ = write_cifar(tmp_path)
    (directory / "data_batch_4").unlink()
    _raises(FileNotFoundError, directory / "data_batch_4", load_cifar10, tmp_path)
    _raises(
        FileNotFoundError,
        tmp_path / "empty",
        load_cifar10,
        (tmp_path / "empty").mkdir() or tmp_path / "empty",
        match="cifar-10-batches-py",
    )
