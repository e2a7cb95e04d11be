"""Study: a Bayesian LeNet-5 on MNIST from your own files, MIRACLE-coded and deployed
on a simulated PCM chip.

The network is LeNet-5-Caffe, the LeNet-5 of Havasi et al. (2019) (431 080
weights on MNIST: conv 5×5×20 - max-pool 2 - conv 5×5×50 - max-pool 2 - dense 500 -
ReLU - dense 10), a flax linen module made Bayesian with
``ppl_hw.numpyro.bnn.bayesian(LeNet5(), Normal(0, 1), likelihood="categorical")``.
Each layer scales its input by ``1/sqrt(fan_in)`` (Neal's scaling), so that the
Normal(0, 1) prior — MIRACLE's coding distribution — gives well-scaled networks.

1. **Training**: ``AutoMeanKL(kl_budget_bits=B, budget_split="blocks",
   bits_per_block=16)`` + ``TraceMeanField_ELBO``, Adam, minibatches (the KL is B bits
   by construction, every coding block's exactly 16 bits).
2. **Coding**: ``ppl_hw.coding.encode`` (the guide's own blocks and seed, selection
   ``"sample"``), saved, loaded back and decoded with ``ppl_hw.coding.decode``.
3. **Reported**: the test error of the posterior mean network (the guide's means) and
   of the decoded network, the coded size (bits, bytes of indices, file bytes,
   compression against float32), beside Havasi et al.'s 1.52 kB at 0.96 % error
   (the default B = 12 160 bits is 1 520 bytes of indices); then the decoded network
   deployed on ``ppl_hw.devices.PCM()`` with the ``crossbar`` handler, read 1 hour,
   1 day and 1 year after programming, on several chips (test error mean ± sd).

``--data`` names the data and the directory of the user's files (nothing is
downloaded): ``mnist:PATH``, ``fashion_mnist:PATH`` (the IDX files, see
``ppl_hw.datasets.load_mnist``) or ``cifar10:PATH`` (the python batches; the same
network on 32×32×3 images, 657 080 weights). ``--backend pyro`` runs the Pyro twin:
the same network as a ``torch.nn.Module`` through ``ppl_hw.pyro.bnn.bayesian``, Pyro's
``AutoMeanKL`` and ``ppl_hw.pyro.handlers.crossbar``.

    python examples/lenet5_mnist.py --data mnist:~/data/mnist            # full size
    python examples/lenet5_mnist.py --data cifar10:~/data/cifar-10-batches-py
    python examples/lenet5_mnist.py --data mnist:PATH --smoke            # the tests
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from ppl_hw import datasets, devices

DATA = {
    "mnist": datasets.load_mnist,
    "fashion_mnist": datasets.load_fashion_mnist,
    "cifar10": datasets.load_cifar10,
}
TIMES = {"1 h": 3600.0, "1 day": 86_400.0, "1 year": 31_536_000.0}
INIT_RADIUS = 0.01  # initial means of the weights, uniform in [-r, r]
# Havasi, Peharz & Hernández-Lobato (ICLR 2019), LeNet-5 on MNIST (docs/reproductions)
ANCHOR = dict(size_bytes=1520, test_error=0.0096, num_weights=431_080)
SIZES = {
    "smoke": dict(
        steps=20,
        batch_size=32,
        lr=1e-3,
        kl_bits=2000,
        bits_per_block=8,
        chips=1,
        times=["1 year"],
        max_train=256,
        max_test=128,
        eval_batch=128,
    ),
    "full": dict(
        steps=20_000,
        batch_size=128,
        lr=1e-3,
        kl_bits=8 * ANCHOR["size_bytes"],
        bits_per_block=16,
        chips=3,
        times=list(TIMES),
        max_train=None,
        max_test=None,
        eval_batch=1000,
    ),
}


def parse_data(spec: str) -> tuple[str, Path]:
    """``"mnist:PATH"`` -> ``("mnist", Path(PATH))``."""
    kind, sep, path = spec.partition(":")
    kind = kind.lower().replace("-", "_")
    if not sep or not path or kind not in DATA:
        raise argparse.ArgumentTypeError(
            f"--data must be KIND:PATH with KIND one of {sorted(DATA)}, got {spec!r}"
        )
    return kind, Path(path).expanduser()


def lenet5():
    """LeNet-5-Caffe as a flax linen module (NHWC images, 10 logits)."""
    import flax.linen as nn

    def scaled(x, fan_in):
        return x / math.sqrt(fan_in)

    class LeNet5(nn.Module):
        @nn.compact
        def __call__(self, x):
            x = nn.Conv(20, (5, 5), padding="VALID")(scaled(x, 25 * x.shape[-1]))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = nn.Conv(50, (5, 5), padding="VALID")(scaled(x, 25 * 20))
            x = nn.max_pool(x, (2, 2), strides=(2, 2))
            x = x.reshape(x.shape[0], -1)
            x = nn.relu(nn.Dense(500)(scaled(x, x.shape[-1])))
            return nn.Dense(10)(scaled(x, 500))

    return LeNet5()


def torch_lenet5(channels: int, side: int):
    """The same LeNet-5-Caffe as a ``torch.nn.Module`` (NCHW images)."""
    import torch
    import torch.nn.functional as F

    flat = 50 * (((side - 4) // 2 - 4) // 2) ** 2

    class LeNet5(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = torch.nn.Conv2d(channels, 20, 5)
            self.conv2 = torch.nn.Conv2d(20, 50, 5)
            self.fc1 = torch.nn.Linear(flat, 500)
            self.fc2 = torch.nn.Linear(500, 10)

        def forward(self, x):
            x = F.max_pool2d(self.conv1(x / math.sqrt(25 * channels)), 2)
            x = F.max_pool2d(self.conv2(x / math.sqrt(25 * 20)), 2)
            x = F.relu(self.fc1(x.flatten(1) / math.sqrt(flat)))
            return self.fc2(x / math.sqrt(500))

    return LeNet5()


def load(kind: str, path: Path, size: dict, layout: str) -> datasets.Split:
    data = DATA[kind](path, layout=layout)
    n_tr, n_te = size["max_train"], size["max_test"]
    return datasets.Split(
        data.x_train[:n_tr], data.y_train[:n_tr], data.x_test[:n_te], data.y_test[:n_te]
    )


def minibatches(n: int, b: int, steps: int, seed: int):
    """``steps`` index arrays of ``b`` examples: epochs of a seeded permutation."""
    rng = np.random.default_rng(seed)
    order, pos = rng.permutation(n), 0
    for _ in range(steps):
        if pos + b > n:
            order, pos = rng.permutation(n), 0
        yield order[pos : pos + b]
        pos += b


def numpyro_backend(data: datasets.Split, size: dict, seed: int) -> SimpleNamespace:
    """Build and train the NumPyro model; the pieces the study needs."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro import handlers
    from numpyro.infer import SVI, TraceMeanField_ELBO, init_to_uniform

    from ppl_hw.numpyro.autoguide import AutoMeanKL
    from ppl_hw.numpyro.bnn import bayesian
    from ppl_hw.numpyro.handlers import crossbar

    n_train = data.x_train.shape[0]
    shape = (1, *data.x_train.shape[1:])
    model = bayesian(
        lenet5(), dist.Normal(0.0, 1.0), likelihood="categorical", input_shape=shape
    )
    guide = AutoMeanKL(
        model,
        kl_budget_bits=size["kl_bits"],
        budget_split="blocks",
        bits_per_block=size["bits_per_block"],
        block_seed=seed,
        # means start near the prior's: each block's few bits could not hold
        # AutoMeanKL's default initial means (uniform in [-1, 1]) of 431 080 weights
        init_loc_fn=init_to_uniform(radius=INIT_RADIUS),
    )
    svi = SVI(model, guide, numpyro.optim.Adam(size["lr"]), TraceMeanField_ELBO())
    b = min(size["batch_size"], n_train)
    x_tr, y_tr = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    seconds, t0 = {}, time.perf_counter()
    state = svi.init(jax.random.PRNGKey(seed), x_tr[:b], y_tr[:b], num_data=n_train)
    seconds["setup"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    update = jax.jit(lambda s, xb, yb: svi.update(s, xb, yb, num_data=n_train))
    losses = []
    for idx in minibatches(n_train, b, size["steps"], seed):
        state, loss = update(state, x_tr[idx], y_tr[idx])
        losses.append(float(loss))
    params = svi.get_params(state)
    seconds["train"] = time.perf_counter() - t0

    def logits_fn(fn):
        run = jax.jit(
            lambda w, xb, k: handlers.trace(
                handlers.substitute(handlers.seed(fn, k), data=w)
            ).get_trace(xb)["logits"]["value"]
        )
        calls = iter(range(2**31))  # a fresh key (read noise) for every batch

        def logits(weights, xb):
            key = jax.random.fold_in(jax.random.PRNGKey(seed + 1), next(calls))
            return np.asarray(run(weights, jnp.asarray(xb), key))

        return logits

    return SimpleNamespace(
        name="numpyro",
        model=model,
        guide=guide,
        params=params,
        sites=list(model.site_names()),
        kl_nats=float(guide.kl(params)[0]),
        losses=losses,
        seconds=seconds,
        mean_weights=guide.median(params),
        logits_fn=logits_fn,
        crossbar=crossbar,
    )


def pyro_backend(data: datasets.Split, size: dict, seed: int) -> SimpleNamespace:
    """The Pyro twin: the torch LeNet-5 through ``ppl_hw.pyro.bnn.bayesian``."""
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro import poutine
    from pyro.infer import SVI, TraceMeanField_ELBO
    from pyro.infer.autoguide.initialization import init_to_uniform

    from ppl_hw.pyro.autoguide import AutoMeanKL
    from ppl_hw.pyro.bnn import bayesian
    from ppl_hw.pyro.handlers import crossbar

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    n_train, channels, side = data.x_train.shape[:3]
    model = bayesian(
        torch_lenet5(channels, side),
        dist.Normal(torch.tensor(0.0), 1.0),
        likelihood="categorical",
    )
    guide = AutoMeanKL(
        model,
        kl_budget_bits=size["kl_bits"],
        budget_split="blocks",
        bits_per_block=size["bits_per_block"],
        block_seed=seed,
        init_loc_fn=lambda site: init_to_uniform(site, radius=INIT_RADIUS),
    )
    svi = SVI(model, guide, pyro.optim.Adam({"lr": size["lr"]}), TraceMeanField_ELBO())
    b = min(size["batch_size"], n_train)
    x_tr, y_tr = torch.as_tensor(data.x_train), torch.as_tensor(data.y_train)
    seconds, t0 = {}, time.perf_counter()
    losses = []
    for i, idx in enumerate(minibatches(n_train, b, size["steps"], seed)):
        idx = torch.as_tensor(idx)
        losses.append(svi.step(x_tr[idx], y_tr[idx], num_data=n_train))
        if i == 0:
            seconds["setup"] = time.perf_counter() - t0
    seconds["train"] = time.perf_counter() - t0 - seconds.get("setup", 0.0)

    def logits_fn(fn):
        def logits(weights, xb):
            with torch.no_grad():
                run = poutine.condition(fn, data=weights)
                tr = poutine.trace(run).get_trace(torch.as_tensor(xb))
            return tr.nodes["logits"]["value"].numpy()

        return logits

    with torch.no_grad():
        kl_nats = float(guide.kl()[0])
        mean_weights = {k: v.detach() for k, v in guide.median().items()}
    return SimpleNamespace(
        name="pyro",
        model=model,
        guide=guide,
        params=None,
        sites=list(model.site_names()),
        kl_nats=kl_nats,
        losses=losses,
        seconds=seconds,
        mean_weights=mean_weights,
        logits_fn=logits_fn,
        crossbar=crossbar,
    )


def study(
    kind: str, path: Path, size: dict, seed: int, outdir: Path, backend: str
) -> dict:
    from ppl_hw.coding import CompressedModel, decode, encode

    layout = "NHWC" if backend == "numpyro" else "NCHW"
    data = load(kind, path, size, layout)
    make = numpyro_backend if backend == "numpyro" else pyro_backend
    net = make(data, size, seed)
    seconds = dict(net.seconds)

    def error_of(weights, logits):
        """Test error of one network (``weights``), in batches."""
        wrong = 0
        for start in range(0, len(data.x_test), size["eval_batch"]):
            xb = data.x_test[start : start + size["eval_batch"]]
            pred = np.argmax(logits(weights, xb), -1)
            wrong += int(np.sum(pred != data.y_test[start : start + len(pred)]))
        return wrong / len(data.x_test)

    t0 = time.perf_counter()
    off_chip = net.logits_fn(net.model)
    mean_error = error_of(net.mean_weights, off_chip)
    seconds["evaluate"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    compressed = encode(net.guide, net.params)
    seconds["encode"] = time.perf_counter() - t0
    coded = outdir / f"lenet5_{backend}.mrc"
    compressed.save(coded)
    decoded = decode(CompressedModel.load(coded), backend=backend)
    direct = decode(compressed)
    assert all(np.array_equal(direct[n], np.asarray(decoded[n])) for n in direct)
    report = compressed.report()
    assert report["file_bytes"] == coded.stat().st_size
    decoded_error = error_of(decoded, off_chip)

    t0 = time.perf_counter()
    pcm = []
    for label in size["times"]:
        errors = []
        for chip in range(size["chips"]):
            on_chip = net.crossbar(
                net.model, device=devices.PCM(), t_inference=TIMES[label], seed=chip
            )
            errors.append(error_of(decoded, net.logits_fn(on_chip)))
        pcm.append(
            dict(
                time=label,
                seconds=TIMES[label],
                errors=errors,
                error_mean=float(np.mean(errors)),
                error_sd=float(np.std(errors)),
            )
        )
    seconds["pcm"] = time.perf_counter() - t0
    return dict(
        data=kind,
        path=str(path),
        backend=backend,
        size=size,
        seed=seed,
        num_train=int(data.x_train.shape[0]),
        num_test=len(data.x_test),
        image_shape=list(data.x_train.shape[1:]),
        sites=net.sites,
        kl_bits=net.kl_nats / math.log(2),
        final_loss=float(np.mean(net.losses[-10:])),
        posterior_mean_error=mean_error,
        decoded_error=decoded_error,
        index_bytes=report["total_bits"] / 8,
        **report,
        pcm=pcm,
        anchor=dict(ANCHOR, source="Havasi et al. 2019, LeNet-5 on MNIST"),
        seconds=seconds,
    )


def figure(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    t = [r["seconds"] for r in res["pcm"]]
    ax.errorbar(
        t,
        [100 * r["error_mean"] for r in res["pcm"]],
        yerr=[100 * r["error_sd"] for r in res["pcm"]],
        marker="o",
        label="decoded network on PCM (mean ± sd over chips)",
    )
    ax.axhline(100 * res["decoded_error"], color="C1", ls="--", label="decoded, exact")
    ax.axhline(
        100 * res["posterior_mean_error"], color="C2", ls=":", label="posterior mean"
    )
    ax.set_xscale("log")
    ax.set_xlabel("time since programming (s)")
    ax.set_ylabel("test error (%)")
    ax.set_title(
        f"LeNet-5 on {res['data']}: {res['file_bytes']} B coded "
        f"({res['total_bits']} bits)",
        fontsize=9,
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--data",
        type=parse_data,
        required=True,
        help="KIND:PATH, KIND one of mnist, fashion_mnist, cifar10",
    )
    p.add_argument("--smoke", action="store_true", help="tiny size, for the tests")
    p.add_argument("--backend", choices=("numpyro", "pyro"), default="numpyro")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, help="override the training steps")
    p.add_argument("--kl-bits", type=int, help="override the KL budget (bits)")
    p.add_argument("--chips", type=int, help="override the number of PCM chips")
    p.add_argument("--output", type=Path, default=Path("examples/output/lenet5"))
    args = p.parse_args(argv)
    size = dict(SIZES["smoke" if args.smoke else "full"])
    for key in ("steps", "kl_bits", "chips"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    kind, path = args.data
    start = time.perf_counter()
    args.output.mkdir(parents=True, exist_ok=True)
    res = study(kind, path, size, args.seed, args.output, args.backend)
    res["seconds"]["total"] = time.perf_counter() - start
    name = f"results_{args.backend}.json"
    (args.output / name).write_text(json.dumps(res, indent=2) + "\n")
    figure(res, args.output / f"lenet5_{args.backend}.png")
    a = ANCHOR
    print(
        f"LeNet-5 ({args.backend}) on {kind} ({res['num_train']} train / "
        f"{res['num_test']} test, "
        f"{res['num_weights']} weights), {res['seconds']['total']:.0f} s"
    )
    print("| | coded size | test error |")
    print("|---|---:|---:|")
    print(
        f"| Havasi et al. 2019 (MNIST, {a['num_weights']} weights) "
        f"| {a['size_bytes']} B | {100 * a['test_error']:.2f} % |"
    )
    print(
        f"| ours, decoded ({res['total_bits']} bits, {res['bits_per_weight']:.4f} "
        f"bits/weight, {res['compression_ratio']:.0f}x) | {res['index_bytes']:.0f} B "
        f"of indices, {res['file_bytes']} B file | {100 * res['decoded_error']:.2f} % |"
    )
    mean_error = 100 * res["posterior_mean_error"]
    print(f"| ours, posterior mean (not coded) | — | {mean_error:.2f} % |")
    for r in res["pcm"]:
        print(
            f"| ours, decoded on PCM after {r['time']} ({len(r['errors'])} chips) "
            f"| — | {100 * r['error_mean']:.2f} ± {100 * r['error_sd']:.2f} % |"
        )
    print(f"written to {args.output.resolve()}")
    return res


if __name__ == "__main__":
    main()
