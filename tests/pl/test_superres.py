from __future__ import annotations

import copy

import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")

import sr_spatial as sr


@pytest.fixture(scope="module")
def nearest_sdata(demo_sdata):
    sdata = copy.deepcopy(demo_sdata)
    sr.tl.superresolve(sdata, "demo_full_image", method="nearest", key_added="near", show_progress_bar=False)
    return sdata


def test_superres_draws_three_panels_per_gene(nearest_sdata, tmp_path):
    path = tmp_path / "panels.png"
    fig = sr.pl.superres(nearest_sdata, ["gene_00", "gene_10"], key="near", show=False, save=path)
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == [
        "gene_00: measured spots",
        "gene_00: super-resolved",
        "gene_00: uncertainty (sd)",
        "gene_10: measured spots",
        "gene_10: super-resolved",
        "gene_10: uncertainty (sd)",
    ]
    # Measured and super-resolved panels share the colour scale.
    scatter = fig.axes[0].collections[0]
    image = fig.axes[1].images[-1]
    assert scatter.get_clim() == image.get_clim()
    assert path.stat().st_size > 10_000
    import matplotlib.image as mpimg

    assert np.asarray(mpimg.imread(path)).std() > 0.05  # not a blank canvas


def test_superres_errors_name_what_to_do(nearest_sdata):
    with pytest.raises(KeyError, match="run `sr_spatial.tl.superresolve"):
        sr.pl.superres(nearest_sdata, "gene_00", key="missing", show=False)
    with pytest.raises(KeyError, match="were not super-resolved"):
        sr.pl.superres(nearest_sdata, "not_a_gene", key="near", show=False)
