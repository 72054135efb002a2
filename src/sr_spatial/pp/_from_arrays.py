"""A SpatialData from plain arrays: spot counts, spot centres in pixels and an H&E (:func:`from_arrays`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from anndata import AnnData
    from spatialdata import SpatialData

__all__ = ["from_arrays"]


def from_arrays(
    counts: AnnData | pd.DataFrame | np.ndarray,
    spot_centres_px: np.ndarray,
    *,
    spot_diameter_um: float,
    image: np.ndarray | str | Path,
    microns_per_pixel: float,
    genes: Sequence[str] | None = None,
    spot_names: Sequence[str] | None = None,
    dataset_id: str = "slide",
) -> SpatialData:
    """Build the SpatialData :func:`sr_spatial.tl.superresolve` reads, from any spots and their H&E.

    For data no spatialdata-io reader covers (legacy ST, Slide-seq pucks binned to spots, an in-house array):
    the spots' raw counts, their centres in the H&E's full-resolution pixels, their diameter in µm and the
    image. Laid out as :func:`spatialdata_io.visium` lays out a slide, in the coordinate system ``dataset_id``::

        sdata = sr.pp.from_arrays(counts, xy, spot_diameter_um=100, image=he, microns_per_pixel=0.5)
        sr.tl.superresolve(sdata, image_key="slide_image", scale=2)

    Parameters
    ----------
    counts
        Raw counts, spots x genes: an AnnData (``X``, its ``var_names`` the genes), a DataFrame (columns the
        genes, index the spot names) or an array or sparse matrix (then pass ``genes``).
    spot_centres_px
        ``(n_spots, 2)`` spot centres ``(x, y)`` in the image's pixels (x to the right, y down), in the order of
        ``counts``' rows.
    spot_diameter_um
        The spots' diameter in µm (55 on Visium, 100 on legacy ST).
    image
        The H&E at full resolution: an array ``(y, x, 3)`` (RGB, as :mod:`PIL` or :mod:`tifffile` read it),
        ``(y, x)`` (grey) or ``(3, y, x)``, or the path of an image file PIL reads.
    microns_per_pixel
        µm per image pixel; turns the spot diameter into pixels.
    genes
        Gene names, for ``counts`` given as an array; otherwise ``counts``' own.
    spot_names
        Spot names, for ``counts`` given as an array; default ``"spot_0"``, ``"spot_1"``, ...
    dataset_id
        Names the elements and the coordinate system.

    Returns
    -------
    A SpatialData with ``images[f"{dataset_id}_image"]`` (the H&E), ``shapes[dataset_id]`` (one circle per spot)
    and ``tables["table"]`` (the counts, annotating the circles; ``obsm["spatial"]`` the centres in pixels and
    ``uns["spatial"][dataset_id]["scalefactors"]["spot_diameter_fullres"]`` as Space Ranger records it).
    """
    from scipy import sparse
    from spatialdata import SpatialData
    from spatialdata.models import Image2DModel, ShapesModel, TableModel
    from spatialdata.transformations import Identity

    table = _counts_table(counts, genes=genes, spot_names=spot_names)
    centres = np.asarray(spot_centres_px, dtype=np.float64)
    if centres.ndim != 2 or centres.shape[1] != 2 or len(centres) != table.n_obs:
        msg = (
            f"`spot_centres_px` must be ({table.n_obs}, 2), one (x, y) per row of `counts`; got shape {centres.shape}."
        )
        raise ValueError(msg)
    for name, value in (("spot_diameter_um", spot_diameter_um), ("microns_per_pixel", microns_per_pixel)):
        if not isinstance(value, int | float | np.number) or not np.isfinite(value) or value <= 0:
            msg = f"`{name}` must be a positive number, got {value!r}."
            raise ValueError(msg)
    pixels = _image_array(image)
    height, width = pixels.shape[1:]
    outside = (centres[:, 0] < 0) | (centres[:, 0] >= width) | (centres[:, 1] < 0) | (centres[:, 1] >= height)
    if outside.all():
        msg = (
            f"No spot centre lies on the {width} x {height} px image. `spot_centres_px` must be (x, y) in the "
            "full-resolution image's pixels; swap the columns if they are (row, column), or scale them to this image."
        )
        raise ValueError(msg)
    diameter_px = float(spot_diameter_um) / float(microns_per_pixel)
    to_cs = {dataset_id: Identity()}
    channels = ["r", "g", "b"] if pixels.shape[0] == 3 else ["grey"]
    he = Image2DModel.parse(pixels, dims=("c", "y", "x"), c_coords=channels, transformations=to_cs)
    circles = ShapesModel.parse(
        centres, geometry=0, radius=np.full(len(centres), diameter_px / 2), transformations=to_cs
    )
    circles.index = pd.RangeIndex(len(centres))
    table.obs["region"] = pd.Categorical([dataset_id] * table.n_obs)
    table.obs["spot_id"] = np.arange(table.n_obs)
    table.obsm["spatial"] = centres.copy()
    table.uns["spatial"] = {
        dataset_id: {"scalefactors": {"spot_diameter_fullres": diameter_px, "microns_per_pixel": microns_per_pixel}}
    }
    if not sparse.issparse(table.X):
        table.X = sparse.csr_matrix(np.asarray(table.X, dtype=np.float32))
    table = TableModel.parse(table, region=dataset_id, region_key="region", instance_key="spot_id")
    return SpatialData(images={f"{dataset_id}_image": he}, shapes={dataset_id: circles}, tables={"table": table})


def _counts_table(counts, *, genes, spot_names) -> AnnData:
    """``counts`` as a fresh AnnData of spots x genes with string names (the caller's object is not changed)."""
    import anndata as ad
    from scipy import sparse

    if isinstance(counts, ad.AnnData):
        table = ad.AnnData(X=counts.X.copy(), obs=pd.DataFrame(index=counts.obs_names.astype(str)))
        table.var_names = counts.var_names.astype(str)
    elif isinstance(counts, pd.DataFrame):
        table = ad.AnnData(X=counts.to_numpy(dtype=np.float32), obs=pd.DataFrame(index=counts.index.astype(str)))
        table.var_names = counts.columns.astype(str)
    else:
        matrix = counts.copy() if sparse.issparse(counts) else np.array(counts, dtype=np.float32)
        if genes is None or len(genes) != matrix.shape[1]:
            msg = f"`counts` is a matrix of {matrix.shape[1]} genes: pass `genes=` with their {matrix.shape[1]} names."
            raise ValueError(msg)
        names = spot_names if spot_names is not None else [f"spot_{i}" for i in range(matrix.shape[0])]
        table = ad.AnnData(X=matrix, obs=pd.DataFrame(index=pd.Index(names).astype(str)))
        table.var_names = pd.Index(genes).astype(str)
    if table.var_names.has_duplicates:
        dups = table.var_names[table.var_names.duplicated()].unique()[:5].tolist()
        msg = f"Gene names are duplicated (e.g. {dups}); sum or rename them first."
        raise ValueError(msg)
    return table


def _image_array(image) -> np.ndarray:
    """The H&E as ``(c, y, x)``, ``c`` 3 (RGB) or 1 (grey)."""
    if not isinstance(image, np.ndarray):
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None  # whole-slide H&E are larger than PIL's guard against decompression bombs
        with Image.open(image) as opened:
            image = np.asarray(opened.convert("RGB"))
    if image.ndim == 2:
        return image[None]
    if image.ndim == 3 and image.shape[-1] in (3, 4) and image.shape[0] not in (3, 4):
        return np.moveaxis(image[..., :3], -1, 0)
    if image.ndim == 3 and image.shape[0] in (1, 3):
        return image
    msg = f"`image` must be (y, x, 3), (y, x) or (3, y, x); got shape {image.shape}."
    raise ValueError(msg)
