"""Reading spots, their counts and the H&E under a bin grid from a SpatialData, in the image's pixel space."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

from sr_spatial._adapter._elements import (
    SpotData,
    available_names,
    element_transformations,
    full_resolution_level,
    image_levels,
    padding,
    to_unit_rgb,
)
from sr_spatial._adapter._slide_checks import (
    check_placements_agree,
    check_table_columns,
    check_unique_index,
    shapes_to_pixels,
)
from sr_spatial._validate import (
    check_counts_informative,
    check_spot_geometry,
    check_stain,
    check_table_x,
    dark_background,
    in_tissue,
    intensity_white,
)

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

    from sr_spatial._adapter._elements import BinGrid

logger = logging.getLogger("sr_spatial")

__all__ = [
    "DEFAULT_TABLE_KEY",
    "read_histology",
    "read_spots",
    "resolve_table_key",
    "shapes_for_table",
    "spot_geometry",
    "table_genes",
]


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


def shapes_for_table(sdata: SpatialData, table: AnnData, table_key: str, shapes_key: str | None) -> str:
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
                f"Pass `shapes_key=`. {available_names('shapes', sdata.shapes.keys())}"
            )
            raise ValueError(msg)
        return candidates[0]
    if shapes_key not in sdata.shapes:
        msg = f"Shapes {shapes_key!r} not found. {available_names('shapes', sdata.shapes.keys())}"
        raise KeyError(msg)
    if shapes_key not in regions:
        msg = (
            f"Table {table_key!r} annotates {regions}, not shapes {shapes_key!r}. Pass the table that holds the "
            "counts of these spots with `table_key=`."
        )
        raise ValueError(msg)
    return shapes_key


def spot_geometry(shapes) -> tuple[np.ndarray, np.ndarray]:
    """Centres and radii of circles, or of the incircle-equivalent of polygons (squares of Visium HD)."""
    geom = shapes.geometry
    if "radius" in shapes.columns and (geom.geom_type == "Point").all():
        return np.column_stack([geom.x.to_numpy(), geom.y.to_numpy()]), shapes["radius"].to_numpy(dtype=float)
    centroids = geom.centroid
    # A square bin measures its whole area; the circle of the same area keeps the footprint size honest.
    radius = np.sqrt(geom.area.to_numpy() / np.pi)
    return np.column_stack([centroids.x.to_numpy(), centroids.y.to_numpy()]), radius


#: The name spatialdata-io gives a Visium slide's table of counts, and the default ``table_key``.
DEFAULT_TABLE_KEY = "table"
_TABLE_HINT = "Pass `table_key=` naming the table of raw counts per spot or bin."


def resolve_table_key(sdata, table_key):
    """``table_key``, or the slide's only table where the default ``"table"`` names none.

    Readers name tables differently (``"square_008um"``, a Xenium binning's ``"..._table"``), and references
    passed together each have their own: a slide that holds one table needs no ``table_key=``. Anything else is
    returned as given, for the caller's own error naming the tables there are.
    """
    tables = getattr(sdata, "tables", None)
    if table_key != DEFAULT_TABLE_KEY or tables is None or table_key in tables or len(tables) != 1:
        return table_key
    only = next(iter(tables.keys()))
    logger.info("The slide has no table %r; reading its only table, %r.", table_key, only)
    return only


def _check_h_and_e(level0, image_key: str, sdata: SpatialData) -> bool:
    """Refuse an image that cannot be an H&E (dims, channels, dtype); returns whether it is RGBA."""
    if tuple(level0.dims) != ("c", "y", "x"):
        msg = (
            f"Image {image_key!r} has dims {tuple(level0.dims)}; a 2D image with dims ('c', 'y', 'x') is needed. "
            "Pass a 2D H&E image, or add a single plane of this one, e.g. `image.isel(z=0)` parsed with "
            "`spatialdata.models.Image2DModel`."
        )
        raise ValueError(msg)
    channels = [str(c).lower() for c in level0.coords["c"].values] if "c" in level0.coords else []
    rgba = level0.sizes["c"] == 4 and channels[3:] in (["a"], ["alpha"])
    if level0.sizes["c"] not in (1, 3) and not rgba:
        msg = (
            f"Image {image_key!r} has {level0.sizes['c']} channels; an H&E image with 3 (RGB) channels, RGBA (the "
            f"4th channel named 'a' or 'alpha'), or 1 grey channel, is needed (its channels: {channels}). For a "
            "multi-channel fluorescence image, add one channel (e.g. DAPI) as its own image, e.g. "
            f"`sdata.images['dapi'] = Image2DModel.parse(sdata.images[{image_key!r}]['scale0']['image']"
            ".sel(c=['DAPI']).data, dims=('c', 'y', 'x'), transformations=...)`, and pass `image_key='dapi'`. "
            f"{available_names('images', sdata.images.keys())}"
        )
        raise ValueError(msg)
    if level0.dtype == bool or not np.issubdtype(level0.dtype, np.number) or np.issubdtype(level0.dtype, complex):
        msg = (
            f"Image {image_key!r} has dtype {level0.dtype}; an H&E image of integers (e.g. uint8) or floats in "
            "[0, 1] is needed. Pass the H&E image, not a mask or label image."
        )
        raise TypeError(msg)
    return rgba


def _spot_rows(table: AnnData, table_key: str, shapes, shapes_key: str):
    """The table's rows of spots of ``shapes_key`` in the tissue, their instances and their shapes' positions."""
    _, region_key, instance_key = _table_keys(table)
    check_table_columns(table, table_key, region_key=region_key, instance_key=instance_key)
    check_unique_index(shapes, shapes_key)
    rows = np.flatnonzero((table.obs[region_key] == shapes_key).to_numpy())
    if "in_tissue" in table.obs:
        rows = rows[in_tissue(table.obs["in_tissue"], table_key)[rows]]
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
    return rows, instances, shape_pos


def read_spots(
    sdata: SpatialData,
    image_key: str,
    *,
    table_key: str = "table",
    shapes_key: str | None = None,
    coordinate_system: str | None = None,
    stain: str = "auto",
) -> SpotData:
    """Read spot positions, counts and the image they lie on, in the image's full-resolution pixel space.

    Raises clear errors naming what exists when a key is missing or the elements do not fit together. ``stain``
    (``"auto"``, ``"brightfield"``, ``"fluorescence"``) says how the image's intensities read
    (:func:`sr_spatial._validate.dark_background`).
    """
    check_stain(stain)
    table_key = resolve_table_key(sdata, table_key)
    if image_key not in sdata.images:
        msg = f"Image {image_key!r} not found. {available_names('images', sdata.images.keys())}"
        raise KeyError(msg)
    if table_key not in sdata.tables:
        msg = f"Table {table_key!r} not found. {available_names('tables', sdata.tables.keys())} {_TABLE_HINT}"
        raise KeyError(msg)
    image = sdata.images[image_key]
    table = sdata.tables[table_key]
    shapes_key = shapes_for_table(sdata, table, table_key, shapes_key)
    shapes = sdata.shapes[shapes_key]

    level0 = full_resolution_level(image)
    rgba = _check_h_and_e(level0, image_key, sdata)

    image_tf = element_transformations(image)
    shapes_tf = element_transformations(shapes)
    cs = _pick_coordinate_system(image_tf, shapes_tf, coordinate_system, image_key, shapes_key)
    to_pixels = shapes_to_pixels(image_tf, shapes_tf, cs)
    if coordinate_system is None:
        check_placements_agree(image_tf, shapes_tf, cs, shapes, image_key=image_key, shapes_key=shapes_key)

    rows, instances, shape_pos = _spot_rows(table, table_key, shapes, shapes_key)

    centres, radius = spot_geometry(shapes.iloc[shape_pos])
    centres = centres @ to_pixels[:2, :2].T + to_pixels[:2, 2]
    radius = radius * np.sqrt(abs(np.linalg.det(to_pixels[:2, :2])))
    check_spot_geometry(centres, radius, pd.Index(instances), shapes_key)

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

    check_table_x(table, table_key)
    counts = table.X[rows]
    counts = sparse.csr_matrix(counts, dtype=np.float32)
    _check_counts(counts, table_key)
    check_counts_informative(counts, table_key)
    coarsest = image_levels(image)[-1]
    white = intensity_white(coarsest, image_key, centres / width, pd.Index(table.obs_names[rows]))
    inverted = dark_background(coarsest, image_key, centres / width, white, stain=stain, alpha=rgba)
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
        white=white,
        inverted=inverted,
        alpha=rgba,
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


def _local_scheduler() -> str:
    """The dask scheduler to read the H&E with: this process's, never a default cluster (workers read their own)."""
    import dask

    chosen = dask.config.get("scheduler", None)
    return chosen if chosen in ("synchronous", "sync", "single-threaded", "threads", "threading") else "threads"


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
    for level in image_levels(spots.image):
        level_factor = width0 / level.sizes["x"]
        if level_factor <= out_pixel * 1.001 and (chosen is None or level_factor > factor):
            chosen, factor = level, level_factor
    if chosen is None:
        chosen, factor = image_levels(spots.image)[0], 1.0

    # Read only the region under the grid (plus one output pixel of margin) from the chosen level.
    x_lo = max(int(np.floor(grid.x0 / factor)) - 2, 0)
    y_lo = max(int(np.floor(grid.y0 / factor)) - 2, 0)
    x_hi = min(int(np.ceil((grid.x0 + grid.width * grid.size) / factor)) + 2, chosen.sizes["x"])
    y_hi = min(int(np.ceil((grid.y0 + grid.height * grid.size) / factor)) + 2, chosen.sizes["y"])
    out_shape = (grid.height * px_per_bin, grid.width * px_per_bin)
    if x_hi <= x_lo or y_hi <= y_lo:
        return np.ones((3, *out_shape), dtype=np.float32)
    region = chosen.isel(x=slice(x_lo, x_hi), y=slice(y_lo, y_hi))
    pool = max(int(np.floor(out_pixel / factor)), 1)
    crop_pixel = factor * pool  # full-res pixels per crop pixel
    # warp maps output (col, row) to input (col, row); both are pixel centres.
    out_to_full = AffineTransform(scale=out_pixel, translation=(grid.x0 + 0.5 * out_pixel, grid.y0 + 0.5 * out_pixel))
    full_to_crop = AffineTransform(
        scale=1 / crop_pixel, translation=(-(x_lo * factor) / crop_pixel - 0.5, -(y_lo * factor) / crop_pixel - 0.5)
    )
    tf = AffineTransform(matrix=full_to_crop.params @ out_to_full.params)
    out = np.empty((3, *out_shape), dtype=np.float32)
    # The crop is read from storage once, every channel together in its own dtype (a uint8 channel is a quarter of
    # its float32 copy below): a chunk holds all channels, so reading them one by one decoded each chunk 3-4 times.
    n_read = min(4 if spots.alpha else 3, region.sizes["c"])
    crop = np.asarray(region.isel(c=slice(0, n_read)).compute(scheduler=_local_scheduler()).values)
    # An RGBA image's opacity: transparent pixels read as the background (white glass), not as their colour.
    alpha = crop[3] if spots.alpha else None
    native = [crop[channel : channel + 1] for channel in range(min(3, region.sizes["c"]))]
    del crop
    # Black padding of a brightfield image reads as glass (:func:`to_unit_rgb`); a mask of it over all channels.
    blank = None
    if not spots.inverted:
        blank = padding(native[0])
        for values in native[1:]:
            blank &= padding(values)
    for channel in range(3):
        if channel >= region.sizes["c"]:  # a grey image: its one channel is repeated into RGB
            out[channel] = out[0]
            continue
        # One channel at a time, read, scaled and resampled: the whole crop in float32 (and the resampling's
        # copies of it) is several times the output on a large slide. Each pixel is computed as for all three.
        values, native[channel] = native[channel], None
        values = to_unit_rgb(values, spots.white, inverted=spots.inverted, grey_to_rgb=False, alpha=alpha, blank=blank)
        # Area-average first, so resampling to the output pixel does not alias nuclei away.
        if pool > 1:
            # Edge-pad to whole pooling blocks: downscale_local_mean would pad with zeros and darken the last row.
            extra = [(0, 0), (0, (-values.shape[1]) % pool), (0, (-values.shape[2]) % pool)]
            values = downscale_local_mean(np.pad(values, extra, mode="edge"), (1, pool, pool))
        out[channel] = warp(values[0], tf, output_shape=out_shape, order=1, cval=1.0)
        del values
    return out


def table_genes(sdata: SpatialData, table_key: str) -> pd.Index:
    """Gene names of a table, with the same error as :func:`read_spots` when the table is missing."""
    table_key = resolve_table_key(sdata, table_key)
    if table_key not in sdata.tables:
        msg = f"Table {table_key!r} not found. {available_names('tables', sdata.tables.keys())} {_TABLE_HINT}"
        raise KeyError(msg)
    return pd.Index(sdata.tables[table_key].var_names.astype(str))
