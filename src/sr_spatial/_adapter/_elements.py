"""What reading, writing and binning share: the bin grid, the spots, element lookup, transformations, additions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import sparse

if TYPE_CHECKING:
    from collections.abc import Mapping

    import xarray as xr
    from spatialdata import SpatialData
    from spatialdata.transformations import BaseTransformation

__all__ = ["BinGrid", "SpotData", "shallow_copy"]


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
    #: Pixel value read as white, decided once per image (:func:`sr_spatial._validate.intensity_white`).
    white: float = 1.0
    #: A fluorescence image (tissue bright on dark), read inverted (:func:`sr_spatial._validate.dark_background`).
    inverted: bool = False
    #: An RGBA image: its 4th channel is opacity, and transparent pixels read as the background.
    alpha: bool = False


def available_names(kind: str, names) -> str:
    names = sorted(names)
    return f"Available {kind}: {names}." if names else f"The object has no {kind}."


def full_resolution_level(image) -> xr.DataArray:
    """The full-resolution level of a single- or multi-scale image."""
    import xarray as xr

    if isinstance(image, xr.DataTree):
        first = sorted(image.children)[0]
        return next(iter(image[first].ds.data_vars.values()))
    return image


def image_levels(image) -> list[xr.DataArray]:
    import xarray as xr

    if isinstance(image, xr.DataTree):
        return [next(iter(image[name].ds.data_vars.values())) for name in sorted(image.children)]
    return [image]


def affine_xy(transformation: BaseTransformation) -> np.ndarray:
    return np.asarray(transformation.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def element_transformations(element) -> dict[str, BaseTransformation]:
    from spatialdata.transformations import get_transformation

    return dict(get_transformation(element, get_all=True))


def to_unit_rgb(
    crop: np.ndarray,
    white: float,
    *,
    inverted: bool = False,
    grey_to_rgb: bool = True,
    alpha: np.ndarray | None = None,
    blank: np.ndarray | None = None,
) -> np.ndarray:
    """Pixels divided by the image's ``white`` into ``[0, 1]`` RGB; NaN and ``+inf`` read as white glass.

    One grey channel is repeated into RGB (unless ``grey_to_rgb`` is false: then any one channel stays one). An
    RGBA image (4 channels, or ``alpha`` given: its opacity, on the scale of ``white``) is laid over its
    background, so transparent pixels read as glass whatever colour they hold. ``inverted`` (a fluorescence
    image) turns bright-on-dark into dark-on-white, as a brightfield H&E reads. In a brightfield image, pixels
    that are 0 in every colour channel (``blank``, default: found in ``crop``) are padding, not tissue: they read
    as glass too (no stain makes a pixel exactly black).
    """
    if alpha is None and crop.shape[0] == 4:
        alpha = crop[3]
    if blank is None and not inverted:
        blank = padding(crop)
    # In place on the one float copy: a crop of a whole slide is large, and each step would copy it again.
    crop = crop[:3].astype(np.float32)
    crop /= np.float32(white)
    if crop.shape[0] == 1 and grey_to_rgb:
        crop = np.repeat(crop, 3, axis=0)
    if alpha is not None:
        opacity = np.nan_to_num(np.asarray(alpha, dtype=np.float32) / np.float32(white), nan=1.0).clip(0.0, 1.0)
        np.nan_to_num(crop, copy=False, nan=1.0, posinf=1.0, neginf=0.0)
        np.clip(crop, 0.0, 1.0, out=crop)
        # The background is glass: white under brightfield, black under fluorescence (white once inverted).
        crop *= opacity
        if not inverted:
            crop += 1.0 - opacity
    if inverted:
        np.subtract(np.float32(1.0), crop, out=crop)
    elif blank is not None and blank.any():
        crop[:, blank] = 1.0
    np.nan_to_num(crop, copy=False, nan=1.0, posinf=1.0, neginf=0.0)
    return np.clip(crop, 0.0, 1.0, out=crop)


def padding(pixels: np.ndarray) -> np.ndarray:
    """Pixels ``(c, ...)`` that are exactly 0 in every colour channel: a brightfield image's black padding."""
    return ~np.any(pixels[:3] != 0, axis=0)


def check_free(
    sdata: SpatialData,
    names: dict,
    *,
    overwrite: bool,
    writer: str | None = None,
    inputs: set[tuple[str, str]] = frozenset(),
) -> None:
    """Raise unless every output name of ``names`` (role -> name) is free, or replaceable with ``overwrite``.

    Replaceable: an element of the kind the role writes that an earlier call of ``writer`` recorded as its own,
    and that this call does not read (``inputs``, ``(kind, name)``): an input is never replaced, whoever wrote it.
    """
    from sr_spatial._ownership import writers_of

    existing = {}
    for kind in ("images", "labels", "points", "shapes", "tables"):
        for name in getattr(sdata, kind).keys():
            existing[name.lower()] = (kind, name)
    ours = {"image": "images", "std": "images", "bins": "shapes", "table": "tables"}
    writers = writers_of(sdata)
    read = {(kind, name.lower()) for kind, name in inputs}
    taken, clashes, foreign, others, own_inputs = [], [], [], [], []
    for role, name in names.items():
        if name.lower() not in existing:
            continue
        kind, found = existing[name.lower()]
        label = f"{kind}[{found!r}]"
        taken.append(label)
        by = writers.get((kind, found))
        if kind != ours[role] or found != name:
            clashes.append(label)
        elif by is None:
            foreign.append(label)
        elif writer is not None and by != writer:
            others.append(f"{label} (written by `{by}`)")
        elif (kind, found.lower()) in read:
            own_inputs.append(label)
    if taken and (not overwrite or clashes):
        replaceable = not (clashes or foreign or others or own_inputs)
        msg = f"The output names are taken: {', '.join(taken)}. Pass another `key_added=`" + (
            " or `overwrite=True` to replace the outputs of an earlier call." if replaceable and not overwrite else "."
        )
        raise ValueError(msg)
    if foreign:
        msg = (
            f"{', '.join(foreign)} not written by sr_spatial; `overwrite=True` replaces only the outputs of an "
            "earlier call, never the slide's own elements. Pass another `key_added=`."
        )
        raise ValueError(msg)
    if others:
        msg = (
            f"{', '.join(others)} not an output of an earlier `{writer}` call; `overwrite=True` replaces only "
            f"those. Pass another `key_added=`."
        )
        raise ValueError(msg)
    if own_inputs:
        msg = (
            f"The output names would replace {', '.join(own_inputs)}, which this call reads; an input is never "
            "replaced, even with `overwrite=True`. Pass another `key_added=`."
        )
        raise ValueError(msg)


def add_elements(sdata: SpatialData, elements: dict) -> None:
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


def bin_shapes(centres_px: np.ndarray, size: float, index: pd.Index, transformations):
    import geopandas as gpd
    import shapely
    from spatialdata.models import ShapesModel

    half = size / 2
    squares = shapely.box(
        centres_px[:, 0] - half, centres_px[:, 1] - half, centres_px[:, 0] + half, centres_px[:, 1] + half
    )
    gdf = gpd.GeoDataFrame(geometry=squares, index=index)
    return ShapesModel.parse(gdf, transformations=dict(transformations))


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
