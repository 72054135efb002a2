"""The demo slide's hidden truth measured at a finer scale: reference slides with finer truth."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = ["measure_demo_truth"]


def measure_demo_truth(
    sdata: SpatialData,
    *,
    bin_um: float,
    umis_per_um2: float = 0.5,
    seed: int = 0,
    footprint: str = "square",
    split_px: float | None = None,
) -> SpatialData:
    """The hidden truth of a :func:`demo` slide measured at a finer scale: a reference slide with finer truth.

    Counts are Poisson draws of ``umis_per_um2`` UMIs per µm² from the truth under each unit, so the reference
    can train a model (:func:`sr_spatial.tl.train` with ``reference=True``) for another demo slide.

    Parameters
    ----------
    sdata
        A slide from :func:`demo` with its truth (``include_truth=True``).
    bin_um
        The units' size in µm: the bins' side, or the spots' diameter and spacing.
    umis_per_um2
        Sequencing depth.
    seed
        Seeds the counts.
    footprint
        ``"square"``: square bins tiling the tissue (shapes ``"bins"``, table ``"t"``), as Visium HD or binned
        transcripts measure. ``"disk"``: spots of diameter ``bin_um`` on a square lattice ``bin_um`` apart, each
        counting only the truth under its disk (circles ``"spots"`` of that true radius, table ``"table"``), as
        legacy spatial transcriptomics measures.
    split_px
        Keep only the units left of this image column (``None``: all of them), e.g. to hold out the rest.

    Returns
    -------
    A SpatialData with the demo's H&E as ``images["he"]``, the units and their raw counts, in the coordinate
    system ``"demo"``.
    """
    import geopandas as gpd
    import numpy as np
    import pandas as pd
    import shapely
    from anndata import AnnData
    from scipy import sparse
    from spatialdata import SpatialData
    from spatialdata.models import ShapesModel, TableModel
    from spatialdata.transformations import Identity

    if "demo_truth" not in sdata.images:
        msg = "The slide has no hidden truth ('demo_truth'); build it with `sr.datasets.demo(include_truth=True)`."
        raise ValueError(msg)
    if footprint not in ("square", "disk"):
        msg = f"`footprint` must be 'square' or 'disk', got {footprint!r}."
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    mpp = sdata.tables["table"].uns["demo"]["microns_per_pixel"]
    truth_um = sdata.tables["table"].uns["demo"]["truth_microns_per_pixel"]
    truth = np.expm1(np.asarray(sdata.images["demo_truth"].values, dtype=np.float64))
    genes = list(sdata.images["demo_truth"].coords["c"].values)
    k = int(round(bin_um / truth_um))
    n_y, n_x = truth.shape[1] // k, truth.shape[2] // k
    blocks = truth[:, : n_y * k, : n_x * k].reshape(len(genes), n_y, k, n_x, k)
    weight = np.ones((k, k))
    if footprint == "disk":
        offsets = np.arange(k) + 0.5 - k / 2
        weight = (offsets[:, None] ** 2 + offsets[None, :] ** 2 <= (k / 2) ** 2).astype(float)
    w = weight[None, None, :, None, :]
    rate = (blocks * w).sum(axis=(2, 4)) / weight.sum()  # normalised expression per bin (1e4 per covered pixel)
    covered = ((blocks.sum(axis=0) > 0) * w[0]).sum(axis=(1, 3)) / weight.size
    share = rate / np.maximum(rate.sum(axis=0), 1e-12)
    counts = rng.poisson(share * umis_per_um2 * bin_um**2 * covered)
    rows, cols = np.nonzero(counts.sum(axis=0) > 0)
    centres = np.column_stack([(cols + 0.5) * bin_um, (rows + 0.5) * bin_um]) / mpp  # image pixels
    if split_px is not None:
        keep = centres[:, 0] < split_px
        rows, cols, centres = rows[keep], cols[keep], centres[keep]
    half = bin_um / mpp / 2
    ids = pd.Index([f"b{r}_{c}" for r, c in zip(rows, cols, strict=True)])
    x = sparse.csr_matrix(counts[:, rows, cols].T.astype(np.float32))
    var = pd.DataFrame(index=pd.Index(genes))
    if footprint == "disk":
        shapes = ShapesModel.parse(
            centres, geometry=0, radius=np.full(len(ids), half), index=ids, transformations={"demo": Identity()}
        )
        obs = pd.DataFrame(
            {
                "region": pd.Categorical(["spots"] * len(ids)),
                "spot_id": ids,
                "in_tissue": 1,
                "array_row": rows,
                "array_col": cols,
            },
            index=ids,
        )
        adata = AnnData(X=x, obs=obs, var=var, obsm={"spatial": centres})
        table = TableModel.parse(adata, region="spots", region_key="region", instance_key="spot_id")
        return SpatialData(
            images={"he": sdata.images["demo_full_image"]}, shapes={"spots": shapes}, tables={"table": table}
        )
    squares = shapely.box(centres[:, 0] - half, centres[:, 1] - half, centres[:, 0] + half, centres[:, 1] + half)
    shapes = ShapesModel.parse(gpd.GeoDataFrame(geometry=squares, index=ids), transformations={"demo": Identity()})
    adata = AnnData(
        X=x, obs=pd.DataFrame({"region": pd.Categorical(["bins"] * len(ids)), "bin_id": ids}, index=ids), var=var
    )
    table = TableModel.parse(adata, region="bins", region_key="region", instance_key="bin_id")
    return SpatialData(images={"he": sdata.images["demo_full_image"]}, shapes={"bins": shapes}, tables={"t": table})
