"""The registry through which the adapters serve ``ppl_hw.coding`` and
``ppl_hw.arviz`` without those importing them."""

import subprocess
import sys

import pytest

from ppl_hw.common.registry import Registry


class Base:
    pass


class Child(Base):
    pass


def test_lookup_walks_the_class_hierarchy_nearest_first():
    reg = Registry("thing")
    reg.register(Base)("base")
    assert reg.lookup(Child()) == "base"
    reg.register(Child)("child")
    assert reg.lookup(Child()) == "child"
    assert reg.lookup(Base()) == "base"
    assert reg.lookup(object()) is None


def test_unknown_backend_name_is_refused():
    reg = Registry("array converter")
    reg.register("numpyro")(str)
    assert reg.by_name("numpyro") is str
    with pytest.raises(
        ValueError, match="no array converter registered for backend 'jax'"
    ):
        reg.by_name("jax")


@pytest.mark.parametrize("host", ["numpyro", "pyro"])
def test_a_host_guide_is_served_without_importing_the_adapter_first(host):
    """A user who imports only the host and ppl_hw.coding / ppl_hw.arviz: the
    registry loads the adapter of the host already imported, and only that one."""
    if host == "numpyro":
        code = (
            "import sys, jax, numpy as np, numpyro, numpyro.distributions as dist\n"
            "from numpyro.infer.autoguide import AutoNormal\n"
            "from ppl_hw import coding, arviz\n"
            "def model():\n"
            "    numpyro.sample('w', dist.Normal(0., 1.).expand([3]).to_event(1))\n"
            "g = AutoNormal(model)\n"
            "params = numpyro.infer.SVI(model, g, numpyro.optim.Adam(0.1),\n"
            "    numpyro.infer.Trace_ELBO()).run(jax.random.PRNGKey(0), 2,\n"
            "    progress_bar=False).params\n"
            "c = coding.encode(g, params, bits_per_block=4)\n"
            "print(sorted(coding.decode(c)), type(coding.decode(c, 'numpyro')['w']).__module__.split('.')[0],\n"
            "      'ppl_hw.pyro' in sys.modules, 'torch' in sys.modules)\n"
        )
        expected = "['w'] jaxlib False False"
    else:
        code = (
            "import sys, torch, pyro, pyro.distributions as dist\n"
            "from pyro.infer.autoguide import AutoNormal\n"
            "from ppl_hw import coding\n"
            "def model():\n"
            "    pyro.sample('w', dist.Normal(0., 1.).expand([3]).to_event(1))\n"
            "g = AutoNormal(model)\n"
            "pyro.infer.SVI(model, g, pyro.optim.Adam({'lr': 0.1}),\n"
            "    pyro.infer.Trace_ELBO()).step()\n"
            "c = coding.encode(g, bits_per_block=4)\n"
            "print(sorted(coding.decode(c)), type(coding.decode(c, 'pyro')['w']).__module__.split('.')[0],\n"
            "      'ppl_hw.numpyro' in sys.modules, 'jax' in sys.modules)\n"
        )
        expected = "['w'] torch False False"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == expected, out.stderr
