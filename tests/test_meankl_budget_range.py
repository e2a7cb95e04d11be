"""AutoMeanKL's budget range (issue "Nothing silent"): every budget from a small one to
the documented maximum (``ppl_hw.core.meankl.MAX_BITS_PER_WEIGHT`` bits per weight)
trains 500 steps with finite losses on both backends and both budget splits; above
the maximum, a ValueError naming the budget. The posterior scales respect
``SIGMA_FLOOR`` (their squares stay normal float32 numbers, the reason for the limit).
"""

import numpy as np
import pytest

from ppl_hw.core.meankl import MAX_BITS_PER_WEIGHT, SIGMA_FLOOR

STEPS = 500
D = 6  # weights of the model below
BITS_PER_WEIGHT = [0.05, 16.0, MAX_BITS_PER_WEIGHT]


def _numpyro_losses(bits, split):
    import jax
    import jax.numpy as jnp
    import numpyro
    import numpyro.distributions as dist
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.initialization import init_to_value

    from ppl_hw.numpyro.autoguide import AutoMeanKL

    def model(x, y=None):
        w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([3, 2]).to_event(2))
        with numpyro.plate("n", x.shape[0]):
            numpyro.sample("y", dist.Normal(x @ w, 1.0).to_event(1), obs=y)

    x = jnp.asarray(np.random.default_rng(0).normal(size=(8, 3)), jnp.float32)
    y = x @ jnp.ones((3, 2))
    guide = AutoMeanKL(
        model,
        kl_budget_bits=bits * D,
        budget_split=split,
        init_loc_fn=init_to_value(values={"w": jnp.zeros((3, 2))}),  # at the prior
    )
    svi = SVI(model, guide, numpyro.optim.Adam(1e-2), Trace_ELBO())
    result = svi.run(jax.random.PRNGKey(0), STEPS, x, y, progress_bar=False)
    return np.asarray(result.losses), None


def _pyro_losses(bits, split):
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide.initialization import init_to_value

    from ppl_hw.pyro.autoguide import AutoMeanKL

    def model(x, y=None):
        w = pyro.sample("w", dist.Normal(0.0, 1.0).expand([3, 2]).to_event(2))
        with pyro.plate("n", x.shape[0]):
            pyro.sample("y", dist.Normal(x @ w, 1.0).to_event(1), obs=y)

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    x = torch.as_tensor(
        np.random.default_rng(0).normal(size=(8, 3)), dtype=torch.float32
    )
    y = x @ torch.ones(3, 2)
    guide = AutoMeanKL(
        model,
        kl_budget_bits=bits * D,
        budget_split=split,
        init_loc_fn=init_to_value(values={"w": torch.zeros(3, 2)}),  # at the prior
    )
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 1e-2}), Trace_ELBO())
    return np.array([svi.step(x, y) for _ in range(STEPS)]), None


RUN = {"numpyro": _numpyro_losses, "pyro": _pyro_losses}


@pytest.mark.parametrize("backend", sorted(RUN))
@pytest.mark.parametrize("split", ["equal", "learned"])
@pytest.mark.parametrize("bits", BITS_PER_WEIGHT)
def test_budgets_up_to_the_maximum_train_with_finite_losses(backend, split, bits):
    losses, _ = RUN[backend](bits, split)
    assert losses.shape == (STEPS,)
    assert np.all(np.isfinite(losses)), np.flatnonzero(~np.isfinite(losses))[:5]


@pytest.mark.parametrize("backend", sorted(RUN))
@pytest.mark.parametrize("bits", [MAX_BITS_PER_WEIGHT * 1.01, 100.0, 1e9])
def test_budgets_above_the_maximum_are_refused_naming_the_budget(backend, bits):
    with pytest.raises(ValueError, match=r"KL budget of .* bits .* at most 48 bits"):
        RUN[backend](bits, "equal")


def test_the_floor_keeps_squares_normal_in_float32():
    """The reason for the numbers: SIGMA_FLOOR**2 is a normal float32 with 80x
    to spare, and 48 bits per weight (equal share, mean at the prior) needs
    sigma / rho = exp(-(2 kappa + 1) / 2) above the floor for rho >= 1e-3."""
    tiny = np.finfo(np.float32).tiny
    assert SIGMA_FLOOR**2 >= 80 * tiny
    kappa = MAX_BITS_PER_WEIGHT * np.log(2.0)
    sigma_over_rho = np.exp(-(2 * kappa + 1) / 2)  # r - 1 - log r = 2 kappa, r << 1
    assert sigma_over_rho * 1e-3 >= SIGMA_FLOOR
