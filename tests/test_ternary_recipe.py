"""The training-recipe options of examples/ternary_pfp.py (Roth & Pernkopf's
pretraining, annealing, dropout, longer runs): dropout on PFP moments against a Monte
Carlo of the same mask, the annealed per-parameter learning rates against their closed
form, the summary statistics against NumPy/SciPy, and the ablation at smoke size (the
full size is run by hand; its numbers are in docs/reproductions.md)."""

import importlib.util
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location(
        "ternary_pfp", EXAMPLES / "ternary_pfp.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("random_input", [False, True])
def test_dropout_on_moments_matches_monte_carlo_of_the_same_mask(random_input):
    """``nn.dense(nn.dropout(x, p), W)`` on moments (ternary weights with random
    probabilities) against 40 000 draws of the inputs and weights with the mask that
    the same key draws on arrays. Each of the 8 means and 8 variances is a z-test at
    |z| < 4.5 (false alarm 6.8e-6 each, 1.1e-4 for the 16; the sd of a sample
    variance from the draws' fourth moment); the mask keeps each unit with probability
    1 - p (its count is checked against the binomial at 5 sd)."""
    from ppl_hw.numpyro import nn

    rng = np.random.default_rng(0)
    n, d_in, d_out, p, draws = 2, 60, 4, 0.3, 40_000
    q = rng.dirichlet(np.ones(3), size=(d_in, d_out))  # q(-1), q(0), q(+1)
    w_mean = q[..., 2] - q[..., 0]
    w_var = q[..., 0] + q[..., 2] - w_mean**2
    m = rng.normal(size=(n, d_in))
    v = rng.uniform(0.1, 1.0, size=(n, d_in)) if random_input else None
    key = jax.random.PRNGKey(3)
    x = nn.Moments(jnp.asarray(m), jnp.asarray(v)) if random_input else jnp.asarray(m)
    out = nn.dense(
        nn.dropout(x, p, rng_key=key),
        nn.Moments(jnp.asarray(w_mean), jnp.asarray(w_var)),
    )
    mask = np.asarray(nn.dropout(jnp.ones((n, d_in)), p, rng_key=key))
    kept = mask > 0
    assert set(np.unique(mask)) <= {0.0, np.float32(1 / (1 - p))}
    assert abs(kept.sum() - n * d_in * (1 - p)) < 5 * math.sqrt(n * d_in * p * (1 - p))

    xs = np.broadcast_to(m, (draws, n, d_in))
    if random_input:
        xs = xs + np.sqrt(v) * rng.standard_normal((draws, n, d_in))
    u = rng.uniform(size=(draws, d_in, d_out))
    ws = (u > q[..., 0] + q[..., 1]).astype(float) - (u < q[..., 0])
    ys = np.einsum("sni,sio->sno", xs * mask, ws)
    mc_mean, mc_var = ys.mean(0), ys.var(0, ddof=1)
    mu4 = ((ys - mc_mean) ** 4).mean(0)
    z_mean = (mc_mean - np.asarray(out.mean)) / np.sqrt(np.asarray(out.var) / draws)
    z_var = (mc_var - np.asarray(out.var)) / np.sqrt((mu4 - mc_var**2) / draws)
    assert np.all(np.abs(z_mean) < 4.5), z_mean
    assert np.all(np.abs(z_var) < 4.5), z_var


def test_dropout_model_without_dropout_is_the_library_model(study):
    import functools

    from numpyro import handlers

    from ppl_hw.numpyro.models import ternary_mlp_classifier

    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.normal(size=(16, 6)), jnp.float32)
    weights = {
        "w0": jnp.asarray(rng.integers(-1, 2, (6, 5)), jnp.float32),
        "w1": jnp.asarray(rng.integers(-1, 2, (5, 5)), jnp.float32),
        "w2": jnp.asarray(rng.integers(-1, 2, (5, 3)), jnp.float32),
        "b2": jnp.asarray(rng.normal(size=3), jnp.float32),
    }

    def logits(model):
        sub = handlers.substitute(handlers.seed(model, 0), data=weights)
        return np.asarray(handlers.trace(sub).get_trace(x)["logits"]["value"])

    kw = dict(hidden=(5, 5), num_classes=3)
    ours = logits(functools.partial(study.ternary_dropout_classifier, **kw))
    lib = logits(functools.partial(ternary_mlp_classifier, **kw))
    np.testing.assert_array_equal(ours, lib)
    assert ours.dtype == np.float32
    # with dropout, some units are dropped: a different network output
    dropped = logits(
        functools.partial(
            study.ternary_dropout_classifier, dropout=(0.5, 0.5, 0.5), **kw
        )
    )
    assert not np.allclose(dropped, lib)


@pytest.mark.parametrize(
    "dropout", [(0.1, 0.2), (0.1, 0.2, 1.0), (0.1, -0.1, 0.2), "0.1"]
)
def test_dropout_argument_is_checked(study, dropout):
    x = jnp.zeros((4, 6))
    with pytest.raises(ValueError, match="dropout must be None or 3 probabilities"):
        study.ternary_dropout_classifier(x, hidden=(5, 5), dropout=dropout)


def test_annealed_learning_rates_follow_the_schedule_per_parameter(study):
    """With a constant gradient, Adam's update is the learning rate itself (bias-
    corrected moments equal g and g²): the logits step by 1e-2 and the real
    parameters by 1e-3, each halved after every fifth of the run (here: every
    step, down to 1/16 at the fifth)."""
    steps = 5
    optim = study.recipe_optimizer(steps, anneal=True)
    params = {"w0_auto_logits": jnp.zeros(3), "b2_auto_loc": jnp.zeros(2)}
    state = optim.init(params)
    grads = {"w0_auto_logits": jnp.ones(3), "b2_auto_loc": jnp.ones(2)}
    update = jax.jit(lambda s: optim.update(grads, s, value=jnp.zeros(())))
    prev = params
    for t in range(steps):
        state = update(state)
        now = optim.get_params(state)
        halved = 0.5 ** (t // (steps // (study.RECIPE["halvings"] + 1)))
        for name, lr in (("w0_auto_logits", 1e-2), ("b2_auto_loc", 1e-3)):
            np.testing.assert_allclose(prev[name] - now[name], lr * halved, rtol=1e-4)
        prev = now
    # without annealing: Adam at the constant learning rate for both
    optim = study.recipe_optimizer(steps, anneal=False)
    state = optim.update(grads, optim.init(params), value=jnp.zeros(()))
    for name in params:
        np.testing.assert_allclose(
            -optim.get_params(state)[name], study.RECIPE["lr"], rtol=1e-4
        )


def test_summary_against_numpy_and_scipy(study):
    rng = np.random.default_rng(2)
    records = []
    for row in ("twin", "baseline", "+ dropout"):
        for seed in range(3):
            records.append(
                dict(
                    dataset="d",
                    row=row,
                    seed=seed,
                    steps=10,
                    accuracy=float(rng.uniform()),
                    train_accuracy=float(rng.uniform()),
                    sampled_accuracy=None if row == "twin" else float(rng.uniform()),
                    ensemble_accuracy=None,
                    sparsity=None,
                    time=1.0,
                )
            )
    s = study.summarise(records)["d"]
    acc = {
        row: np.array([r["accuracy"] for r in records if r["row"] == row])
        for row in ("twin", "baseline", "+ dropout")
    }
    assert s["twin"]["accuracy"] == pytest.approx(acc["twin"].mean())
    assert s["twin"]["accuracy_sd"] == pytest.approx(acc["twin"].std(ddof=1))
    assert "sampled_accuracy" not in s["twin"] and "vs_baseline" not in s["twin"]
    d = acc["+ dropout"] - acc["baseline"]
    t = d.mean() / (d.std(ddof=1) / math.sqrt(3))
    assert s["+ dropout"]["vs_baseline"] == pytest.approx(d.mean())
    assert s["+ dropout"]["vs_baseline_p"] == pytest.approx(2 * stats.t.sf(abs(t), 2))
    assert "| d | + dropout | 10 | 3 |" in study.recipe_table({"d": s})


@pytest.mark.slow
def test_recipe_runs_at_smoke_size(study, tmp_path):
    """The full recipe (pretrained init, annealing, dropout, the longer run) on the
    digits at a tiny size, with the pretrained twin it starts from: every record
    complete and in range, the per-seed file, the summary and the figure written."""
    import json

    res = study.main(
        [
            "--recipe",
            "--smoke",
            "--seeds",
            "0",
            "--rows",
            "full recipe",
            "--output",
            str(tmp_path),
        ]
    )
    assert [r["row"] for r in res["records"]] == ["twin, recipe", "full recipe"]
    twin, full = res["records"]
    size = study.RECIPE_SIZES["smoke"]
    steps = size["longer"] * size["steps"]["digits"]
    assert (
        twin["steps"] == size["longer"] * size["twin_steps"] and full["steps"] == steps
    )
    assert twin["dropout"] == list(study.RECIPE["twin_dropout"])
    assert full["dropout"] == list(study.RECIPE["dropout"])
    assert full["parts"] == list(study.RECIPE_PARTS)
    for r in (twin, full):
        assert 0 <= r["accuracy"] <= 1 and 0 <= r["train_accuracy"] <= 1
        assert np.isfinite(r["final_loss"])
    assert 0 <= full["sampled_accuracy"] <= 1 and 0 <= full["sparsity"] <= 1
    assert full["accuracy"] > 0.2  # above chance (0.1) after 60 steps
    saved = json.loads((tmp_path / "recipe_seed0.json").read_text())
    assert saved["records"] == res["records"]
    assert json.loads((tmp_path / "recipe.json").read_text()) == res
    assert (tmp_path / "ternary_recipe.png").stat().st_size > 10_000
