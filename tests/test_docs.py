"""The docs build with warnings as errors, executing the tutorial notebook once (marker ``docs``)."""

from __future__ import annotations

import html
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory) -> Path:
    pytest.importorskip("sphinx", reason="docs need the `doc` extra: pip install -e '.[test]'")
    # Build from a copy so generated pages and the executed notebook never land in the source tree.
    repo = tmp_path_factory.mktemp("repo")
    ignore = shutil.ignore_patterns("_build", "generated", "notebooks", ".ipynb_checkpoints", "__pycache__")
    shutil.copytree(ROOT / "docs", repo / "docs", ignore=ignore)
    shutil.copytree(ROOT / "notebooks", repo / "notebooks", ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    shutil.copytree(ROOT / "benchmarks" / "results", repo / "benchmarks" / "results")
    shutil.copy(ROOT / "CHANGELOG.md", repo / "CHANGELOG.md")
    out = repo / "html"
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", "-t", "offline"]
    command += ["-D", "nb_execution_mode=force", str(repo / "docs"), str(out)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout[-5000:]}\n{result.stderr[-5000:]}"
    return out


def test_api_reference_has_a_page_per_public_function(built_docs):
    import sr_spatial as sr

    for module in ("pp", "tl", "pl", "datasets", "model"):
        for name in getattr(sr, module).__all__:
            if not callable(getattr(getattr(sr, module), name)):
                continue  # constants such as model.PRESETS are described where they are used
            page = built_docs / "generated" / f"sr_spatial.{module}.{name}.html"
            assert page.is_file(), f"{page.name} missing from docs/api.md"
    superres = (built_docs / "generated" / "sr_spatial.pl.superres.html").read_text()
    assert "truth_key" in superres and "Returns" in superres


def test_tutorial_ran_and_shows_its_figures(built_docs):
    html = (built_docs / "notebooks" / "tutorial.html").read_text()
    assert "Traceback" not in html
    # spatialdata-plot x3, pl.superres, pl.benchmark, pl.calibration, squidpy: every figure cell produced an image.
    assert html.count('<img alt="_images/') + html.count('<img alt="../_images/') >= 7
    # The default method first, with its per-gene results labelled by gene.
    assert "histology_weight" in html
    assert "demo_superres.zarr" in html  # the last cell (saving) ran
    # The log has a plain line per phase (no ETA that could contradict the bars) and says how long training took.
    assert "Fitting the histology encoder: " in html and "Trained in " in html
    assert "ETA ~" not in html


def test_pages_link_up(built_docs):
    for page in ("index", "installation", "quickstart", "visium", "model", "api", "benchmarks", "changelog"):
        assert (built_docs / f"{page}.html").is_file()
    # Titles such as "H&E" are HTML-escaped on the page.
    benchmarks = html.unescape((built_docs / "benchmarks.html").read_text())
    for table in sorted((ROOT / "benchmarks" / "results").glob("*.md")):
        title = table.read_text().splitlines()[0].lstrip("# ").split(":")[0]
        assert title in benchmarks, f"{table.name} is not on the benchmarks page"
    assert (built_docs / "_images" / "architecture.png").is_file()
