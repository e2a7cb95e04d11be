"""Pyro SGHMC with ``jit_compile=True``: the traced potential gives the eager kernel's
samples and potentials on the same seed, takes the minibatch and the EM precisions as
inputs (not constants), is traced again when EM switches the surrogate on or the model
arguments change, and keeps the non-finite check."""

import math

import numpy as np
import pyro
import pyro.distributions as dist
import pytest
import torch

from ppl_hw.pyro.distributions import SpikeAndSlab
from ppl_hw.pyro.infer import SGHMC, SpikeSlabEM

pytestmark = pytest.mark.pyro

N, D, SIGMA = 200, 3, 0.5
_rng = np.random.default_rng(0)
X = torch.tensor(_rng.normal(size=(N, D)), dtype=torch.float32)
Y = X @ torch.tensor([1.0, -2.0, 0.5]) + SIGMA * torch.tensor(
    _rng.normal(size=N), dtype=torch.float32
)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny tensors: a second intra-op thread only waits on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def regression(x, y=None, batch=None):
    w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
    with pyro.plate("data", x.shape[0], subsample_size=batch) as idx:
        obs = None if y is None else y[idx]
        pyro.sample("y", dist.Normal(x[idx] @ w, SIGMA), obs=obs)


def sparse_model(x, y=None, batch=None):
    """A small ReLU net with spike-and-slab weights (the NumPyro EM test's model)."""
    # scales from the constant N: under the tracer x.shape[0] is a traced value
    s1, s0 = 1 / math.sqrt(N * 2e-4), 1 / math.sqrt(N * 1e-2)
    ss = SpikeAndSlab(0.5, s0, s1)
    w1 = pyro.sample("w1", ss.expand([x.shape[1], 5]).to_event(2))
    b1 = pyro.sample("b1", dist.Normal(0.0, s1).expand([5]).to_event(1))
    w2 = pyro.sample("w2", ss.expand([5, 1]).to_event(2))
    b2 = pyro.sample("b2", dist.Normal(0.0, s1).expand([1]).to_event(1))
    with pyro.plate("data", N, subsample_size=batch) as idx:
        h = torch.relu(x[idx] @ w1 + b1)
        obs = None if y is None else y[idx]
        pyro.sample("y", dist.Normal((h @ w2 + b2)[:, 0], SIGMA), obs=obs)


def _sparse_data():
    rng = np.random.default_rng(1)
    x = torch.tensor(rng.normal(size=(N, 6)), dtype=torch.float32)
    # only the first two inputs matter: EM prunes the rows of the others
    y = torch.relu(x[:, 0] - x[:, 1]) + 0.3 * torch.tensor(
        rng.normal(size=N), dtype=torch.float32
    )
    return x, y


def _chain(kernel, steps, *args, seed=0, **kwargs):
    """``steps`` samples, the potential and sparsity at each step, and the kernel."""
    pyro.set_rng_seed(seed)
    kernel.setup(0, *args, **kwargs)
    z = kernel.initial_params
    zs, pes, sparsity = [], [], []
    for _ in range(steps):
        z = kernel.sample(z)
        zs.append(z)
        pes.append(kernel.potential)
        sparsity.append(kernel.sparsity)
    return zs, np.array(pes), np.array(sparsity), kernel


class _CountTraces:
    """Counts ``torch.jit.trace`` calls (monkeypatched)."""

    def __init__(self, monkeypatch):
        self.n, real = 0, torch.jit.trace

        def counting(*args, **kwargs):
            self.n += 1
            return real(*args, **kwargs)

        monkeypatch.setattr(torch.jit, "trace", counting)


def _assert_chains_equal(a, b, rtol=1e-6, atol=1e-6):
    for za, zb in zip(a[0], b[0], strict=True):
        assert za.keys() == zb.keys()
        for k in za:
            assert za[k].dtype == zb[k].dtype == torch.float32
            torch.testing.assert_close(za[k], zb[k], rtol=rtol, atol=atol)
    np.testing.assert_allclose(a[1], b[1], rtol=rtol, atol=atol)
    np.testing.assert_array_equal(a[2], b[2])


def test_jit_samples_and_potentials_equal_eager_on_the_same_seed(monkeypatch):
    count = _CountTraces(monkeypatch)
    args = (X, Y)
    eager = _chain(SGHMC(regression, step_size=2e-4), 300, *args, batch=20)
    jit = _chain(
        SGHMC(regression, step_size=2e-4, jit_compile=True), 300, *args, batch=20
    )
    # the minibatch changes every step (10 per epoch, a new permutation per epoch)
    # and the potential at step k is the eager one: the indices are an input of the
    # traced function, traced once for the whole run
    _assert_chains_equal(jit, eager)
    assert count.n == 1
    assert len(np.unique(eager[1])) == 300


def mlp_classifier(x, y=None, batch=None):
    """tanh and softmax: ops whose backward reads their saved outputs."""
    w1 = pyro.sample("w1", dist.Normal(0.0, 1.0).expand([D, 8]).to_event(2))
    w2 = pyro.sample("w2", dist.Normal(0.0, 1.0).expand([8, 3]).to_event(2))
    with pyro.plate("data", x.shape[0], subsample_size=batch) as idx:
        logits = torch.tanh(x[idx] @ w1) @ w2
        obs = None if y is None else y[idx]
        pyro.sample("y", dist.Categorical(logits=logits), obs=obs)


def test_jit_equals_eager_on_a_tanh_softmax_classifier():
    labels = (Y > 0).long() + (Y > 1).long()
    eager = _chain(SGHMC(mlp_classifier, step_size=1e-4), 100, X, labels, batch=20)
    jit = _chain(
        SGHMC(mlp_classifier, step_size=1e-4, jit_compile=True),
        100,
        X,
        labels,
        batch=20,
    )
    _assert_chains_equal(jit, eager, rtol=1e-5, atol=1e-6)


def test_minibatch_is_an_input_of_the_traced_potential():
    eager = SGHMC(regression, step_size=2e-4)
    jit = SGHMC(regression, step_size=2e-4, jit_compile=True)
    for k in (eager, jit):
        k.setup(0, X, Y, batch=20)
    z = {"w": torch.tensor([0.3, -1.0, 0.2])}
    values = []
    for idx in (torch.arange(20), torch.arange(100, 120), torch.randperm(N)[:20]):
        a, b = jit.potential_energy(z, idx), eager.potential_energy(z, idx)
        torch.testing.assert_close(a, b)
        values.append(float(a))
    assert len(set(values)) == 3


def test_em_with_jit_equals_em_without(monkeypatch):
    count = _CountTraces(monkeypatch)
    x, y = _sparse_data()

    def kernel(jit):
        em = SpikeSlabEM(every=25, warmup=50, hard_threshold=2e-3)
        return SGHMC(sparse_model, step_size=3e-5, em=em, jit_compile=jit)

    eager = _chain(kernel(False), 200, x, y, batch=50)
    jit = _chain(kernel(True), 200, x, y, batch=50)
    # EM pruned groups along the way (the masks changed between steps) and the
    # surrogate's precisions changed at every EM step: the same chain either way
    assert eager[2][-1] > 0 and len(np.unique(eager[2])) > 2
    _assert_chains_equal(jit, eager, rtol=1e-5, atol=1e-6)
    se, sj = eager[3]._state, jit[3]._state
    for field in ("lam", "mask", "pi"):
        for k in getattr(se, field):
            torch.testing.assert_close(
                getattr(sj, field)[k], getattr(se, field)[k], rtol=1e-5, atol=1e-6
            )
    # one trace before EM starts, one with the surrogate: not one per EM step
    assert count.n == 2


def test_surrogate_precisions_are_inputs_not_constants():
    x, y = _sparse_data()
    em = SpikeSlabEM(every=1, warmup=0)
    eager = SGHMC(sparse_model, step_size=1e-6, em=em)
    jit = SGHMC(sparse_model, step_size=1e-6, em=em, jit_compile=True)
    for k in (eager, jit):
        k.setup(0, x, y, batch=50)
    z, idx = jit.initial_params, torch.arange(50)
    for lam_value in (3.0, 7.0):
        lam = {k: torch.full_like(z[k], lam_value) for k in ("w1", "w2")}
        for em_on in (False, True):
            torch.testing.assert_close(
                jit.potential_energy(z, idx, lam, em_on),
                eager.potential_energy(z, idx, lam, em_on),
            )
    # the precisions reach the traced surrogate: a different lam, a different value
    lam3, lam7 = ({k: torch.full_like(z[k], v) for k in ("w1", "w2")} for v in (3, 7))
    assert float(jit.potential_energy(z, idx, lam3, True)) != float(
        jit.potential_energy(z, idx, lam7, True)
    )


def test_new_model_arguments_are_traced_again():
    kernel = SGHMC(regression, step_size=2e-4, jit_compile=True)
    eager = SGHMC(regression, step_size=2e-4)
    z, idx = {"w": torch.tensor([0.3, -1.0, 0.2])}, torch.arange(20)
    for x, y in ((X, Y), (2 * X, -Y)):
        for k in (kernel, eager):
            k.setup(0, x, y, batch=20)
        torch.testing.assert_close(
            kernel.potential_energy(z, idx), eager.potential_energy(z, idx)
        )


def test_jit_runs_under_pyro_mcmc_and_arviz():
    import arviz as az
    from pyro.infer import MCMC

    mcmc = MCMC(
        SGHMC(regression, step_size=2e-4, jit_compile=True),
        num_samples=50,
        warmup_steps=50,
        disable_progbar=True,
    )
    mcmc.run(X, Y, batch=20)
    idata = az.from_pyro(mcmc)
    assert idata.posterior["w"].shape == (1, 50, D)
    assert torch.isfinite(mcmc.get_samples()["w"]).all()


def test_a_traced_kernel_pickles_and_traces_again():
    import pickle

    kernel = SGHMC(regression, step_size=2e-4, jit_compile=True)
    kernel.setup(0, X, Y, batch=20)
    z, idx = {"w": torch.tensor([0.3, -1.0, 0.2])}, torch.arange(20)
    before = kernel.potential_energy(z, idx)
    copy = pickle.loads(pickle.dumps(kernel))
    torch.testing.assert_close(copy.potential_energy(z, idx), before)


@pytest.mark.parametrize("jit", [False, True])
def test_nonfinite_check_survives_jit(jit):
    kernel = SGHMC(regression, step_size=10.0, temperature=0.0, jit_compile=jit)
    with pytest.raises(FloatingPointError, match=r"at step \d+ in site\(s\) \['w'\]"):
        _chain(kernel, 200, X, Y)


def test_nonfinite_error_names_the_same_step_with_and_without_jit():
    messages = []
    for jit in (False, True):
        kernel = SGHMC(regression, step_size=10.0, temperature=0.0, jit_compile=jit)
        with pytest.raises(FloatingPointError) as err:
            _chain(kernel, 200, X, Y)
        messages.append(str(err.value))
    assert messages[0] == messages[1]


def test_tracer_warnings_are_shown_unless_ignored():
    def branching(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([D]).to_event(1))
        loc = x @ w if w.sum() > -100 else x @ -w  # Python control flow on a value
        with pyro.plate("data", x.shape[0]):
            pyro.sample("y", dist.Normal(loc, SIGMA), obs=y)

    z = {"w": torch.zeros(D)}
    kernel = SGHMC(branching, step_size=1e-4, jit_compile=True)
    kernel.setup(0, X, Y)
    with pytest.warns(torch.jit.TracerWarning):
        kernel.potential_energy(z)
    quiet = SGHMC(branching, step_size=1e-4, jit_compile=True, ignore_jit_warnings=True)
    quiet.setup(0, X, Y)
    quiet.potential_energy(z)  # warnings are errors in this suite


@pytest.mark.parametrize("name", ["jit_compile", "ignore_jit_warnings"])
def test_jit_flags_must_be_bools(name):
    with pytest.raises(TypeError, match=name):
        SGHMC(regression, step_size=1e-4, **{name: 1})
