"""The deployment sweep on both backends: every cell against the predictive computed
by hand from its recorded seeds, one cell recomputed alone, the summary against
NumPy, the same chip on both backends, the table's outputs and clear errors."""

import math
import sys

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pyro
import pyro.distributions as pdist
import pytest
import scipy.special
import scipy.stats
import torch
from numpyro import handlers as nh
from pyro import poutine
from pyro.infer import Predictive as PPredictive

import ppl_hw.numpyro.nn as nnn
import ppl_hw.pyro.nn as pnn
from ppl_hw import devices, metrics
from ppl_hw.common import deploy as cd
from ppl_hw.numpyro.deploy import DeploymentSweep
from ppl_hw.numpyro.deploy import deployment_sweep as nsweep
from ppl_hw.numpyro.handlers import crossbar as ncrossbar
from ppl_hw.pyro.deploy import deployment_sweep as psweep
from ppl_hw.pyro.handlers import crossbar as pcrossbar

BACKENDS = [
    pytest.param("numpyro", marks=pytest.mark.numpyro),
    pytest.param("pyro", marks=pytest.mark.pyro),
]
RNG = np.random.default_rng(0)
X = RNG.normal(size=(24, 5)).astype(np.float32)
W = RNG.normal(size=(5, 3)).astype(np.float32)
Y = np.argmax(X @ W + RNG.normal(size=(24, 3)), axis=-1)
Z = (X @ W[:, 0] + 0.3 * RNG.normal(size=24)).astype(np.float32)
TIMES = [1.0, 3600.0]
S = 6


def nmodel(x, y=None):
    w = numpyro.sample("w", ndist.Normal(0.0, 1.0).expand([5, 3]).to_event(2))
    with numpyro.plate("data", x.shape[0]):
        logits = numpyro.deterministic("logits", nnn.dense(x, w))
        numpyro.sample("y", ndist.Categorical(logits=logits), obs=y)


def pmodel(x, y=None):
    w = pyro.sample("w", pdist.Normal(0.0, 1.0).expand([5, 3]).to_event(2))
    with pyro.plate("data", x.shape[0]):
        logits = pyro.deterministic("logits", pnn.dense(x, w))
        pyro.sample("y", pdist.Categorical(logits=logits), obs=y)


def nregression(x, y=None):
    w = numpyro.sample("w", ndist.Normal(0.0, 1.0).expand([5]).to_event(1))
    with numpyro.plate("data", x.shape[0]):
        numpyro.sample("y", ndist.Normal(x @ w, 0.3), obs=y)


def pregression(x, y=None):
    w = pyro.sample("w", pdist.Normal(0.0, 1.0).expand([5]).to_event(1))
    with pyro.plate("data", x.shape[0]):
        pyro.sample("y", pdist.Normal(x @ w, 0.3), obs=y)


def ndelta(x, y=None):
    numpyro.sample("w", ndist.Delta(jnp.asarray(W)).to_event(2))


def pdelta(x, y=None):
    pyro.sample("w", pdist.Delta(torch.as_tensor(W)).to_event(2))


def nguide(x, y=None):
    loc = numpyro.param("loc", jnp.zeros(W.shape))
    numpyro.sample("w", ndist.Normal(loc, 0.5).to_event(2))


def pguide(x, y=None):
    loc = pyro.param("loc", torch.zeros(W.shape))
    pyro.sample("w", pdist.Normal(loc, 0.5).to_event(2))


def nguide_regression(x, y=None):
    loc = numpyro.param("loc", jnp.zeros(W.shape[:1]))
    numpyro.sample("w", ndist.Normal(loc, 0.5).to_event(1))


def pguide_regression(x, y=None):
    loc = pyro.param("loc", torch.zeros(W.shape[:1]))
    pyro.sample("w", pdist.Normal(loc, 0.5).to_event(1))


class Posterior:
    """A posterior of a backend (a Normal guide around ``W``), its sweep and the
    by-hand predictive of a row."""

    def __init__(self, backend, task="classification"):
        self.backend = backend
        regression = task == "regression"
        self.y = Z if regression else Y
        loc = W[:, 0] if regression else W
        if backend == "numpyro":
            self.model = nregression if regression else nmodel
            self.guide = nguide_regression if regression else nguide
            self.params = {"loc": jnp.asarray(loc)}
        else:
            self.model = pregression if regression else pmodel
            self.guide = pguide_regression if regression else pguide
            pyro.param("loc", torch.as_tensor(loc))
            self.params = None

    def sweep(self, **kw):
        kw = {"device": devices.PCM(), "times": TIMES, "num_samples": S, **kw}
        if self.backend == "numpyro":
            return nsweep(self.model, self.guide, X, self.y, params=self.params, **kw)
        return psweep(self.model, self.guide, X, self.y, **kw)

    def by_hand(self, row, device, site, rng_seed=0):
        """The site's samples of ``row``, from its recorded seeds, as the sweep's
        docstring says to compute them."""
        t, chip_seed, read_seed = row["t"], row["chip_seed"], row["read_seed"]
        sample_seed = cd.sample_seed(rng_seed)
        if self.backend == "numpyro":
            guide = nh.substitute(self.guide, data=self.params)

            def draw(key):
                tr = nh.trace(nh.seed(guide, key)).get_trace(jnp.asarray(X))
                return {"w": tr["w"]["value"]}

            keys = jax.random.split(jax.random.key(sample_seed, impl="rbg"), S)
            samples = jax.vmap(draw)(keys)
            model = self.model
            if t is not None:
                model = ncrossbar(model, device=device, t_inference=t, seed=chip_seed)

            def run(key, sample):
                seeded = nh.seed(nh.substitute(model, data=sample), key)
                return nh.trace(seeded).get_trace(jnp.asarray(X))[site]["value"]

            keys = jax.random.split(jax.random.key(read_seed, impl="rbg"), S)
            return np.asarray(jax.vmap(run)(keys, samples))
        pyro.set_rng_seed(sample_seed)
        with torch.no_grad():
            draws = [
                poutine.trace(self.guide).get_trace(torch.as_tensor(X))
                for _ in range(S)
            ]
            samples = {"w": torch.stack([tr.nodes["w"]["value"] for tr in draws])}
            model = self.model
            if t is not None:
                model = pcrossbar(model, device=device, t_inference=t, seed=chip_seed)
            pyro.set_rng_seed(read_seed)
            out = PPredictive(model, posterior_samples=samples, return_sites=[site])(
                torch.as_tensor(X)
            )[site]
        return out.reshape(S, *out.shape[-(2 if site == "logits" else 1) :]).numpy()


@pytest.mark.parametrize("backend", BACKENDS)
def test_every_cell_is_the_predictive_of_its_recorded_seeds(backend):
    post = Posterior(backend)
    device = devices.PCM()
    sweep = post.sweep(chips=2, keep_predictions=True, label="m")
    assert [(r["t"], r["chip"], r["chip_seed"]) for r in sweep.rows] == [
        (None, None, None),
        (1.0, 0, 0),
        (1.0, 1, 1),
        (3600.0, 0, 0),
        (3600.0, 1, 1),
    ]
    assert [r["device"] for r in sweep.rows] == [None] + ["PCM"] * 4
    for row, probs in zip(sweep.rows, sweep.predictions, strict=True):
        assert row["label"] == "m"
        assert row["read_seed"] == cd.read_seed(0, row["chip_seed"], row["t"])
        logits = post.by_hand(row, device, "logits").astype(np.float64)
        expected = scipy.special.softmax(logits, axis=-1).mean(axis=0)
        np.testing.assert_allclose(probs, expected, rtol=1e-12, atol=1e-15)
        assert row["accuracy"] == np.mean(expected.argmax(-1) == Y)
        assert row["nll"] == pytest.approx(
            -np.mean(np.log(expected[np.arange(Y.size), Y])), rel=1e-12
        )
        assert row["ece"] == pytest.approx(
            metrics.expected_calibration_error(expected, Y, num_bins=15), abs=1e-12
        )
    # the chips and the reads differ from cell to cell
    assert len({r["read_seed"] for r in sweep.rows}) == 5
    assert not np.array_equal(sweep.predictions[1], sweep.predictions[2])


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_cell_alone_gives_the_same_numbers(backend):
    post = Posterior(backend)
    sweep = post.sweep(chips=3, seed=5, rng_seed=7)
    row = sweep.rows[-2]  # t = 1 h, chip 1: seed 6
    assert (row["t"], row["chip"], row["chip_seed"]) == (3600.0, 1, 6)
    alone = post.sweep(
        times=[3600.0], chips=1, seed=6, rng_seed=7, include_clean=False
    ).rows
    assert len(alone) == 1
    keys = ("t", "chip_seed", "read_seed", "accuracy", "nll", "ece")
    assert {k: alone[0][k] for k in keys} == {k: row[k] for k in keys}
    # the same cell in a sweep with the times in another order
    other = post.sweep(times=[3600.0, 1.0], chips=2, seed=5, rng_seed=7)
    (again,) = [r for r in other.rows if r["t"] == 3600.0 and r["chip_seed"] == 6]
    assert {k: again[k] for k in keys} == {k: row[k] for k in keys}


@pytest.mark.parametrize("backend", BACKENDS)
def test_ideal_rows_equal_the_off_chip_row(backend):
    post = Posterior(backend)
    sweep = post.sweep(device=devices.Ideal(), chips=2, keep_predictions=True)
    clean = sweep.rows[0]
    for row, probs in zip(sweep.rows[1:], sweep.predictions[1:], strict=True):
        np.testing.assert_array_equal(probs, sweep.predictions[0])
        assert (row["accuracy"], row["nll"], row["ece"]) == (
            clean["accuracy"],
            clean["nll"],
            clean["ece"],
        )
    # slices of the inputs change nothing where the reads draw nothing
    sliced = post.sweep(
        device=devices.Ideal(), chips=1, keep_predictions=True, batch_size=10
    )
    np.testing.assert_array_equal(sliced.predictions[0], sweep.predictions[0])
    assert sliced.settings[0]["batch_size"] == 10


@pytest.mark.parametrize("backend", BACKENDS)
def test_regression_rmse_and_gaussian_nll(backend):
    post = Posterior(backend, task="regression")
    device = devices.PCM()
    sweep = post.sweep(
        task="regression", times=[3600.0], chips=1, keep_predictions=True
    )
    assert sweep.metrics == ("rmse", "nll")
    for row, pred in zip(sweep.rows, sweep.predictions, strict=True):
        s = post.by_hand(row, device, "y").astype(np.float64)
        mean, var = s.mean(axis=0), s.var(axis=0)
        np.testing.assert_allclose(pred, np.stack([mean, var]), rtol=1e-12)
        assert row["rmse"] == pytest.approx(np.sqrt(np.mean((mean - Z) ** 2)))
        expected = -scipy.stats.norm.logpdf(Z, mean, np.sqrt(var)).mean()
        assert row["nll"] == pytest.approx(expected, rel=1e-10)


def test_the_same_chip_on_both_backends():
    # a deterministic posterior (one weight matrix) on a chip without read noise:
    # what differs between two chip seeds is the chip alone
    quiet = devices.PCM(read_noise=None, out_noise=0.0)
    kw = dict(device=quiet, times=TIMES, chips=2, num_samples=2, seed=3)
    kw |= dict(keep_predictions=True)
    a = nsweep(nmodel, ndelta, X, Y, **kw)
    b = psweep(pmodel, pdelta, X, Y, **kw)
    assert [r["chip_seed"] for r in a.rows] == [None, 3, 4, 3, 4]
    for ra, rb, pa, pb in zip(
        a.rows, b.rows, a.predictions, b.predictions, strict=True
    ):
        assert (ra["t"], ra["chip_seed"], ra["read_seed"]) == (
            rb["t"],
            rb["chip_seed"],
            rb["read_seed"],
        )
        np.testing.assert_allclose(pa, pb, rtol=1e-4, atol=1e-6)
        assert ra["nll"] == pytest.approx(rb["nll"], rel=1e-4)
    # two chips are two chips
    assert not np.allclose(a.predictions[1], a.predictions[2])
    assert a.rows[0]["label"] == "function"  # the guide's class name


def _table():
    rows = []
    rng = np.random.default_rng(3)
    for label in ("a", "b"):
        rows.append(dict(label=label, device=None, t=None, chip=None, chip_seed=None))
        for t in (0.0, 60.0, 86_400.0):
            for chip in range(3):
                rows.append(dict(label=label, device="PCM", t=t, chip=chip))
    for r in rows:
        r |= dict(accuracy=rng.uniform(), nll=rng.uniform(), ece=rng.uniform())
    return DeploymentSweep(rows)


def test_summary_is_numpys_mean_and_sd():
    sweep = _table()
    summary = sweep.summary()
    assert [(g["label"], g["t"], g["n"]) for g in summary] == [
        (label, t, n)
        for label in ("a", "b")
        for t, n in ((None, 1), (0.0, 3), (60.0, 3), (86_400.0, 3))
    ]
    for g in summary:
        for m in ("accuracy", "nll", "ece"):
            values = [
                r[m]
                for r in sweep.rows
                if (r["label"], r["device"], r["t"])
                == (g["label"], g["device"], g["t"])
            ]
            assert g[f"{m}_mean"] == np.mean(values)
            if len(values) > 1:
                assert g[f"{m}_sd"] == np.std(values, ddof=1)
            else:
                assert math.isnan(g[f"{m}_sd"])


def test_table_outputs():
    sweep = _table()
    frame = sweep.to_pandas()
    assert frame.shape == (20, 8) and list(frame["label"].unique()) == ["a", "b"]
    assert str(frame["chip"].dtype) == "Int64" and frame["chip"].isna().sum() == 2
    assert sweep.to_pandas(summary=True).shape == (8, 10)
    text = str(sweep)
    assert text == sweep.format()
    assert (
        text.splitlines()[0] == "| method | device | t | chips | accuracy | NLL | ECE |"
    )
    g = sweep.summary()[2]  # a, 1 min
    acc = f"{100 * g['accuracy_mean']:.1f} ± {100 * g['accuracy_sd']:.1f} %"
    assert f"| a | PCM | 1 min | 3 | {acc} |" in text
    assert "| a | — | off-chip | — |" in text
    # pyplot-free figure: error bars over the chips, the off-chip line, symlog (t = 0)
    ax = sweep.plot("nll")
    assert ax.get_xscale() == "symlog" and ax.get_ylabel() == "NLL"
    assert len(ax.containers) == 2  # one error-bar line per label
    (offchip,) = [ln for ln in ax.lines if ln.get_label() == "a off-chip"]
    assert offchip.get_ydata()[0] == sweep.summary()[0]["nll_mean"]
    on = [g for g in sweep.summary() if g["label"] == "a" and g["t"] is not None]
    bars = ax.containers[0]
    np.testing.assert_array_equal(
        bars.lines[0].get_ydata(), [g["nll_mean"] for g in on]
    )
    with pytest.raises(ValueError, match="metric must be one of"):
        sweep.plot("rmse")
    positive = DeploymentSweep([r for r in sweep.rows if r["t"] != 0.0])
    assert positive.plot().get_xscale() == "log"


def test_to_pandas_without_pandas(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match="to_pandas needs pandas"):
        _table().to_pandas()


def test_concat():
    sweep = _table()
    a = DeploymentSweep([r for r in sweep.rows if r["label"] == "a"])
    b = DeploymentSweep([r for r in sweep.rows if r["label"] == "b"])
    assert DeploymentSweep.concat([a, b]).rows == sweep.rows == (a + b).rows
    assert len(a + b) == 20 and "labels=['a', 'b']" in repr(a + b)
    regression = DeploymentSweep([dict(label="r", t=None, rmse=1.0, nll=1.0)])
    with pytest.raises(ValueError, match="one task's metrics"):
        DeploymentSweep.concat([a, regression])
    with pytest.raises(TypeError, match="concat takes DeploymentSweep"):
        DeploymentSweep.concat([a, a.rows])


def test_seeds_and_times():
    assert cd.read_seed(0, 1, 60.0) == cd.read_seed(0, 1, 60)
    assert len({cd.read_seed(0, c, t) for c in (0, 1) for t in (0.0, 1.0)}) == 4
    assert cd.read_seed(0, None, None) != cd.read_seed(1, None, None)
    assert cd.sample_seed(0) != cd.sample_seed(1)
    for t, text in [
        (None, "off-chip"),
        (0.0, "0 s"),
        (1.0, "1 s"),
        (1.5, "1.5 s"),
        (60.0, "1 min"),
        (3600.0, "1 h"),
        (86_400.0, "1 day"),
        (172_800.0, "2 days"),
        (604_800.0, "1 week"),
        (2_592_000.0, "1 month"),
        (31_536_000.0, "1 year"),
    ]:
        assert cd.format_seconds(t) == text


BAD = [
    (dict(device="PCM"), TypeError, "device must be a ppl_hw.config.Device"),
    (dict(times=3600.0), TypeError, "times must be a sequence"),
    (dict(times="1"), TypeError, "times must be a sequence"),
    (dict(times=[]), ValueError, "times must be a non-empty 1-D"),
    (dict(times=[[1.0]]), ValueError, "times must be a non-empty 1-D"),
    (dict(times=[1.0, -1.0]), ValueError, r"times\[1\] must be >= 0, got -1.0"),
    (dict(times=[math.inf]), ValueError, r"times\[0\] must be finite"),
    (dict(times=["1"]), TypeError, r"times\[0\] must be a number"),
    (dict(times=[1.0, 1]), ValueError, "times must not repeat a time"),
    (dict(chips=0), ValueError, "chips must be >= 1, got 0"),
    (dict(chips=2.0), TypeError, "chips must be an int"),
    (dict(num_samples=0), ValueError, "num_samples must be >= 1"),
    (dict(seed=-1), ValueError, "seed must be >= 0, got -1"),
    (dict(seed=2**32 - 1, chips=2), ValueError, "seed \\+ chips must be <= 2\\*\\*32"),
    (dict(rng_seed=True), TypeError, "rng_seed must be an int"),
    (dict(task="ranking"), ValueError, "task must be one of"),
    (dict(site=3), TypeError, "site must be a site name"),
    (dict(label=3), TypeError, "label must be a str"),
    (dict(include_clean="yes"), TypeError, "include_clean must be a bool"),
    (dict(keep_predictions=1), TypeError, "keep_predictions must be a bool"),
    (dict(batch_size=0), ValueError, "batch_size must be >= 1"),
    (dict(y=Y[:5]), ValueError, r"y must hold one target per input \(24\)"),
    (dict(y=Y + 0.5), ValueError, "y must be integer class labels"),
    (dict(y=np.array(["a"] * 24)), TypeError, "y must be a numeric array"),
    (dict(y=Z, task="regression", x=X[:3]), ValueError, "one target per input"),
    (dict(site="probs"), ValueError, "site 'probs' is not a site of the model"),
    (dict(y=np.full(24, 3)), ValueError, r"y must be class labels < 3 \(the classes"),
    (dict(site="w"), ValueError, r"site 'w' must hold logits of shape \(24, C\)"),
    (dict(task="regression", y=Z[:, None]), ValueError, "one value of the shape"),
    (dict(sites=["v"]), ValueError, r"unknown site name\(s\) \['v'\]"),
    (dict(sites=3), TypeError, "sites must be None"),
]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(("change", "error", "match"), BAD)
def test_bad_arguments_raise_before_any_work(backend, change, error, match):
    model = nmodel if backend == "numpyro" else pmodel
    sweep = nsweep if backend == "numpyro" else psweep

    def guide(x, y=None):
        raise AssertionError("the guide ran")

    kw = dict(device=devices.PCM(), times=TIMES, x=X, y=Y) | change
    with pytest.raises(error, match=match):
        sweep(model, guide, kw.pop("x"), kw.pop("y"), **kw)
