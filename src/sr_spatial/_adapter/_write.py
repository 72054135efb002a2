"""Writing super-resolved maps into a SpatialData: images, their standard deviation, bin shapes and a table."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sr_spatial._adapter._elements import add_elements, bin_shapes, check_free, image_levels, to_unit_rgb
from sr_spatial._ownership import mark_written

if TYPE_CHECKING:
    from spatialdata import SpatialData
    from spatialdata.transformations import BaseTransformation

    from sr_spatial._adapter._elements import BinGrid, SpotData

__all__ = ["WRITER", "check_output_names", "input_elements", "output_names", "per_gene_columns", "write_superres"]

# Records of ``uns[key]`` that are not results per gene, though they may hold lists as long as the genes.
_NOT_PER_GENE = {"params", "spatial", "sr_spatial"}
#: The writer recorded with the outputs; ``overwrite=True`` replaces only elements it wrote.
WRITER = "superresolve"


def _output_transformations(spots: SpotData, grid: BinGrid) -> dict[str, BaseTransformation]:
    """Bin-grid pixels -> full-resolution image pixels -> every coordinate system the image is registered to."""
    from spatialdata.transformations import Scale, Sequence, Translation

    to_image = [Scale([grid.size, grid.size], axes=("x", "y")), Translation([grid.x0, grid.y0], axes=("x", "y"))]
    return {cs: Sequence([*to_image, tf]) for cs, tf in spots.image_transformations.items()}


def write_superres(
    sdata: SpatialData,
    *,
    key: str,
    spots: SpotData,
    grid: BinGrid,
    genes: list[str],
    mean: np.ndarray,
    std: np.ndarray,
    mask: np.ndarray,
    uns: dict,
    overwrite: bool = False,
    bins: tuple[np.ndarray, np.ndarray] | None = None,
) -> None:
    """Write the super-resolved maps into ``sdata`` as images, bin shapes and a table.

    The images are NaN outside ``mask`` (the tissue), so that viewers draw them transparent there; the table
    holds the bins in ``mask`` only. ``mean`` and ``std`` may be dask arrays (e.g. over a zarr store written
    block by block); they must then already be NaN outside ``mask``, and ``bins`` gives the table's values,
    ``(n_bins, n_genes)`` mean and std of the bins in ``mask`` in row-major order. All elements are built before
    any is added, so a failure leaves ``sdata`` unchanged.
    """
    import anndata as ad
    from spatialdata.models import Image2DModel, TableModel

    names = output_names(key)
    check_free(sdata, names, overwrite=overwrite, writer=WRITER)

    transformations = _output_transformations(spots, grid)
    rows, cols = np.nonzero(mask)
    if bins is None:
        mean = np.where(mask[None], mean, np.nan).astype(np.float32)
        std = np.where(mask[None], std, np.nan).astype(np.float32)
        bins = (mean[:, rows, cols].T, std[:, rows, cols].T)
    image = Image2DModel.parse(mean, dims=("c", "y", "x"), c_coords=list(genes), transformations=transformations)
    image_std = Image2DModel.parse(
        std, dims=("c", "y", "x"), c_coords=list(genes), transformations=dict(transformations)
    )

    centres_px = grid.centres()[rows, cols]
    bin_ids = pd.Index([f"bin_{i}_{j}" for i, j in zip(rows, cols, strict=True)], name="bin_id")
    squares = bin_shapes(centres_px, grid.size, bin_ids, spots.image_transformations)

    adata = ad.AnnData(
        X=np.ascontiguousarray(bins[0], dtype=np.float32),
        obs=pd.DataFrame(
            {
                "bin_id": bin_ids.to_numpy(),
                "region": pd.Categorical([names["bins"]] * len(rows)),
                "array_row": rows.astype(np.int32),
                "array_col": cols.astype(np.int32),
            },
            index=bin_ids.to_numpy(),
        ),
        var=per_gene_columns(uns, list(genes)),
    )
    adata.layers["std"] = np.ascontiguousarray(bins[1], dtype=np.float32)
    adata.obsm["spatial"] = centres_px.astype(np.float64)
    adata.uns["spatial"] = {key: _legacy_spatial(spots, grid)}
    adata.uns[key] = uns
    mark_written(
        adata,
        writer=WRITER,
        key=key,
        elements={"images": [names["image"], names["std"]], "shapes": [names["bins"]], "tables": [names["table"]]},
    )
    table = TableModel.parse(adata, region=names["bins"], region_key="region", instance_key="bin_id")

    elements = {
        ("images", names["image"]): image,
        ("images", names["std"]): image_std,
        ("shapes", names["bins"]): squares,
        ("tables", names["table"]): table,
    }
    add_elements(sdata, elements)


def per_gene_columns(uns: dict, genes: list[str]) -> pd.DataFrame:
    """The output table's ``var``: one row per gene, a column per per-gene result recorded in ``uns``.

    Every 1-D numeric array of ``uns`` (or of a record one level down, such as ``uns["histology"]``) as long as
    ``genes`` becomes a column, named after its key, prefixed by its record's name one level down and without a
    ``_per_gene`` suffix: ``uns["histology"]["weight"]`` -> ``var["histology_weight"]``,
    ``uns["coverage_scale"]`` -> ``var["coverage_scale"]``, ``uns["spot_residual_per_gene"]`` ->
    ``var["spot_residual"]``. ``uns`` itself is left as it is, so the arrays stay where they were.
    """
    n_genes = len(genes)

    def is_per_gene(value) -> bool:
        return (
            isinstance(value, np.ndarray)
            and value.ndim == 1
            and len(value) == n_genes
            and (np.issubdtype(value.dtype, np.number) or value.dtype == bool)
        )

    columns = {}
    for name, value in uns.items():
        if name in _NOT_PER_GENE:
            continue
        if is_per_gene(value):
            columns[name.removesuffix("_per_gene")] = value
        elif isinstance(value, dict):
            for inner, item in value.items():
                if is_per_gene(item):
                    columns[f"{name}_{inner.removesuffix('_per_gene')}"] = item
    return pd.DataFrame(columns, index=pd.Index(list(genes), name="gene"))


def _legacy_spatial(spots: SpotData, grid: BinGrid, *, max_side: int = 1000) -> dict:
    """The ``.uns['spatial'][library_id]`` layout that :func:`squidpy.pl.spatial_scatter` reads.

    ``.obsm['spatial']`` holds full-resolution pixels; a downsampled H&E is stored as the ``hires`` image.
    """
    level = image_levels(spots.image)[-1]
    width0 = spots.image_shape[1]
    step = max(int(np.ceil(max(level.sizes["y"], level.sizes["x"]) / max_side)), 1)
    # A small thumbnail: computed here even when a dask cluster is the default scheduler.
    thumbnail = level[:, ::step, ::step].compute(scheduler="threads")
    pixels = to_unit_rgb(np.asarray(thumbnail.values), spots.white)
    scalef = pixels.shape[2] / width0
    hires = (np.moveaxis(pixels, 0, -1) * 255).round().astype(np.uint8)
    return {
        "images": {"hires": hires},
        "scalefactors": {
            "tissue_hires_scalef": float(scalef),
            "tissue_lowres_scalef": float(scalef),
            "spot_diameter_fullres": float(grid.size),
        },
    }


def output_names(key: str) -> dict[str, str]:
    """Element names written for ``key``; SpatialData needs names unique across element types."""
    return {"image": key, "std": f"{key}_std", "bins": f"{key}_bins", "table": f"{key}_table"}


def input_elements(
    sdata: SpatialData, *, image_key: str | None, table_key: str | None, shapes_key: str | None
) -> set[tuple[str, str]]:
    """``(kind, name)`` of the elements a call reads: the image, the table and the shapes it annotates."""
    inputs = set()
    if isinstance(image_key, str):
        inputs.add(("images", image_key))
    if isinstance(table_key, str):
        inputs.add(("tables", table_key))
        table = sdata.tables.get(table_key) if hasattr(sdata, "tables") else None
        attrs = table.uns.get("spatialdata_attrs", {}) if table is not None else {}
        region = attrs.get("region") if isinstance(attrs, dict) else None
        regions = [region] if isinstance(region, str) else list(region) if region is not None else []
        inputs.update(("shapes", str(r)) for r in regions)
    if isinstance(shapes_key, str):
        inputs.add(("shapes", shapes_key))
    return inputs


def check_output_names(
    sdata: SpatialData,
    key: str,
    *,
    overwrite: bool,
    image_key: str | None = None,
    table_key: str | None = None,
    shapes_key: str | None = None,
) -> None:
    """Raise before any work if the elements for ``key`` cannot be written into ``sdata``.

    ``overwrite`` replaces only the outputs of an earlier ``superresolve`` call, and never an element this call
    reads (the image, the table and the shapes it annotates), whoever wrote it.
    """
    inputs = input_elements(sdata, image_key=image_key, table_key=table_key, shapes_key=shapes_key)
    check_free(sdata, output_names(key), overwrite=overwrite, writer=WRITER, inputs=inputs)
