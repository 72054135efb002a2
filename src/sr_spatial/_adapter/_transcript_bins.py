"""Binning transcripts: counts of each gene's points in square bins, written back as shapes and a table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from sr_spatial._adapter._elements import add_elements, available_names, bin_shapes, check_free, element_transformations
from sr_spatial._ownership import mark_written

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = ["CONTROL_PREFIXES", "bin_points"]


#: Feature-name prefixes of 10x Xenium's control probes and codewords: not genes, never counted.
CONTROL_PREFIXES = (
    "NegControlProbe_",
    "NegControlCodeword_",
    "UnassignedCodeword_",
    "DeprecatedCodeword_",
    "BLANK_",
    "Intergenic_Region_",
    "antisense_",
)


def bin_points(
    sdata: SpatialData,
    points_key: str,
    *,
    bin_size: float,
    key: str,
    min_qv: float | None,
    overwrite: bool,
) -> None:
    """Count the points of each feature in square bins of ``bin_size`` (points' own units) and write them back.

    Writes shapes ``key`` (one square per bin holding points, registered like the points) and table
    ``f"{key}_table"`` annotating them with the counts. Partitions of the (dask) points are counted one at a
    time, so memory grows with the number of bins, not of transcripts.
    """
    import anndata as ad
    from spatialdata.models import TableModel

    if points_key not in sdata.points:
        msg = f"Points {points_key!r} not found. {available_names('points', sdata.points.keys())}"
        raise KeyError(msg)
    if not np.isfinite(bin_size) or bin_size <= 0:
        msg = f"`bin_size` must be a positive number (in the points' units, µm for Xenium), got {bin_size!r}."
        raise ValueError(msg)
    points = sdata.points[points_key]
    feature_key = points.attrs.get("spatialdata_attrs", {}).get("feature_key")
    if feature_key is None or feature_key not in points.columns:
        msg = (
            f"Points {points_key!r} do not say which column holds the gene (no `feature_key`). Parse them with "
            "`spatialdata.models.PointsModel.parse(..., feature_key=...)`."
        )
        raise ValueError(msg)
    table_key = f"{key}_table"
    check_free(
        sdata,
        {"bins": key, "table": table_key},
        overwrite=overwrite,
        writer="bin_transcripts",
        inputs={("points", points_key)},
    )

    features = points[feature_key]
    if hasattr(features, "cat") and features.cat.known:
        names = pd.Index(features.cat.categories.astype(str))
    else:
        names = pd.Index(features.astype(str).drop_duplicates().compute().sort_values())
    genes = names[~names.str.startswith(CONTROL_PREFIXES)]
    if len(genes) == 0:
        msg = f"Points {points_key!r} hold no genes in column {feature_key!r} (only control probes or nothing)."
        raise ValueError(msg)
    use_qv = min_qv is not None and "qv" in points.columns

    keys, cols, counts = [], [], []
    for part in points.to_delayed():
        frame = part.compute()
        if use_qv:
            frame = frame[frame["qv"].to_numpy() >= min_qv]
        gene = genes.get_indexer(frame[feature_key].astype(str))
        keep = gene >= 0
        ij = np.floor(frame[["y", "x"]].to_numpy()[keep] / bin_size).astype(np.int64)
        keys.append(ij)
        cols.append(gene[keep])
    ij = np.concatenate(keys) if keys else np.zeros((0, 2), dtype=np.int64)
    gene = np.concatenate(cols) if cols else np.zeros(0, dtype=np.int64)
    if len(ij) == 0:
        msg = f"Points {points_key!r} hold no transcripts to bin" + (f" with qv >= {min_qv}." if use_qv else ".")
        raise ValueError(msg)
    bins, row = np.unique(ij, axis=0, return_inverse=True)
    counts = sparse.csr_matrix(
        (np.ones(len(row), dtype=np.float32), (row.ravel(), gene)), shape=(len(bins), len(genes))
    )
    counts.sum_duplicates()

    centres = (bins[:, ::-1] + 0.5) * bin_size  # (x, y)
    bin_ids = pd.Index([f"bin_{i}_{j}" for i, j in bins], name="bin_id")
    shapes = bin_shapes(centres, bin_size, bin_ids, element_transformations(points))
    adata = ad.AnnData(
        X=counts,
        obs=pd.DataFrame(
            {
                "bin_id": bin_ids.to_numpy(),
                "region": pd.Categorical([key] * len(bins)),
                "array_row": bins[:, 0],
                "array_col": bins[:, 1],
            },
            index=bin_ids.to_numpy(),
        ),
        var=pd.DataFrame(index=pd.Index(genes, name="gene")),
    )
    adata.obsm["spatial"] = centres.astype(np.float64)
    adata.uns[key] = {"params": {"points_key": points_key, "bin_size": float(bin_size), "min_qv": min_qv}}
    mark_written(adata, writer="bin_transcripts", key=key, elements={"shapes": [key], "tables": [table_key]})
    table = TableModel.parse(adata, region=key, region_key="region", instance_key="bin_id")
    add_elements(sdata, {("shapes", key): shapes, ("tables", table_key): table})
