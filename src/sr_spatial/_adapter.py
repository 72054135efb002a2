"""The SpatialData adapter: the only module that reads from or writes to a :class:`~spatialdata.SpatialData`.

Everything downstream works on plain arrays in the pixel space of the chosen image's full-resolution level.
Positions are mapped between elements through their own transformations; no coordinate-system or element name
is assumed beyond what the caller passes or the elements' metadata state.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

if TYPE_CHECKING:
    from collections.abc import Mapping

    import xarray as xr
    from anndata import AnnData
    from spatialdata import SpatialData
    from spatialdata.transformations import BaseTransformation

logger = logging.getLogger("sr_spatial")

__all__ = [
    "BinGrid",
    "SpotData",
    "bin_points",
    "check_output_names",
    "output_names",
    "read_histology",
    "read_spots",
    "shallow_copy",
    "table_genes",
    "write_superres",
]


@dataclass(frozen=True)
class BinGrid:
    """A regular grid of square bins in the pixel space of the full-resolution image.

    Bin ``(i, j)`` covers ``x in [x0 + j * size, x0 + (j + 1) * size)`` and the same for ``y`` with ``i``.
    """

    x0: float
    y0: float
    size: float
    height: int
    width: int

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    def centres(self) -> np.ndarray:
        """Bin centres as an array of shape ``(height, width, 2)`` holding ``(x, y)`` image pixels."""
        xs = self.x0 + (np.arange(self.width) + 0.5) * self.size
        ys = self.y0 + (np.arange(self.height) + 0.5) * self.size
        xx, yy = np.meshgrid(xs, ys)
        return np.stack([xx, yy], axis=-1)

    def index_of(self, xy: np.ndarray) -> np.ndarray:
        """Row and column of the bin holding each ``(x, y)`` point, shape ``(n, 2)`` as ``(i, j)``."""
        j = np.floor((xy[:, 0] - self.x0) / self.size).astype(int)
        i = np.floor((xy[:, 1] - self.y0) / self.size).astype(int)
        return np.stack([i, j], axis=1)


@dataclass(frozen=True)
class SpotData:
    """Measured spots, their counts and the histology image they sit on, in that image's pixel space."""

    centres: np.ndarray
    radius: np.ndarray
    counts: sparse.csr_matrix
    var_names: pd.Index
    obs_names: pd.Index
    image: xr.DataTree | xr.DataArray
    image_shape: tuple[int, int]
    image_transformations: Mapping[str, BaseTransformation]
    coordinate_system: str
    image_key: str
    table_key: str
    shapes_key: str


def _available(kind: str, names) -> str:
    names = sorted(names)
    return f"Available {kind}: {names}." if names else f"The object has no {kind}."


def _scale0(image) -> xr.DataArray:
    """The full-resolution level of a single- or multi-scale image."""
    import xarray as xr

    if isinstance(image, xr.DataTree):
        first = sorted(image.children)[0]
        return next(iter(image[first].ds.data_vars.values()))
    return image


def _affine_xy(transformation: BaseTransformation) -> np.ndarray:
    return np.asarray(transformation.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def _element_transformations(element) -> dict[str, BaseTransformation]:
    from spatialdata.transformations import get_transformation

    return dict(get_transformation(element, get_all=True))


def _pick_coordinate_system(image_cs, shapes_cs, coordinate_system, image_key, shapes_key) -> str:
    common = [cs for cs in image_cs if cs in shapes_cs]
    if coordinate_system is not None:
        if coordinate_system not in common:
            msg = (
                f"Coordinate system {coordinate_system!r} is not shared by image {image_key!r} "
                f"(has {sorted(image_cs)}) and shapes {shapes_key!r} (has {sorted(shapes_cs)}). "
                "Pass one that both elements are registered to."
            )
            raise ValueError(msg)
        return coordinate_system
    if not common:
        msg = (
            f"Image {image_key!r} (coordinate systems {sorted(image_cs)}) and shapes {shapes_key!r} "
            f"(coordinate systems {sorted(shapes_cs)}) share no coordinate system, so the spots cannot be placed "
            "on the image. Register both to one with `spatialdata.transformations.set_transformation`."
        )
        raise ValueError(msg)
    if len(common) > 1:
        logger.info("Image and spots share coordinate systems %s; using %r.", common, common[0])
    return common[0]


def _shapes_for_table(sdata: SpatialData, table: AnnData, table_key: str, shapes_key: str | None) -> str:
    from spatialdata.models import get_table_keys

    try:
        region, _, _ = get_table_keys(table)
    except ValueError as err:
        msg = (
            f"Table {table_key!r} does not say which shapes it annotates (no `spatialdata_attrs`). Parse it with "
            "`spatialdata.models.TableModel.parse(adata, region=..., region_key=..., instance_key=...)`."
        )
        raise ValueError(msg) from err
    regions = [region] if isinstance(region, str) else list(region)
    labels = [r for r in regions if r in sdata.labels]
    if labels and not any(r in sdata.shapes for r in regions):
        msg = (
            f"Table {table_key!r} annotates labels {labels} (e.g. segmented cells), not spots or bins. Pass a table "
            "that annotates shapes; for Xenium, count the transcripts in bins with `sr.pp.bin_transcripts(sdata, "
            "bin_size=...)` and pass `table_key='transcripts_bins_table'`."
        )
        raise ValueError(msg)
    if shapes_key is None:
        candidates = [r for r in regions if r in sdata.shapes]
        if len(candidates) != 1:
            msg = (
                f"Cannot tell which shapes hold the spots: table {table_key!r} annotates {regions}. "
                f"Pass `shapes_key=`. {_available('shapes', sdata.shapes.keys())}"
            )
            raise ValueError(msg)
        return candidates[0]
    if shapes_key not in sdata.shapes:
        msg = f"Shapes {shapes_key!r} not found. {_available('shapes', sdata.shapes.keys())}"
        raise KeyError(msg)
    if shapes_key not in regions:
        msg = (
            f"Table {table_key!r} annotates {regions}, not shapes {shapes_key!r}. Pass the table that holds the "
            "counts of these spots with `table_key=`."
        )
        raise ValueError(msg)
    return shapes_key


def _spot_geometry(shapes) -> tuple[np.ndarray, np.ndarray]:
    """Centres and radii of circles, or of the incircle-equivalent of polygons (squares of Visium HD)."""
    geom = shapes.geometry
    if "radius" in shapes.columns and (geom.geom_type == "Point").all():
        return np.column_stack([geom.x.to_numpy(), geom.y.to_numpy()]), shapes["radius"].to_numpy(dtype=float)
    centroids = geom.centroid
    # A square bin measures its whole area; the circle of the same area keeps the footprint size honest.
    radius = np.sqrt(geom.area.to_numpy() / np.pi)
    return np.column_stack([centroids.x.to_numpy(), centroids.y.to_numpy()]), radius


def read_spots(
    sdata: SpatialData,
    image_key: str,
    *,
    table_key: str = "table",
    shapes_key: str | None = None,
    coordinate_system: str | None = None,
) -> SpotData:
    """Read spot positions, counts and the image they lie on, in the image's full-resolution pixel space.

    Raises clear errors naming what exists when a key is missing or the elements do not fit together.
    """
    if image_key not in sdata.images:
        msg = f"Image {image_key!r} not found. {_available('images', sdata.images.keys())}"
        raise KeyError(msg)
    if table_key not in sdata.tables:
        msg = f"Table {table_key!r} not found. {_available('tables', sdata.tables.keys())}"
        raise KeyError(msg)
    image = sdata.images[image_key]
    table = sdata.tables[table_key]
    shapes_key = _shapes_for_table(sdata, table, table_key, shapes_key)
    shapes = sdata.shapes[shapes_key]

    level0 = _scale0(image)
    if tuple(level0.dims) != ("c", "y", "x"):
        msg = (
            f"Image {image_key!r} has dims {tuple(level0.dims)}; a 2D image with dims ('c', 'y', 'x') is needed. "
            "Pass a 2D H&E image, or add a single plane of this one, e.g. `image.isel(z=0)` parsed with "
            "`spatialdata.models.Image2DModel`."
        )
        raise ValueError(msg)
    if level0.sizes["c"] not in (1, 3):
        msg = (
            f"Image {image_key!r} has {level0.sizes['c']} channels; an H&E image with 3 (RGB) channels, "
            f"or 1 grey channel, is needed. {_available('images', sdata.images.keys())}"
        )
        raise ValueError(msg)
    if level0.dtype == bool or not np.issubdtype(level0.dtype, np.number) or np.issubdtype(level0.dtype, complex):
        msg = (
            f"Image {image_key!r} has dtype {level0.dtype}; an H&E image of integers (e.g. uint8) or floats in "
            "[0, 1] is needed. Pass the H&E image, not a mask or label image."
        )
        raise TypeError(msg)

    image_tf = _element_transformations(image)
    shapes_tf = _element_transformations(shapes)
    cs = _pick_coordinate_system(image_tf, shapes_tf, coordinate_system, image_key, shapes_key)
    # shapes -> coordinate system -> image pixels
    to_pixels = np.linalg.inv(_affine_xy(image_tf[cs])) @ _affine_xy(shapes_tf[cs])

    _, region_key, instance_key = _table_keys(table)
    rows = np.flatnonzero((table.obs[region_key] == shapes_key).to_numpy())
    if "in_tissue" in table.obs:
        rows = rows[table.obs["in_tissue"].to_numpy()[rows].astype(bool)]
    if len(rows) == 0:
        where = " in the tissue" if "in_tissue" in table.obs else ""
        msg = (
            f"Table {table_key!r} has no spots of shapes {shapes_key!r}{where}. Check `table.obs['in_tissue']` "
            "and that the table's region column names the shapes."
        )
        raise ValueError(msg)
    instances = table.obs[instance_key].to_numpy()[rows]
    shape_pos = shapes.index.get_indexer(pd.Index(instances))
    if (shape_pos < 0).any():
        missing = instances[shape_pos < 0][:5].tolist()
        msg = (
            f"{int((shape_pos < 0).sum())} rows of table {table_key!r} name instances that are not in shapes "
            f"{shapes_key!r} (e.g. {missing}). Check the table's instance key {instance_key!r}."
        )
        raise ValueError(msg)

    centres, radius = _spot_geometry(shapes.iloc[shape_pos])
    centres = centres @ to_pixels[:2, :2].T + to_pixels[:2, 2]
    radius = radius * np.sqrt(abs(np.linalg.det(to_pixels[:2, :2])))

    height, width = level0.sizes["y"], level0.sizes["x"]
    inside = (centres[:, 0] >= 0) & (centres[:, 0] < width) & (centres[:, 1] >= 0) & (centres[:, 1] < height)
    if not inside.any():
        msg = (
            f"None of the {len(centres)} spots of {shapes_key!r} lies over image {image_key!r} "
            f"({width} x {height} px) in coordinate system {cs!r}. Check the elements' transformations."
        )
        raise ValueError(msg)
    if not inside.all():
        logger.warning("%d of %d spots lie outside image %r and are ignored.", (~inside).sum(), len(inside), image_key)
    rows, centres, radius = rows[inside], centres[inside], radius[inside]

    counts = table.X[rows]
    counts = sparse.csr_matrix(counts, dtype=np.float32)
    _check_counts(counts, table_key)
    return SpotData(
        centres=centres,
        radius=radius,
        counts=counts,
        var_names=pd.Index(table.var_names.astype(str)),
        obs_names=pd.Index(table.obs_names[rows]),
        image=image,
        image_shape=(height, width),
        image_transformations=image_tf,
        coordinate_system=cs,
        image_key=image_key,
        table_key=table_key,
        shapes_key=shapes_key,
    )


def _table_keys(table: AnnData) -> tuple:
    from spatialdata.models import get_table_keys

    return get_table_keys(table)


def _check_counts(counts: sparse.csr_matrix, table_key: str) -> None:
    data = counts.data
    if not np.isfinite(data).all():
        msg = f"Table {table_key!r} has NaN or infinite values in `.X`; raw counts are needed."
        raise ValueError(msg)
    if (data < 0).any():
        msg = f"Table {table_key!r} has negative values in `.X`; raw counts are needed, not scaled data."
        raise ValueError(msg)
    fractional = data != np.round(data)
    if fractional.any():
        msg = (
            f"Table {table_key!r} has non-integer values in `.X` (e.g. {float(data[fractional][0]):.4g}); raw "
            "counts are needed, not normalised data. Put the raw counts back in `.X`, e.g. "
            "`table.X = table.layers['counts']`."
        )
        raise ValueError(msg)


def _image_levels(image) -> list[xr.DataArray]:
    import xarray as xr

    if isinstance(image, xr.DataTree):
        return [next(iter(image[name].ds.data_vars.values())) for name in sorted(image.children)]
    return [image]


def read_histology(spots: SpotData, grid: BinGrid, *, px_per_bin: int) -> np.ndarray:
    """The H&E under ``grid`` resampled to ``px_per_bin`` pixels per bin, as float32 RGB in ``[0, 1]``.

    Returns an array of shape ``(3, grid.height * px_per_bin, grid.width * px_per_bin)``. The coarsest pyramid
    level that still has at least one pixel per output pixel is read, so large slides stay cheap; pixels
    outside the image are white (glass).
    """
    from skimage.transform import AffineTransform, downscale_local_mean, warp

    out_pixel = grid.size / px_per_bin
    width0 = spots.image_shape[1]
    chosen, factor = None, 1.0
    for level in _image_levels(spots.image):
        level_factor = width0 / level.sizes["x"]
        if level_factor <= out_pixel * 1.001 and (chosen is None or level_factor > factor):
            chosen, factor = level, level_factor
    if chosen is None:
        chosen, factor = _image_levels(spots.image)[0], 1.0

    # Read only the region under the grid (plus one output pixel of margin) from the chosen level.
    x_lo = max(int(np.floor(grid.x0 / factor)) - 2, 0)
    y_lo = max(int(np.floor(grid.y0 / factor)) - 2, 0)
    x_hi = min(int(np.ceil((grid.x0 + grid.width * grid.size) / factor)) + 2, chosen.sizes["x"])
    y_hi = min(int(np.ceil((grid.y0 + grid.height * grid.size) / factor)) + 2, chosen.sizes["y"])
    out_shape = (grid.height * px_per_bin, grid.width * px_per_bin)
    if x_hi <= x_lo or y_hi <= y_lo:
        return np.ones((3, *out_shape), dtype=np.float32)
    crop = np.asarray(chosen.isel(x=slice(x_lo, x_hi), y=slice(y_lo, y_hi)).values)
    crop = _to_unit_rgb(crop, spots.image_key)

    # Area-average first, so resampling to the output pixel does not alias nuclei away.
    pool = max(int(np.floor(out_pixel / factor)), 1)
    if pool > 1:
        # Edge-pad to whole pooling blocks: downscale_local_mean would pad with zeros and darken the last row.
        extra = [(0, 0), (0, (-crop.shape[1]) % pool), (0, (-crop.shape[2]) % pool)]
        crop = downscale_local_mean(np.pad(crop, extra, mode="edge"), (1, pool, pool))
    crop_pixel = factor * pool  # full-res pixels per crop pixel
    # warp maps output (col, row) to input (col, row); both are pixel centres.
    out_to_full = AffineTransform(scale=out_pixel, translation=(grid.x0 + 0.5 * out_pixel, grid.y0 + 0.5 * out_pixel))
    full_to_crop = AffineTransform(
        scale=1 / crop_pixel, translation=(-(x_lo * factor) / crop_pixel - 0.5, -(y_lo * factor) / crop_pixel - 0.5)
    )
    tf = AffineTransform(matrix=full_to_crop.params @ out_to_full.params)
    out = np.stack([warp(ch, tf, output_shape=out_shape, order=1, cval=1.0) for ch in crop])
    return out.astype(np.float32)


def _to_unit_rgb(crop: np.ndarray, image_key: str) -> np.ndarray:
    if np.issubdtype(crop.dtype, np.integer):
        crop = crop.astype(np.float32) / np.iinfo(crop.dtype).max
    elif np.issubdtype(crop.dtype, np.floating):
        crop = crop.astype(np.float32)
        if crop.size and np.nanmax(crop) > 1.0:
            crop = crop / 255.0
    else:
        msg = f"Image {image_key!r} has dtype {crop.dtype}; an integer or float image is needed."
        raise TypeError(msg)
    if crop.shape[0] == 1:
        crop = np.repeat(crop, 3, axis=0)
    return np.clip(np.nan_to_num(crop, nan=1.0), 0.0, 1.0)


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

    ``mean`` and ``std`` may be dask arrays (e.g. over a zarr store written block by block); they must then
    already be 0 outside ``mask``, and ``bins`` gives the table's values, ``(n_bins, n_genes)`` mean and std of
    the bins in ``mask`` in row-major order. All elements are built before any is added, so a failure leaves
    ``sdata`` unchanged.
    """
    import anndata as ad
    from spatialdata.models import Image2DModel, TableModel

    names = output_names(key)
    _check_free(sdata, names, overwrite=overwrite)

    transformations = _output_transformations(spots, grid)
    rows, cols = np.nonzero(mask)
    if bins is None:
        mean = np.where(mask[None], mean, 0.0).astype(np.float32)
        std = np.where(mask[None], std, 0.0).astype(np.float32)
        bins = (mean[:, rows, cols].T, std[:, rows, cols].T)
    image = Image2DModel.parse(mean, dims=("c", "y", "x"), c_coords=list(genes), transformations=transformations)
    image_std = Image2DModel.parse(
        std, dims=("c", "y", "x"), c_coords=list(genes), transformations=dict(transformations)
    )

    centres_px = grid.centres()[rows, cols]
    bin_ids = pd.Index([f"bin_{i}_{j}" for i, j in zip(rows, cols, strict=True)], name="bin_id")
    squares = _bin_shapes(centres_px, grid.size, bin_ids, spots.image_transformations)

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
        var=pd.DataFrame(index=pd.Index(list(genes), name="gene")),
    )
    adata.layers["std"] = np.ascontiguousarray(bins[1], dtype=np.float32)
    adata.obsm["spatial"] = centres_px.astype(np.float64)
    adata.uns["spatial"] = {key: _legacy_spatial(spots, grid)}
    adata.uns[key] = uns
    table = TableModel.parse(adata, region=names["bins"], region_key="region", instance_key="bin_id")

    elements = {
        ("images", names["image"]): image,
        ("images", names["std"]): image_std,
        ("shapes", names["bins"]): squares,
        ("tables", names["table"]): table,
    }
    _add_elements(sdata, elements)


def _add_elements(sdata: SpatialData, elements: dict) -> None:
    """Add ``{(kind, name): element}`` to ``sdata``; if any addition fails, put back what was there."""
    previous = {where: getattr(sdata, where[0]).get(where[1]) for where in elements}
    try:
        for (kind, name), element in elements.items():
            if name in getattr(sdata, kind):
                del getattr(sdata, kind)[name]
            getattr(sdata, kind)[name] = element
    except Exception:
        # Put back what was there, so a failed write leaves the object as it was.
        for (kind, name), element in previous.items():
            if name in getattr(sdata, kind):
                del getattr(sdata, kind)[name]
            if element is not None:
                getattr(sdata, kind)[name] = element
        raise


def _bin_shapes(centres_px: np.ndarray, size: float, index: pd.Index, transformations):
    import geopandas as gpd
    import shapely
    from spatialdata.models import ShapesModel

    half = size / 2
    squares = shapely.box(
        centres_px[:, 0] - half, centres_px[:, 1] - half, centres_px[:, 0] + half, centres_px[:, 1] + half
    )
    gdf = gpd.GeoDataFrame(geometry=squares, index=index)
    return ShapesModel.parse(gdf, transformations=dict(transformations))


def _legacy_spatial(spots: SpotData, grid: BinGrid, *, max_side: int = 1000) -> dict:
    """The ``.uns['spatial'][library_id]`` layout that :func:`squidpy.pl.spatial_scatter` reads.

    ``.obsm['spatial']`` holds full-resolution pixels; a downsampled H&E is stored as the ``hires`` image.
    """
    level = _image_levels(spots.image)[-1]
    width0 = spots.image_shape[1]
    step = max(int(np.ceil(max(level.sizes["y"], level.sizes["x"]) / max_side)), 1)
    # A small thumbnail: computed here even when a dask cluster is the default scheduler.
    thumbnail = level[:, ::step, ::step].compute(scheduler="threads")
    pixels = _to_unit_rgb(np.asarray(thumbnail.values), spots.image_key)
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


def check_output_names(sdata: SpatialData, key: str, *, overwrite: bool) -> None:
    """Raise before any work if the elements for ``key`` cannot be written into ``sdata``."""
    _check_free(sdata, output_names(key), overwrite=overwrite)


def _check_free(sdata: SpatialData, names: dict, *, overwrite: bool) -> None:
    existing = {}
    for kind in ("images", "labels", "points", "shapes", "tables"):
        for name in getattr(sdata, kind).keys():
            existing[name.lower()] = (kind, name)
    ours = {"image": "images", "std": "images", "bins": "shapes", "table": "tables"}
    clashes = []
    for role, name in names.items():
        if name.lower() not in existing:
            continue
        kind, found = existing[name.lower()]
        if not overwrite or kind != ours[role] or found != name:
            clashes.append(f"{kind}[{found!r}]")
    if clashes:
        msg = f"The output names are taken: {', '.join(clashes)}. Pass another `key_added=`" + (
            " or `overwrite=True` to replace the outputs of an earlier call." if not overwrite else "."
        )
        raise ValueError(msg)


def table_genes(sdata: SpatialData, table_key: str) -> pd.Index:
    """Gene names of a table, with the same error as :func:`read_spots` when the table is missing."""
    if table_key not in sdata.tables:
        msg = f"Table {table_key!r} not found. {_available('tables', sdata.tables.keys())}"
        raise KeyError(msg)
    return pd.Index(sdata.tables[table_key].var_names.astype(str))


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
        msg = f"Points {points_key!r} not found. {_available('points', sdata.points.keys())}"
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
    _check_free(sdata, {"bins": key, "table": table_key}, overwrite=overwrite)

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
    shapes = _bin_shapes(centres, bin_size, bin_ids, _element_transformations(points))
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
    table = TableModel.parse(adata, region=key, region_key="region", instance_key="bin_id")
    _add_elements(sdata, {("shapes", key): shapes, ("tables", table_key): table})


def shallow_copy(sdata: SpatialData) -> SpatialData:
    """A new SpatialData holding the same elements: adding or removing elements leaves ``sdata`` alone."""
    from spatialdata import SpatialData

    return SpatialData(
        images=dict(sdata.images),
        labels=dict(sdata.labels),
        points=dict(sdata.points),
        shapes=dict(sdata.shapes),
        tables=dict(sdata.tables),
        attrs=dict(sdata.attrs),
    )
