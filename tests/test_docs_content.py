"""The README, the docs and the stored tutorial agree with the code and the benchmark pages (fast, no build)."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
NOTEBOOK = ROOT / "notebooks" / "tutorial.ipynb"


def _make_figures():
    spec = importlib.util.spec_from_file_location("make_figures", ROOT / "docs" / "figures" / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _table(text: str, first_header: str) -> list[list[str]]:
    """Rows (cells stripped) of the first Markdown table whose header starts with ``first_header``."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header}"))
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip().strip("*`") for cell in line.strip("|").split("|")])
    return rows


def test_the_stored_tutorial_is_executed_with_figures_and_matches_its_code():
    import nbformat

    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    # Executed top to bottom, in one kernel, without errors.
    assert [cell.execution_count for cell in code] == list(range(1, len(code) + 1))
    outputs = [output for cell in code for output in cell.outputs]
    assert not [output for output in outputs if output.output_type == "error"]
    figures = [output for output in outputs if {"image/png", "image/jpeg"} & set(output.get("data", {}))]
    assert len(figures) >= 5
    # The outputs were computed from these very code cells: re-run `python docs/figures/make_figures.py tutorial`
    # after changing one.
    assert notebook.metadata["sr_spatial"]["executed_code_sha256"] == _make_figures().code_hash(notebook), (
        "notebooks/tutorial.ipynb changed since it was executed; run `python docs/figures/make_figures.py tutorial`"
    )
    # The default method comes first; the diffusion model after it.
    calls = [cell.source for cell in code if "sr.tl.superresolve(" in cell.source]
    assert "method=" not in calls[0]
    assert 'method="diffusion"' in calls[1]


def test_the_tutorial_stays_small():
    assert NOTEBOOK.stat().st_size < 2_000_000


DEMO_ROWS = {  # README row -> row of benchmarks/results/demo_accuracy.md
    "nearest spot": "nearest",
    "bicubic": "bicubic",
    'sr_spatial default (method="histology")': "sr_spatial method='histology' (default)",
    'sr_spatial method="histology", learned_encoder=True': "sr_spatial method='histology', learned_encoder=True (base)",
    'sr_spatial (method="diffusion", base)': "sr_spatial method='diffusion' (base)",
    "sr_spatial diffusion around the histology predictor (histology_base=True)": (
        "sr_spatial method='diffusion' around the histology predictor (base)"
    ),
}


def _clean(label: str) -> str:
    return label.replace("`", "").replace("**", "")


def test_readme_demo_numbers_are_the_benchmark_page():
    page = {row[0]: row for row in _table((ROOT / "benchmarks/results/demo_accuracy.md").read_text(), "method")}
    readme = {_clean(row[0]): row for row in _table(README, "method | Pearson r vs truth")}
    assert set(readme) == set(DEMO_ROWS)
    for label, row in readme.items():
        measured = page[DEMO_ROWS[label]]
        pearson, ssim, wall_s = float(measured[1]), float(measured[2]), float(measured[7])
        assert float(row[1]) == pytest.approx(pearson, abs=5e-4), label
        assert float(row[2]) == pytest.approx(ssim, abs=5e-4), label
        assert float(row[4].removesuffix(" s")) == pytest.approx(wall_s, abs=0.5), label


HER2ST_ROWS = {
    "own pseudo-spot (nearest)": "nearest (own pseudo-spot)",
    "own pseudo-spot + ridge detail (peer)": "own coarse spot + ridge detail (peer)",
    "cubic interpolation + projection": "cubic + projection",
    "diffusion (base)": "sr_spatial",
    'method="histology" (default)': "sr_spatial method='histology' (predictor alone)",
    'method="histology", learned_encoder=True': "sr_spatial method='histology', learned_encoder=True",
    "diffusion around the histology predictor (histology_base=True)": (
        "sr_spatial diffusion around the histology predictor (histology_base=True)"
    ),
}


def test_readme_her2st_numbers_are_the_benchmark_page():
    page = _table((ROOT / "benchmarks/results/her2st_histology.md").read_text(), "section")
    measured = {(row[0], row[1]): row for row in page}
    readme = {_clean(row[0]): row for row in _table(README, "her2st")}
    assert set(readme) == set(HER2ST_ROWS)
    for label, row in readme.items():
        b4, c2 = measured["B4", HER2ST_ROWS[label]], measured["C2", HER2ST_ROWS[label]]
        assert float(row[1]) == pytest.approx(float(b4[2]), abs=5e-4), label
        assert float(row[2]) == pytest.approx(float(c2[2]), abs=5e-4), label
        seconds = sorted(float(r[-2]) for r in (b4, c2))
        stated = row[3]
        if stated == "–":
            continue
        if stated.startswith("<"):
            assert seconds[1] < float(stated.strip("< s")), label
        else:
            low, _, high = stated.removesuffix(" s").partition("–")
            assert float(low) == pytest.approx(seconds[0], abs=0.5), label
            assert float(high or low) == pytest.approx(seconds[1], abs=0.5), label


def test_docs_promise_nothing_the_package_no_longer_does():
    pages = {path.name: path.read_text() for path in (ROOT / "docs").glob("*.md")}
    pages["README.md"] = README
    for name, text in pages.items():
        assert "ETA" not in text, name
        assert "several diffusion draws" not in text, name
    # The README's install gives what its promises need: Leiden (igraph, leidenalg) and the right PyTorch build.
    assert 'pip install -e ".[analysis]"' in README
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu" in README
    assert "sr-spatial superresolve" in README


def test_the_docs_figures_are_made_by_the_committed_script():
    figures = _make_figures()
    for name in ("architecture", "demo", "tutorial"):
        assert callable(getattr(figures, name))
    for image in re.findall(r"!\[[^\]]*\]\((docs/_static/[^)]+)\)", README):
        assert (ROOT / image).is_file(), image
    assert json.loads(NOTEBOOK.read_text())["nbformat"] == 4


def test_the_readme_notebook_example_runs_as_written():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = re.findall(r"```python\n(.*?)```", README, flags=re.S)
    demo = next(block for block in blocks if "sr.datasets.demo()" in block)
    namespace: dict = {}
    exec(compile(demo, "README.md", "exec"), namespace)  # the README's own example
    adata = namespace["adata"]
    assert adata.var["histology_weight"].index.equals(adata.var_names)
    plt.close("all")
