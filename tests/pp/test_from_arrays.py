"""A SpatialData from arrays: spot counts, centres in pixels and an H&E (issue 34)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import sr_spatial as sr

SEED = 0


@pytest.fixture(scope="module")
def arrays(demo_sdata):
    """The demo slide taken apart: counts, spot centres in full-resolution pixels, the H&E as (y, x, 3)."""
    table = demo_sdata.tables["table"]
    counts = pd.DataFrame(table.X.toarray(), index=table.obs_names, columns=table.var_names)
    centres = np.asarray(table.obsm["spatial"], dtype=float)
    image = np.moveaxis(np.asarray(demo_sdata.images["demo_full_image"]["scale0"]["image"].values), 0, -1)
    return counts, centres, image


def test_three_lines_from_arrays_to_a_superresolved_slide(arrays):
    counts, centres, image = arrays
    sdata = sr.pp.from_arrays(counts, centres, spot_diameter_um=55, image=image, microns_per_pixel=1.0)
    assert set(sdata.images) == {"slide_image"} and set(sdata.shapes) == {"slide"}
    table = sdata.tables["table"]
    assert list(table.var_names) == list(counts.columns) and table.n_obs == len(counts)
    np.testing.assert_allclose(sdata.shapes["slide"].radius.to_numpy(), 27.5)
    assert table.uns["spatial"]["slide"]["scalefactors"]["spot_diameter_fullres"] == 55.0
    sr.tl.superresolve(sdata, "slide_image", scale=2, n_top_genes=4, seed=SEED, show_progress_bar=False)
    out = sdata.tables["slide_image_superres_table"]
    assert out.n_vars == 4 and out.uns["slide_image_superres"]["spot_residual"] < 1e-4


def test_a_matrix_needs_gene_names_and_centres_must_fit(arrays):
    counts, centres, image = arrays
    with pytest.raises(ValueError, match="pass `genes=`"):
        sr.pp.from_arrays(counts.to_numpy(), centres, spot_diameter_um=55, image=image, microns_per_pixel=1.0)
    built = sr.pp.from_arrays(
        counts.to_numpy(), centres, genes=list(counts.columns), spot_diameter_um=55, image=image[..., 0],
        microns_per_pixel=2.0, dataset_id="st",
    )  # fmt: skip
    assert built.images["st_image"].sizes["c"] == 1
    np.testing.assert_allclose(built.shapes["st"].radius.to_numpy(), 13.75)
    with pytest.raises(ValueError, match=r"\(x, y\) per row"):
        sr.pp.from_arrays(counts, centres[:-1], spot_diameter_um=55, image=image, microns_per_pixel=1.0)
    with pytest.raises(ValueError, match="No spot centre lies on"):
        sr.pp.from_arrays(counts, centres + 1e6, spot_diameter_um=55, image=image, microns_per_pixel=1.0)
    with pytest.raises(ValueError, match="positive number"):
        sr.pp.from_arrays(counts, centres, spot_diameter_um=0, image=image, microns_per_pixel=1.0)
