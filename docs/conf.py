"""Sphinx configuration for sr_spatial.

Build with ``sphinx-build -W -b html docs docs/_build/html``. The tutorial in ``notebooks/`` is copied into
``docs/notebooks/`` and executed by myst-nb during the build. Without network, add ``-t offline``: links into
other projects' documentation (intersphinx) are then left out instead of failing the build.
"""

import re
import shutil
from importlib.metadata import version as _version
from pathlib import Path

HERE = Path(__file__).parent

project = "sr_spatial"
author = "sr_spatial developers"
copyright = "2026, sr_spatial developers"
release = _version("sr-spatial")
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx_autodoc_typehints",
    "sphinx_copybutton",
    "sphinx_design",
]

# The notebooks live at the top of the repository (where users look for them); Sphinx reads only its source
# directory, so they are copied in at each build.
_notebooks = HERE / "notebooks"
_notebooks.mkdir(exist_ok=True)
for _notebook in sorted((HERE.parent / "notebooks").glob("*.ipynb")):
    shutil.copyfile(_notebook, _notebooks / _notebook.name)

# Every results table in benchmarks/results/ goes on the benchmarks page, headings one level down, so a new
# benchmark appears there without editing the docs.
_results = HERE / "generated" / "benchmark_results.inc"
_results.parent.mkdir(exist_ok=True)
_results.write_text(
    "\n\n".join(
        "\n".join(
            "#" + line if line.startswith("#") else re.sub(r"\]\(([^/)]+\.png)\)", r"](generated/\1)", line)
            for line in table.read_text().splitlines()
        )
        for table in sorted((HERE.parent / "benchmarks" / "results").glob("*.md"))
        # Hand-written notes are appended to their protocol's page by the benchmark script already.
        if not table.stem.endswith("_notes")
    )
    + "\n"
)
# Figures the tables link to are copied beside the include; links are relative to the including page.
for _figure in (HERE.parent / "benchmarks" / "results").glob("*.png"):
    shutil.copyfile(_figure, _results.parent / _figure.name)

autosummary_generate = True
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "inherited-members": False}
napoleon_google_docstring = False
napoleon_numpy_docstring = True
napoleon_use_param = True
# Our Returns sections are prose listing every slot written (as scanpy's), not "type: description" pairs.
napoleon_custom_sections = ["Returns"]
typehints_defaults = "braces"
always_document_param_types = False

myst_enable_extensions = ["colon_fence", "dollarmath", "deflist"]
myst_heading_anchors = 3

# The tutorial runs on the demo with the "tiny" configuration: about a minute on 2 CPU cores.
nb_execution_mode = "cache"
nb_execution_timeout = 600
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

html_theme = "sphinx_book_theme"
html_title = "sr_spatial"
html_static_path = ["_static"]
html_theme_options = {
    "repository_url": "https://github.com/scverse/sr_spatial",
    "use_repository_button": True,
    "path_to_docs": "docs/",
}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "figures"]

intersphinx_mapping = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "pandas": ("https://pandas.pydata.org/docs/", None),
    "matplotlib": ("https://matplotlib.org/stable/", None),
    "anndata": ("https://anndata.readthedocs.io/en/stable/", None),
    "scanpy": ("https://scanpy.readthedocs.io/en/stable/", None),
    "spatialdata": ("https://spatialdata.scverse.org/en/stable/", None),
    "squidpy": ("https://squidpy.readthedocs.io/en/stable/", None),
    "torch": ("https://docs.pytorch.org/docs/stable/", None),
}
if tags.has("offline"):  # noqa: F821 (``tags`` is provided by Sphinx)
    intersphinx_mapping = {}
