"""ppl_hw.arviz on both ArviZ lines: whichever is installed (0.23 on the pinned 3.11
stack, 1.x on the 3.13 one), ``from_dict``, ``from_guide`` and ``from_mcmc`` give that
line's object (``InferenceData`` / ``DataTree``) with the same groups, dimensions and
values, and ``az.summary``, ``az.loo`` and the trace and rank plots run on it.

References: the arrays given (exact), the samplers' own draws (exact), scipy's
normal log density (float32 rounding), and, on 0.23, ArviZ's own ``from_pyro`` on the
same Pyro run (exact: the same computation)."""

import warnings

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as ndist
import pytest
import scipy.special
import scipy.stats

from ppl_hw.arviz import arviz_major, from_dict, from_guide, from_mcmc, loo

matplotlib.use("Agg")
import arviz as az
import matplotlib.pyplot as plt

AZ1 = arviz_major() >= 1


def _is_line_object(obj):
    if AZ1:
        import xarray

        return isinstance(obj, xarray.DataTree)
    return isinstance(obj, az.InferenceData)


def _groups(obj):
    return set(obj.children) if AZ1 else set(obj.groups())


def _loo(obj):
    # a few draws of a tiny model: Pareto-k warnings are expected, not the point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return az.loo(obj)


def _elpd(loo):
    return float(loo.elpd if AZ1 else loo.elpd_loo)


def _render_trace_and_rank(obj, var_names, rank=True):
    """A trace plot and (``rank``) a rank plot of ``var_names`` on an Agg figure:
    ArviZ 0.x's ``plot_trace``/``plot_rank``, 1.x's ``plot_trace_dist``/``plot_rank``
    (whose envelope needs two chains or more)."""
    figures = []
    if AZ1:
        pcs = [az.plot_trace_dist(obj, var_names=var_names, compact=False)]
        if rank:
            pcs.append(az.plot_rank(obj, var_names=var_names))
        figures = [pc.viz["figure"].item() for pc in pcs]
    else:
        with warnings.catch_warnings():
            # ArviZ 0.23's plot_trace calls matplotlib.cbook.normalize_kwargs with a
            # dict, deprecated in matplotlib 3.11: ArviZ's to fix, nothing of ours
            warnings.filterwarnings(
                "ignore", "Passing a dict or None as alias_mapping", DeprecationWarning
            )
            axes = [az.plot_trace(obj, var_names=var_names, compact=False)]
            if rank:
                axes.append(az.plot_rank(obj, var_names=var_names))
            figures = [np.ravel(a)[0].figure for a in axes]
    for fig in figures:
        fig.canvas.draw()  # renders on Agg
        assert fig.get_axes()
        plt.close(fig)


# -- from_dict: the one place that knows the lines apart ---------------------------


def test_from_dict_gives_the_lines_object_with_the_same_dims_and_values():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(2, 5, 3)).astype(np.float32)
    ll = rng.normal(size=(2, 5, 4)).astype(np.float32)
    div = rng.random((2, 5)) < 0.3
    y = rng.normal(size=4)
    obj = from_dict(
        {
            "posterior": {"w": w},
            "sample_stats": {"diverging": div},
            "log_likelihood": {"y": ll},
            "observed_data": {"y": y},
        },
        dims={"w": ["feature"], "y": ["obs"]},
        coords={"feature": ["a", "b", "c"]},
    )
    assert _is_line_object(obj)
    assert _groups(obj) == {"posterior", "sample_stats", "log_likelihood"} | {
        "observed_data"
    }
    post = obj["posterior"]["w"]
    assert post.dims == ("chain", "draw", "feature")
    assert list(post.coords["feature"].values) == ["a", "b", "c"]
    assert post.dtype == np.float32  # float32 stays float32
    np.testing.assert_array_equal(post.values, w)
    assert obj["log_likelihood"]["y"].dims == ("chain", "draw", "obs")
    np.testing.assert_array_equal(obj["log_likelihood"]["y"].values, ll)
    np.testing.assert_array_equal(obj["sample_stats"]["diverging"].values, div)
    assert obj["observed_data"]["y"].dims == ("obs",)
    np.testing.assert_array_equal(obj["observed_data"]["y"].values, y)
    # default dims are ArviZ's <var>_dim_<i> on both lines
    plain = from_dict({"posterior": {"w": w}})
    assert plain["posterior"]["w"].dims == ("chain", "draw", "w_dim_0")


@pytest.mark.parametrize(
    ("groups", "error", "match"),
    [
        ([1], TypeError, r"groups must be a dict"),
        ({}, ValueError, r"at least one group"),
        (
            {"posterier": {"w": np.zeros((1, 2))}},
            ValueError,
            r"unknown group 'posterier'",
        ),
        ({"posterior": [1, 2]}, TypeError, r"groups\['posterior'\] must be a dict"),
        (
            {"posterior": {1: np.zeros((1, 2))}},
            TypeError,
            r"variable names must be str",
        ),
        (
            {"posterior": {"w": np.zeros(3)}},
            ValueError,
            r"\['w'\].*\(chain, draw\).*\(3,\)",
        ),
        ({"posterior": {"w": [object()]}}, TypeError, r"\['w'\] must be a numeric"),
    ],
)
def test_from_dict_refuses_bad_groups(groups, error, match):
    with pytest.raises(error, match=match):
        from_dict(groups)


def test_from_dict_and_from_mcmc_refuse_bad_options():
    with pytest.raises(TypeError, match=r"dims must be a dict or None, got \['w'\]"):
        from_dict({"posterior": {"w": np.zeros((1, 2))}}, dims=["w"])
    with pytest.raises(TypeError, match=r"coords must be a dict or None, got 3"):
        from_dict({"posterior": {"w": np.zeros((1, 2))}}, coords=3)
    with pytest.raises(TypeError, match=r"log_likelihood must be a bool, got 1"):
        from_mcmc(object(), log_likelihood=1)
    with pytest.raises(TypeError, match=r"numpyro.infer.MCMC or pyro.infer.MCMC.*got"):
        from_mcmc(object())
    mcmc = numpyro.infer.MCMC(numpyro.infer.NUTS(_model), num_warmup=1, num_samples=1)
    with pytest.raises(ValueError, match=r"mcmc has not been run"):
        from_mcmc(mcmc)


def test_loo_where_a_log_likelihood_tail_is_constant():
    # a confidently classified image has log likelihood exactly 0 at every draw:
    # ArviZ 1.x's az.loo raises on it, ppl_hw.arviz.loo gives 0.x's treatment
    rng = np.random.default_rng(1)
    ll = rng.normal(-1.0, 0.1, size=(2, 200, 5))
    ll[..., 0] = 0.0  # the same at every draw
    ll[..., 3] = np.where(rng.random((2, 200)) < 0.5, -0.5, -2.0)  # two values
    post = {"w": rng.normal(size=(2, 200))}
    obj = from_dict({"posterior": post, "log_likelihood": {"y": ll}})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # k = inf: ArviZ warns, rightly
        result = loo(obj, pointwise=True)
        varying = [1, 2, 4]
        ref = az.loo(
            from_dict({"posterior": post, "log_likelihood": {"y": ll[..., varying]}}),
            pointwise=True,
        )
    elpd_i = np.asarray(result.elpd_i if AZ1 else result.loo_i)
    k = np.asarray(result.pareto_k)
    # no Pareto fit on a constant tail: k = inf and the raw importance ratios 1 / p,
    # whose self-normalised estimate of p(y_i | y_-i) is the harmonic mean of p
    np.testing.assert_array_equal(k[[0, 3]], np.inf)
    s = ll.shape[0] * ll.shape[1]
    for j in (0, 3):
        harmonic = np.log(s) - scipy.special.logsumexp(-ll[..., j])
        np.testing.assert_allclose(elpd_i[j], harmonic, rtol=1e-12, atol=1e-12)
    assert elpd_i[0] == 0.0
    # every other observation: ArviZ's own PSIS, as without the constant ones
    ref_i = np.asarray(ref.elpd_i if AZ1 else ref.loo_i)
    np.testing.assert_allclose(elpd_i[varying], ref_i, rtol=1e-10)
    np.testing.assert_allclose(k[varying], np.asarray(ref.pareto_k), rtol=1e-10)
    np.testing.assert_allclose(_elpd(result), elpd_i.sum(), rtol=1e-12)


# The groups ppl_hw.pyro's from_mcmc built from a Pyro run (NUTS on _pyro_model with
# pyro.set_rng_seed(0), 10 warm-up steps, 4 draws), kept as arrays so that the DataTree
# step of the Pyro conversion is tested on ArviZ 1.x, where torch is not installed;
# test_pyro_groups_of_the_recorded_run_are_reproduced checks them against a new run.
_Y = np.array([0.3, -1.2, 0.8], np.float32)
_PYRO_RUN = {
    "posterior": {
        "mu": np.array(
            [
                [
                    -0.0104043148458004,
                    -0.12825487554073334,
                    -0.17081280052661896,
                    -0.21184377372264862,
                ]
            ],
            np.float32,
        )
    },
    "sample_stats": {"diverging": np.zeros((1, 4), bool)},
    "observed_data": {"y": _Y},
    "log_likelihood": {
        "y": np.array(
            [
                [
                    [-0.9671139717102051, -1.6265075206756592, -1.2473161220550537],
                    [-1.0106396675109863, -1.4932572841644287, -1.3497670888900757],
                    [-1.029770851135254, -1.4485516548156738, -1.3901772499084473],
                    [-1.0499305725097656, -1.4071649312973022, -1.4308524131774902],
                ]
            ],
            np.float32,
        )
    },
}


def test_the_pyro_conversion_builds_the_lines_object_of_a_recorded_run():
    obj = from_dict(_PYRO_RUN)
    assert _is_line_object(obj)
    mu = _PYRO_RUN["posterior"]["mu"]
    np.testing.assert_array_equal(obj["posterior"]["mu"].values, mu)
    # the recorded log likelihood is the normal log density at each draw
    ref = scipy.stats.norm(mu[..., None].astype(np.float64), 1.0).logpdf(_Y)
    ll = obj["log_likelihood"]["y"]
    assert ll.dims == ("chain", "draw", "y_dim_0")
    np.testing.assert_allclose(ll.values, ref, rtol=1e-6)
    assert not obj["sample_stats"]["diverging"].values.any()
    # (four draws are too few for az.loo's Pareto smoothing on ArviZ 1.x)
    assert list(az.summary(obj, kind="stats").index) == ["mu"]


# -- from_mcmc on NumPyro ------------------------------------------------------------


def _model(y=None):
    mu = numpyro.sample("mu", ndist.Normal(0.0, 1.0))
    with numpyro.plate("n", 3):
        numpyro.sample("y", ndist.Normal(mu, 1.0), obs=y)


@pytest.fixture(scope="module")
def numpyro_mcmc():
    # HMC with a fixed trajectory: NUTS's tree building takes far longer to compile
    mcmc = numpyro.infer.MCMC(
        numpyro.infer.HMC(_model, num_steps=4, trajectory_length=None),
        num_warmup=100,
        num_samples=100,
        num_chains=2,
        chain_method="vectorized",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(0), jnp.asarray(_Y))
    return mcmc


def test_from_mcmc_numpyro_posterior_log_likelihood_and_diagnostics(numpyro_mcmc):
    obj = from_mcmc(numpyro_mcmc)
    assert _is_line_object(obj)
    assert _groups(obj) >= {"posterior", "sample_stats", "log_likelihood"} | {
        "observed_data"
    }
    mu = np.asarray(numpyro_mcmc.get_samples(group_by_chain=True)["mu"])
    np.testing.assert_array_equal(obj["posterior"]["mu"].values, mu)
    ref = scipy.stats.norm(mu[..., None].astype(np.float64), 1.0).logpdf(_Y)
    ll = obj["log_likelihood"]["y"]
    assert ll.dims == ("chain", "draw", "n")  # named after the plate, on both lines
    np.testing.assert_allclose(ll.values, ref, rtol=1e-5)
    assert obj["sample_stats"]["diverging"].shape == (2, 100)
    np.testing.assert_array_equal(obj["observed_data"]["y"].values, _Y)
    summary = az.summary(obj)
    assert list(summary.index) == ["mu"]
    assert {"ess_bulk", "r_hat"} <= set(summary.columns)
    assert np.isfinite(_elpd(_loo(obj)))
    _render_trace_and_rank(obj, ["mu"])
    # without the log likelihood (ArviZ 1.x's own default is off, 0.x's on)
    assert "log_likelihood" not in _groups(
        from_mcmc(numpyro_mcmc, log_likelihood=False)
    )


# -- from_guide ---------------------------------------------------------------------


def test_from_guide_summary_loo_and_plots_on_this_line():
    guide = numpyro.infer.autoguide.AutoNormal(_model)
    # parameters set by hand (AutoNormal's names): the conversion is under test
    params = {"mu_auto_loc": jnp.array(0.3), "mu_auto_scale": jnp.array(0.5)}
    obj = from_guide(_model, guide, params, jnp.asarray(_Y), num_samples=200)
    assert _is_line_object(obj)
    assert _groups(obj) == {
        "posterior",
        "posterior_predictive",
        "log_likelihood",
        "observed_data",
    }
    mu = obj["posterior"]["mu"].values
    assert mu.shape == (1, 200)
    ref = scipy.stats.norm(mu[..., None].astype(np.float64), 1.0).logpdf(_Y)
    np.testing.assert_allclose(obj["log_likelihood"]["y"].values, ref, rtol=1e-5)
    assert obj["posterior_predictive"]["y"].shape == (1, 200, 3)
    assert list(az.summary(obj, kind="stats").index) == ["mu"]
    assert np.isfinite(_elpd(_loo(obj)))
    _render_trace_and_rank(obj, ["mu"], rank=False)  # one "chain" of guide draws


# -- from_mcmc on Pyro (torch: the pinned 3.11 stack) ------------------------------


def _pyro_model(y):
    import pyro
    import pyro.distributions as pdist

    mu = pyro.sample("mu", pdist.Normal(0.0, 1.0))
    with pyro.plate("n", 3):
        pyro.sample("y", pdist.Normal(mu, 1.0), obs=y)


def _pyro_mcmc(kernel, num_samples, warmup, *args, **kwargs):
    import pyro
    from pyro.infer import MCMC

    pyro.set_rng_seed(0)
    mcmc = MCMC(
        kernel, num_samples=num_samples, warmup_steps=warmup, disable_progbar=True
    )
    mcmc.run(*args, **kwargs)
    return mcmc


def _assert_same_as_from_pyro(mcmc, obj):
    """``obj`` holds what ArviZ 0.x's ``from_pyro`` gives for ``mcmc``: the same
    groups, variables, dimensions, dtypes and values (exactly: the same
    computation)."""
    ref = az.from_pyro(mcmc)
    assert set(ref.groups()) == set(obj.groups())
    for group in ref.groups():
        assert set(ref[group].data_vars) == set(obj[group].data_vars), group
        for name in ref[group].data_vars:
            a, b = ref[group][name], obj[group][name]
            assert a.dims == b.dims and a.dtype == b.dtype, (group, name)
            np.testing.assert_array_equal(a.values, b.values)


@pytest.mark.pyro
def test_pyro_groups_of_the_recorded_run_are_reproduced():
    import torch
    from pyro.infer import NUTS

    from ppl_hw.pyro.arviz import _mcmc_groups

    mcmc = _pyro_mcmc(NUTS(_pyro_model), 4, 10, torch.as_tensor(_Y))
    groups = _mcmc_groups(mcmc, True)
    assert set(groups) == set(_PYRO_RUN)
    for group, variables in _PYRO_RUN.items():
        for name, value in variables.items():
            # the same seed on the pinned stack: equal up to float rounding
            np.testing.assert_allclose(groups[group][name], value, rtol=1e-5)


@pytest.mark.pyro
@pytest.mark.skipif(AZ1, reason="ArviZ 1.x has no from_pyro to compare with")
def test_pyro_from_mcmc_equals_arviz_from_pyro_for_nuts_hmc_and_sghmc():
    import torch
    from pyro.infer import HMC, NUTS

    from ppl_hw.pyro.infer import SGHMC

    y = torch.as_tensor(_Y)
    nuts = _pyro_mcmc(NUTS(_pyro_model), 50, 50, y)
    _assert_same_as_from_pyro(nuts, from_mcmc(nuts))
    # HMC with too large a step: some draws diverge, and diverging says which
    hmc = HMC(_pyro_model, step_size=1.2, num_steps=3, adapt_step_size=False)
    hmc = _pyro_mcmc(hmc, 30, 0, y)
    obj = from_mcmc(hmc)
    _assert_same_as_from_pyro(hmc, obj)
    assert 0 < obj.sample_stats["diverging"].values.sum() < 30
    # ppl_hw's SGHMC on a full-data model: posterior, diverging, log likelihood
    sghmc = _pyro_mcmc(SGHMC(_pyro_model, step_size=1e-2), 100, 50, y)
    obj = from_mcmc(sghmc)
    _assert_same_as_from_pyro(sghmc, obj)
    assert set(obj.groups()) == {
        "posterior",
        "sample_stats",
        "log_likelihood",
        "observed_data",
    }
    assert not obj.sample_stats["diverging"].values.any()  # no accept step
    assert list(az.summary(obj).index) == ["mu"]
    _render_trace_and_rank(obj, ["mu"])


@pytest.mark.pyro
def test_pyro_from_mcmc_on_a_subsampled_plate_gives_posterior_and_stats_only():
    import pyro
    import pyro.distributions as pdist
    import torch

    from ppl_hw.pyro.infer import SGHMC

    def model(y, batch=None):
        mu = pyro.sample("mu", pdist.Normal(0.0, 1.0))
        with pyro.plate("n", len(y), subsample_size=batch) as idx:
            pyro.sample("y", pdist.Normal(mu, 1.0), obs=y[idx])

    mcmc = _pyro_mcmc(
        SGHMC(model, step_size=1e-2), 40, 10, torch.as_tensor(_Y), batch=2
    )
    obj = from_mcmc(mcmc)
    assert _groups(obj) == {"posterior", "sample_stats"}
    np.testing.assert_array_equal(
        obj["posterior"]["mu"].values, mcmc.get_samples(group_by_chain=True)["mu"]
    )
    if not AZ1:
        _assert_same_as_from_pyro(mcmc, obj)


@pytest.mark.pyro
def test_pyro_from_mcmc_replays_a_model_that_does_not_vectorize():
    # x @ w fails under Pyro's vectorized trace (w gains a batch axis): from_pyro
    # drops the log likelihood with a warning; from_mcmc replays the model per draw
    import pyro
    import pyro.distributions as pdist
    import torch
    from pyro.infer import NUTS

    x = torch.tensor([[1.0, 0.5], [0.2, -1.0], [-0.7, 0.3]])

    def model(x, y):
        w = pyro.sample("w", pdist.Normal(0.0, 1.0).expand([2]).to_event(1))
        with pyro.plate("n", 3):
            pyro.sample("y", pdist.Normal(x @ w, 1.0), obs=y)

    mcmc = _pyro_mcmc(NUTS(model), 20, 20, x, torch.as_tensor(_Y))
    obj = from_mcmc(mcmc)
    w = obj["posterior"]["w"].values.astype(np.float64)  # (1, 20, 2)
    ref = scipy.stats.norm(w @ x.numpy().T.astype(np.float64), 1.0).logpdf(_Y)
    np.testing.assert_allclose(obj["log_likelihood"]["y"].values, ref, rtol=1e-5)
    if not AZ1:
        with pytest.warns(UserWarning, match="Could not get vectorized trace"):
            assert "log_likelihood" not in az.from_pyro(mcmc).groups()


@pytest.mark.pyro
def test_pyro_from_mcmc_keeps_deterministic_sites_out_of_the_observations():
    import pyro
    import pyro.distributions as pdist
    import torch
    from pyro.infer import NUTS

    def model(y):
        mu = pyro.sample("mu", pdist.Normal(0.0, 1.0))
        pyro.deterministic("mu2", 2 * mu)  # an observed site to Pyro, not data
        with pyro.plate("n", 3):
            pyro.sample("y", pdist.Normal(mu, 1.0), obs=y)

    mcmc = _pyro_mcmc(NUTS(model), 5, 5, torch.as_tensor(_Y))
    obj = from_mcmc(mcmc)
    assert list(obj["observed_data"].data_vars) == ["y"]
    assert list(obj["log_likelihood"].data_vars) == ["y"]
    if not AZ1:  # from_pyro lists mu2 as data, with a log likelihood of 0
        ref = az.from_pyro(mcmc)
        assert set(ref.observed_data.data_vars) == {"mu2", "y"}
        np.testing.assert_array_equal(
            obj.log_likelihood["y"].values, ref.log_likelihood["y"].values
        )


def _slashed_nuts(name="net/w"):
    """A NUTS run of a model whose weight site is ``name`` (with '/' as flax's
    random_flax_module names them, by default), 2 chains of 30 draws."""
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import MCMC, NUTS

    def model(x, y=None):
        w = numpyro.sample(name, dist.Normal(0.0, 1.0).expand([2]).to_event(1))
        s = numpyro.sample("sigma", dist.HalfNormal(1.0))
        with numpyro.plate("n", x.shape[0]):
            numpyro.sample("y", dist.Normal(x @ w, s), obs=y)

    x = jnp.asarray(np.linspace(-1, 1, 16, dtype=np.float32).reshape(8, 2))
    y = x @ jnp.array([0.5, -1.0])
    mcmc = MCMC(
        NUTS(model),
        num_warmup=30,
        num_samples=30,
        num_chains=2,
        chain_method="sequential",
        progress_bar=False,
    )
    mcmc.run(jax.random.PRNGKey(0), x, y)
    return mcmc


def test_numpyro_mcmc_groups_equal_arviz_from_numpyro():
    """The groups ppl_hw builds for a NumPyro run (used on ArviZ 1.x when site names
    carry '/') are ArviZ's own ``from_numpyro`` arrays on the same run (reference:
    ArviZ's converter, on whichever line is installed)."""
    import arviz as az

    from ppl_hw.numpyro.arviz import _mcmc_groups

    mcmc = _slashed_nuts("w")  # ArviZ 1.x's own converter refuses '/'
    ours = _mcmc_groups(mcmc, True)
    theirs = az.from_numpyro(mcmc, log_likelihood=True)
    for name in ("w", "sigma"):
        np.testing.assert_array_equal(
            ours["posterior"][name], np.asarray(theirs["posterior"][name])
        )
    np.testing.assert_allclose(
        ours["log_likelihood"]["y"],
        np.asarray(theirs["log_likelihood"]["y"]),
        rtol=1e-6,
    )
    np.testing.assert_array_equal(
        ours["observed_data"]["y"], np.asarray(theirs["observed_data"]["y"])
    )
    assert ours["posterior"]["w"].shape == (2, 30, 2)


def test_slashed_site_names_on_both_lines():
    """'/' in a site name: kept on ArviZ 0.x, '.' on 1.x (DataTree refuses '/'),
    the same values either way, and ``var_name`` gives the name to look up."""
    from ppl_hw.arviz import arviz_major, from_dict, from_mcmc, var_name
    from ppl_hw.common.arviz import datatree_names

    mcmc = _slashed_nuts()
    data = from_mcmc(mcmc)
    name = var_name("net/w")
    assert name == ("net/w" if arviz_major() < 1 else "net.w")
    np.testing.assert_array_equal(
        np.asarray(data["posterior"][name]),
        np.asarray(mcmc.get_samples(group_by_chain=True)["net/w"]),
    )
    assert "log_likelihood" in _groups(data)
    tree = from_dict({"posterior": {"a/b": np.zeros((1, 3))}})
    assert var_name("a/b") in tree["posterior"]
    with pytest.raises(ValueError, match=r"'a\.b' and 'a/b' both become 'a\.b'"):
        datatree_names({"posterior": {"a.b": 0, "a/b": 1}}, None)
