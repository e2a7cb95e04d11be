"""Pyro SGHMC: time per step against the torch peer ``posteriors``, a hand-written
torch loop (the floor) and the NumPyro kernel, all timed interleaved in this process
with torch on one thread.

Each candidate runs ``K`` steps per call on the same problem and the same kind of
index stream (a ``torch.randperm`` of the data per epoch, sliced into minibatches of
``B``, the Pyro kernel's own):

* ppl_hw: ``ppl_hw.pyro.infer.SGHMC(model, ...).sample``, with ``jit_compile=True``
  (the potential traced once with ``torch.jit.trace``) and without;
* posteriors: ``posteriors.sgmcmc.sghmc.build(log_posterior, lr=√ε, alpha=a/√ε)``
  (the same SGHMC update in its parameterisation) with the log posterior written with
  ``torch.distributions``; the row is skipped, saying so, when posteriors is not
  installed (``pip install posteriors``);
* hand-written: the same update and minibatch with the potential written in torch
  ops and its gradient by ``torch.autograd.grad`` (no PPL machinery: the floor);
* NumPyro: ``ppl_hw.numpyro.infer.SGHMC`` running the ``K`` steps in one jitted
  ``lax.fori_loop`` (the same regression as ``bench_sghmc.py``).

Problems: the Bayesian linear regression of ``bench_sghmc.py`` (D = 20, N = 10 000,
B = 100, Normal priors) and, in the full run, a Bayesian MLP classifier
64-H-10 (tanh, Normal(0, 1) priors, N = 1 797 like the digits, B = 100) at
H = 64, 256 and 1 024, so the table shows how the ratios move as the network's own
arithmetic grows.
"""

from __future__ import annotations

import importlib.util
import math
import warnings

from _timing import Result, compare

D, B = 20, 100
N_REG = 10_000
A = 0.1  # momentum_decay
MLP_IN, MLP_OUT, MLP_N = 64, 10, 1797


def _regression_data(n: int):
    """The data of ``bench_sghmc.py`` (same generator, same seed)."""
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, D)).astype(np.float32)
    y = (x @ rng.normal(size=D) + 0.5 * rng.normal(size=n)).astype(np.float32)
    return x, y


def _mlp_data():
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(MLP_N, MLP_IN)).astype(np.float32)
    y = rng.integers(0, MLP_OUT, size=MLP_N)
    return x, y


class _Stream:
    """The Pyro kernel's index stream: a ``torch.randperm`` per epoch, sliced."""

    def __init__(self, n: int, b: int):
        self.n, self.b, self.perm, self.pos = n, b, None, 0

    def __call__(self):
        import torch

        if self.perm is None or self.pos + self.b > self.n:
            self.perm, self.pos = torch.randperm(self.n), 0
        idx = self.perm[self.pos : self.pos + self.b]
        self.pos += self.b
        return idx


def _posteriors_module():
    """``posteriors`` when installed (its import warns about tensordict defaults;
    nothing to act on here), else ``None``."""
    if importlib.util.find_spec("posteriors") is None:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import posteriors

    return posteriors


# -- the problems: (Pyro model, its args, names and shapes of the latents, the
#    log density in torch ops) ---------------------------------------------------------


def _regression_problem():
    import pyro
    import pyro.distributions as dist
    import torch

    x, y = (torch.as_tensor(v) for v in _regression_data(N_REG))
    n = N_REG

    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        with pyro.plate("data", x.shape[0], subsample_size=B) as idx:
            pyro.sample("y", dist.Normal(x[idx] @ w, 0.5), obs=y[idx])

    def log_density(p, idx):
        """Prior + (N/B) minibatch likelihood, with torch.distributions."""
        w = p["w"]
        prior = torch.distributions.Normal(0.0, 1.0).log_prob(w).sum()
        lik = torch.distributions.Normal(x[idx] @ w, 0.5).log_prob(y[idx]).sum()
        return prior + (n / B) * lik

    def potential(p, idx):
        """The same potential in plain torch ops (constants dropped)."""
        w = p["w"]
        r = (y[idx] - x[idx] @ w) / 0.5
        return 0.5 * torch.sum(w * w) + (n / B) * 0.5 * torch.sum(r * r)

    return dict(
        model=model,
        args=(x, y),
        shapes={"w": (D,)},
        n=n,
        log_density=log_density,
        potential=potential,
        step_size=1e-3 / n,  # as bench_sghmc.py: eps x curvature (~4 N) = 0.004
    )


def _mlp_problem(hidden: int):
    import pyro
    import pyro.distributions as dist
    import torch

    x, y = (torch.as_tensor(v) for v in _mlp_data())
    n = MLP_N
    shapes = {
        "w1": (MLP_IN, hidden),
        "b1": (hidden,),
        "w2": (hidden, MLP_OUT),
        "b2": (MLP_OUT,),
    }

    def model(x, y=None):
        p = {
            k: pyro.sample(k, dist.Normal(0.0, 1.0).expand(list(s)).to_event(len(s)))
            for k, s in shapes.items()
        }
        with pyro.plate("data", x.shape[0], subsample_size=B) as idx:
            h = torch.tanh(x[idx] @ p["w1"] + p["b1"])
            pyro.sample("y", dist.Categorical(logits=h @ p["w2"] + p["b2"]), obs=y[idx])

    def logits(p, idx):
        return torch.tanh(x[idx] @ p["w1"] + p["b1"]) @ p["w2"] + p["b2"]

    def log_density(p, idx):
        prior = sum(
            torch.distributions.Normal(0.0, 1.0).log_prob(v).sum() for v in p.values()
        )
        lik = torch.distributions.Categorical(logits=logits(p, idx))
        return prior + (n / B) * lik.log_prob(y[idx]).sum()

    def potential(p, idx):
        prior = sum(0.5 * torch.sum(v * v) for v in p.values())
        nll = torch.nn.functional.cross_entropy(logits(p, idx), y[idx], reduction="sum")
        return prior + (n / B) * nll

    return dict(
        model=model,
        args=(x, y),
        shapes=shapes,
        n=n,
        log_density=log_density,
        potential=potential,
        step_size=1e-5 / n,
    )


# -- the candidates: zero-argument callables running K steps ---------------------------


def _pyro_candidate(prob: dict, k_steps: int, jit: bool):
    import pyro

    from ppl_hw.pyro.infer import SGHMC

    pyro.set_rng_seed(0)
    kernel = SGHMC(
        prob["model"], step_size=prob["step_size"], momentum_decay=A, jit_compile=jit
    )
    kernel.setup(0, *prob["args"])
    box = [kernel.initial_params]

    def call():
        z = box[0]
        for _ in range(k_steps):
            z = kernel.sample(z)
        box[0] = z

    return call


def _init_params(prob: dict) -> dict:
    """Uniform(-0.1, 0.1) starting values (the speed does not depend on them)."""
    import torch

    g = torch.Generator().manual_seed(0)
    return {
        k: (torch.rand(s, generator=g) * 2 - 1) * 0.1 for k, s in prob["shapes"].items()
    }


def _posteriors_candidate(posteriors, prob: dict, k_steps: int):
    import torch

    stream = _Stream(prob["n"], B)
    h = math.sqrt(prob["step_size"])
    log_density = prob["log_density"]
    no_aux = torch.tensor([])  # posteriors wants an auxiliary tensor tree

    def log_posterior(params, batch):
        return log_density(params, batch), no_aux

    transform = posteriors.sgmcmc.sghmc.build(log_posterior, lr=h, alpha=A / h)
    box = [transform.init(_init_params(prob), momenta=0.0)]

    def call():
        state = box[0]
        for _ in range(k_steps):
            state, _ = transform.update(state, stream())
        box[0] = state

    return call


def _hand_candidate(prob: dict, k_steps: int):
    import torch

    stream = _Stream(prob["n"], B)
    eps = prob["step_size"]
    scale = math.sqrt(2 * A * eps)
    potential = prob["potential"]
    params = _init_params(prob)
    box = [(params, {k: torch.zeros_like(v) for k, v in params.items()})]

    def call():
        w, u = box[0]
        for _ in range(k_steps):
            idx = stream()
            wg = {k: v.detach().requires_grad_(True) for k, v in w.items()}
            grads = torch.autograd.grad(potential(wg, idx), list(wg.values()))
            with torch.no_grad():
                u = {
                    k: (1 - A) * u[k] - eps * g + scale * torch.randn_like(g)
                    for k, g in zip(wg, grads, strict=True)
                }
                w = {k: w[k] + u[k] for k in w}
        box[0] = (w, u)

    return call


def _numpyro_candidate(k_steps: int):
    """The NumPyro kernel on the regression: ``k_steps`` in one jitted loop."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from jax import lax, random

    from ppl_hw.numpyro.infer import SGHMC

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        with numpyro.plate("data", x.shape[0], subsample_size=B) as idx:
            numpyro.sample("y", dist.Normal(x[idx] @ w, 0.5), obs=y[idx])

    x, y = (jnp.asarray(v) for v in _regression_data(N_REG))
    kernel = SGHMC(model, step_size=1e-3 / N_REG, momentum_decay=A)
    state = kernel.init(random.PRNGKey(0), 0, None, (x, y), {})
    run = jax.jit(
        lambda s: lax.fori_loop(
            0, k_steps, lambda i, s: kernel.sample(s, (x, y), {}), s
        )
    )
    box = [state]

    def call():
        box[0] = run(box[0])
        jax.block_until_ready(box[0].z)

    return call


# -- the rows --------------------------------------------------------------------------


def _rows(
    label: str, prob: dict, k_steps: int, reps: dict, posteriors, numpyro: bool
) -> list[Result]:
    cands = {
        "jit": _pyro_candidate(prob, k_steps, True),
        "eager": _pyro_candidate(prob, k_steps, False),
        "hand": _hand_candidate(prob, k_steps),
    }
    if posteriors is not None:
        cands["posteriors"] = _posteriors_candidate(posteriors, prob, k_steps)
    if numpyro:
        cands["numpyro"] = _numpyro_candidate(k_steps)
    t = compare(cands, **reps)
    us = {f"{k} µs": v / k_steps * 1e6 for k, v in t.items()}
    rows = []
    if posteriors is not None:
        rows.append(
            Result.of(
                f"Pyro SGHMC step (jit_compile) ÷ posteriors sgmcmc.sghmc, {label}",
                t,
                "jit",
                "posteriors",
                goal=0.5,
                details=us,
                note="1 torch thread; same index stream",
            )
        )
    rows.append(
        Result.of(
            f"Pyro SGHMC step, jit_compile ÷ eager, {label}",
            t,
            "jit",
            "eager",
            details={k: us[k] for k in ("jit µs", "eager µs")},
            note=(
                ""
                if posteriors is not None
                else "posteriors not installed: the Pyro ÷ posteriors row is skipped "
                "(pip install posteriors)"
            ),
        )
    )
    rows.append(
        Result.of(
            f"Pyro SGHMC step (jit_compile) ÷ hand-written torch step (floor), {label}",
            t,
            "jit",
            "hand",
            details={k: us[k] for k in ("jit µs", "hand µs")},
        )
    )
    if numpyro:
        for which in ("jit", "eager"):
            rows.append(
                Result.of(
                    f"Pyro ({'jit_compile' if which == 'jit' else 'eager'}) ÷ "
                    f"NumPyro SGHMC step, {label}",
                    t,
                    which,
                    "numpyro",
                    details={k: us[k] for k in (f"{which} µs", "numpyro µs")},
                    note="interleaved in one process, torch on 1 thread",
                )
            )
    return rows


def run(quick: bool = False) -> list[Result]:
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        posteriors = _posteriors_module()
        if posteriors is None:
            print(
                "bench_sghmc_pyro: posteriors is not installed; the Pyro ÷ "
                "posteriors rows are skipped (pip install posteriors)"
            )
        if quick:
            k_steps, reps = 5, dict(repeats=3, number=1, warmup=1)
        else:
            k_steps, reps = 50, dict(repeats=9, number=2, warmup=1)
        results = _rows(
            f"regression D = {D}, N = {N_REG:,}, B = {B}",
            _regression_problem(),
            k_steps,
            reps,
            posteriors,
            numpyro=True,
        )
        if not quick:
            for hidden in (64, 256, 1024):
                results += _rows(
                    f"MLP {MLP_IN}-{hidden}-{MLP_OUT}, N = {MLP_N:,}, B = {B}",
                    _mlp_problem(hidden),
                    k_steps // 2,
                    reps,
                    posteriors,
                    numpyro=False,
                )
    finally:
        torch.set_num_threads(threads)
    return results


if __name__ == "__main__":
    for r in run():
        print(r)
