"""The LeNet-5 study (examples/lenet5_mnist.py) at its smoke size, on a tiny MNIST in
the published IDX format that the test writes (64 training and 32 test images,
gzipped); the full-size commands are in docs/reproductions.md."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from .test_dataset_files import IDX_NAMES, idx_bytes, write

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
# LeNet-5-Caffe on 28 x 28 x 1: conv 5x5x20, conv 5x5x50, dense 800-500, dense 500-10
NUM_WEIGHTS = (25 * 20 + 20) + (25 * 20 * 50 + 50) + (800 * 500 + 500) + (500 * 10 + 10)


def _load(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_tiny_mnist(tmp_path):
    """64 training and 32 test images of random pixels and labels, gzipped IDX."""
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (64, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 64, dtype=np.uint8),
        "x_test": rng.integers(0, 256, (32, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 32, dtype=np.uint8),
    }
    data = tmp_path / "mnist"
    data.mkdir()
    for key, a in arrays.items():
        write(data / IDX_NAMES[key], idx_bytes(a), gz=True)
    return data, arrays


@pytest.mark.slow
def test_lenet5_mnist_smoke(tmp_path):
    import jax.numpy as jnp

    from ppl_hw.coding import CompressedModel, decode

    data, arrays = write_tiny_mnist(tmp_path)
    out = tmp_path / "out"
    study = _load("lenet5_mnist")
    res = study.main(["--data", f"mnist:{data}", "--smoke", "--output", str(out)])

    check_structure(res, out)
    # the reported error of the decoded network, recomputed from the coded file with
    # flax alone (no NumPyro handler) on the test images as the test wrote them
    weights = decode(CompressedModel.load(out / "lenet5_numpyro.mrc"))
    tree: dict = {}
    for site, value in weights.items():
        layer, param = site.removeprefix("net/").split(".")
        tree.setdefault(layer, {})[param] = jnp.asarray(value)
    x_test = (arrays["x_test"] / 255.0).astype(np.float32)[..., None]
    logits = study.lenet5().apply({"params": tree}, jnp.asarray(x_test))
    error = np.mean(np.argmax(np.asarray(logits), -1) != arrays["y_test"])
    assert res["decoded_error"] == pytest.approx(error, abs=1e-12)


@pytest.mark.slow
@pytest.mark.pyro
def test_lenet5_mnist_pyro_smoke(tmp_path):
    """The Pyro twin (torch LeNet-5 through ppl_hw.pyro.bnn.bayesian), 3 steps."""
    import torch

    from ppl_hw.coding import CompressedModel, decode

    data, arrays = write_tiny_mnist(tmp_path)
    out = tmp_path / "out"
    study = _load("lenet5_mnist")
    args = ["--data", f"mnist:{data}", "--smoke", "--backend", "pyro", "--steps", "3"]
    res = study.main([*args, "--output", str(out)])
    check_structure(res, out, "pyro")
    # the decoded error recomputed with torch alone, from the coded file
    net = study.torch_lenet5(1, 28)
    weights = decode(CompressedModel.load(out / "lenet5_pyro.mrc"), backend="pyro")
    net.load_state_dict(weights)
    x_test = (arrays["x_test"] / 255.0).astype(np.float32)[:, None]
    with torch.no_grad():
        logits = net(torch.as_tensor(x_test)).numpy()
    error = np.mean(np.argmax(logits, -1) != arrays["y_test"])
    assert res["decoded_error"] == pytest.approx(error, abs=1e-12)


def check_structure(res, out, backend="numpyro"):
    size = res["size"]
    assert (res["num_train"], res["num_test"]) == (64, 32)
    # flax takes NHWC images, torch NCHW
    assert res["image_shape"] == ([28, 28, 1] if backend == "numpyro" else [1, 28, 28])
    assert res["num_weights"] == NUM_WEIGHTS == res["anchor"]["num_weights"]
    assert len(res["sites"]) == 8
    # Mean-KL's KL is the budget by construction, cut into blocks of exactly
    # bits_per_block bits, which encode codes as they are
    assert res["backend"] == backend
    assert res["kl_bits"] == pytest.approx(size["kl_bits"], rel=1e-5)
    assert res["total_bits"] == size["kl_bits"]
    assert res["num_blocks"] == size["kl_bits"] // size["bits_per_block"]
    assert res["index_bytes"] == res["total_bits"] / 8
    assert res["file_bytes"] == (out / f"lenet5_{backend}.mrc").stat().st_size
    assert res["file_bytes"] >= res["index_bytes"]
    assert res["bits_per_weight"] == pytest.approx(res["total_bits"] / NUM_WEIGHTS)
    assert np.isfinite(res["final_loss"])
    errors = [res["posterior_mean_error"], res["decoded_error"]]
    assert [r["time"] for r in res["pcm"]] == list(size["times"])
    for r in res["pcm"]:
        assert len(r["errors"]) == size["chips"]
        assert r["error_mean"] == pytest.approx(np.mean(r["errors"]))
        errors += r["errors"]
    # errors are counts of the 32 test images
    assert all(0 <= e <= 1 and (32 * e) == int(32 * e) for e in errors)
    assert (out / f"lenet5_{backend}.png").stat().st_size > 10_000
    assert json.loads((out / f"results_{backend}.json").read_text()) == res
