"""Sphinx configuration: myst-nb pages, autodoc API reference, warnings are errors
(``make docs`` runs ``sphinx-build -W --keep-going``)."""

import os

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
html_title = f"ppl_hw {release}"
