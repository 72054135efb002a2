"""Reference bins drawn from the demo slide's hidden truth (``reference_training.py``, ``hd_truth.py``)."""

from __future__ import annotations


def reference_slide(sdata, *, bin_um: float, split_px: float, umis_per_um2: float, seed: int):
    """Square bins with Poisson counts from the demo truth, over the tissue left of ``split_px``."""
    import geopandas as gpd
    import numpy as np
    import pandas as pd
    import shapely
    from anndata import AnnData
    from scipy import sparse
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    rng = np.random.default_rng(seed)
    mpp = sdata.tables["table"].uns["demo"]["microns_per_pixel"]
    truth_um = sdata.tables["table"].uns["demo"]["truth_microns_per_pixel"]
    truth = np.expm1(np.asarray(sdata.images["demo_truth"].values, dtype=np.float64))
    genes = list(sdata.images["demo_truth"].coords["c"].values)
    k = int(round(bin_um / truth_um))
    n_y, n_x = truth.shape[1] // k, truth.shape[2] // k
    blocks = truth[:, : n_y * k, : n_x * k].reshape(len(genes), n_y, k, n_x, k)
    rate = blocks.mean(axis=(2, 4))  # normalised expression per bin (1e4 per covered pixel)
    covered = (blocks.sum(axis=0) > 0).mean(axis=(1, 3))
    share = rate / np.maximum(rate.sum(axis=0), 1e-12)
    counts = rng.poisson(share * umis_per_um2 * bin_um**2 * covered)
    rows, cols = np.nonzero(counts.sum(axis=0) > 0)
    centres = np.column_stack([(cols + 0.5) * bin_um, (rows + 0.5) * bin_um]) / mpp  # image pixels
    keep = centres[:, 0] < split_px
    rows, cols, centres = rows[keep], cols[keep], centres[keep]
    half = bin_um / mpp / 2
    ids = pd.Index([f"b{r}_{c}" for r, c in zip(rows, cols, strict=True)])
    squares = shapely.box(centres[:, 0] - half, centres[:, 1] - half, centres[:, 0] + half, centres[:, 1] + half)
    shapes = ShapesModel.parse(gpd.GeoDataFrame(geometry=squares, index=ids), transformations={"demo": Identity()})
    adata = AnnData(
        X=sparse.csr_matrix(counts[:, rows, cols].T.astype(np.float32)),
        obs=pd.DataFrame({"region": pd.Categorical(["bins"] * len(ids)), "bin_id": ids}, index=ids),
        var=pd.DataFrame(index=pd.Index(genes)),
    )
    table = TableModel.parse(adata, region="bins", region_key="region", instance_key="bin_id")
    return SpatialData(images={"he": sdata.images["demo_full_image"]}, shapes={"bins": shapes}, tables={"t": table})
