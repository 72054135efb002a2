from __future__ import annotations

import copy

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import pandas as pd
import pytest

import sr_spatial as sr

from ._compare import assert_matches

# The committed demo table (benchmarks/results/demo_accuracy.md), as a user would pass it.
TABLE = pd.DataFrame(
    {
        "pearson": [0.234, 0.247, 0.339],
        "ssim": [0.404, 0.429, 0.583],
        "rmse": [1.476, 1.445, 1.402],
        "spot_residual": [0.0, 5.91e-02, 6.88e-08],
        "wall_s": [3.247, 3.107, 75.197],
    },
    index=["nearest", "bicubic", "sr_spatial (base)"],
)


def test_benchmark_image(tmp_path):
    ax = sr.pl.benchmark(TABLE, title="demo, 4x", show=False)
    assert_matches(ax.figure, "benchmark_table", tmp_path)


def test_benchmark_marks_the_best_value_per_metric():
    ax = sr.pl.benchmark(TABLE, show=False)
    bold = {t.get_text() for t in ax.texts if t.get_fontweight() == "bold"}
    # Higher is better for pearson and ssim, lower for rmse, spot_residual and wall time.
    assert bold == {"0.339", "0.583", "1.402", "0.000", "3.107"}
    plt.close(ax.figure)


def test_benchmark_from_evaluate_tables(demo_sdata, tmp_path):
    sdata = copy.deepcopy(demo_sdata)
    genes = ["gene_00", "gene_10"]
    scores = {}
    for method in ("nearest", "bicubic"):
        sr.tl.superresolve(sdata, "demo_full_image", genes=genes, method=method, key_added=method)
        scores[method] = sr.tl.evaluate(sdata, method, truth_key="demo_truth")
    fig, ax = plt.subplots()
    out = sr.pl.benchmark(scores, metrics=["pearson", "rmse"], ax=ax, show=False, save=tmp_path / "b.png")
    assert out is ax
    assert [t.get_text() for t in ax.get_xticklabels()] == ["pearson", "rmse"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["nearest", "bicubic"]
    shown = [t.get_text() for t in ax.texts]
    assert shown[0] == f"{scores['nearest']['pearson'].mean():.3f}"
    assert (tmp_path / "b.png").stat().st_size > 1000
    plt.close(fig)


def test_benchmark_errors_name_what_to_do():
    with pytest.raises(KeyError, match="available"):
        sr.pl.benchmark(TABLE, metrics=["f1"], show=False)
    with pytest.raises(TypeError, match="DataFrame"):
        sr.pl.benchmark([1, 2], show=False)
    with pytest.raises(ValueError, match="empty"):
        sr.pl.benchmark({}, show=False)
