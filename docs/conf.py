"""Sphinx configuration: myst-nb pages, autodoc API reference, warnings are errors
(``make docs`` runs ``sphinx-build -W --keep-going``)."""

import os
from pathlib import Path

import ppl_hw

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("MPLBACKEND", "Agg")

project = "ppl_hw"
author = "ppl_hw developers"
copyright = "2026, ppl_hw developers"
release = ppl_hw.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
# Notebooks are executed once, by the test suite; the docs render those copies.
nb_execution_mode = "off"

autodoc_default_options = {
    "members": True,
    "undoc-members": True,
    "show-inheritance": True,
}
autodoc_member_order = "bysource"
autodoc_typehints = "description"

exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
html_theme = "furo"
html_static_path = ["_static"]
html_title = f"ppl_hw {release}"


def _noise_shapes_figure(path):
    """Histogram of each device-noise generator with the density EmpiricalNoise fits
    to it (standardised), rebuilt with the docs so it never goes stale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from ppl_hw import devices
    from ppl_hw.core import NUMPY
    from ppl_hw.core import noise_table as nt

    log_prob = NUMPY.bind(nt.table_log_prob)
    gens = [
        ("gaussian_noise", devices.gaussian_noise),
        ("uniform_noise", devices.uniform_noise),
        ("mtj_noise", devices.mtj_noise),
        ("pcm_read_noise", devices.pcm_read_noise),
    ]
    fig, axes = plt.subplots(1, 4, figsize=(13, 2.8), sharey=True)
    z = np.linspace(-4, 4, 801)
    for ax, (name, gen) in zip(axes, gens, strict=True):
        s = gen(20_000, seed=0)
        t = nt.fit_noise_table(s)
        ax.hist(
            (s - t.loc) / t.scale, bins=120, range=(-4, 4), density=True, color="0.75"
        )
        ax.plot(z, np.exp(log_prob(z, t, t.cells)), color="C0", lw=1.5)
        ax.plot(
            z, np.exp(-0.5 * z * z) / np.sqrt(2 * np.pi), color="C3", lw=0.8, ls="--"
        )
        ax.set_title(f"{name}\nH0 = {t.entropy:.3f} nats", fontsize=9)
        ax.set_xlabel("standardised value")
    axes[0].set_ylabel("density")
    fig.tight_layout()
    path.parent.mkdir(exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _notebooks(src, dst):
    """The tutorials: the copies of ``examples/notebooks`` the test suite executed
    (``tests/test_notebooks.py`` writes them to ``_generated/notebooks``); a notebook
    the tests have not run since it last changed is copied as committed (no
    outputs), so ``make docs`` also builds on its own and never shows a stale run."""
    import shutil

    dst.mkdir(parents=True, exist_ok=True)
    names = {p.name for p in src.glob("*.ipynb")}
    for p in src.glob("*.ipynb"):
        out = dst / p.name
        if not out.exists() or out.stat().st_mtime < p.stat().st_mtime:
            shutil.copyfile(p, out)
    for p in dst.glob("*.ipynb"):
        if p.name not in names:  # a notebook removed from examples/
            p.unlink()


_noise_shapes_figure(Path(__file__).parent / "_generated" / "noise_shapes.png")
_notebooks(
    Path(__file__).parents[1] / "examples" / "notebooks",
    Path(__file__).parent / "_generated" / "notebooks",
)
