"""Checks of what is read from a slide: tissue flags, spot geometry, counts, and the H&E's intensity range.

Each either returns the reading that is certain or raises with what to change; none guesses silently.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import xarray as xr
    from scipy import sparse

logger = logging.getLogger("sr_spatial")

__all__ = ["check_counts_informative", "check_spot_geometry", "dark_background", "in_tissue", "intensity_white"]

_TRUE = {"1", "1.0", "true", "yes", "in_tissue"}
_FALSE = {"0", "0.0", "false", "no", "out_of_tissue"}

#: Values sampled from the coarsest pyramid level to decide an image's intensity range.
SAMPLE_VALUES = 2**20
#: Share of the image's width and height, on each side, whose pixels show its background.
BORDER = 0.05
#: A background darker than this (0 black, 1 white) is a fluorescence image's, not glass under brightfield...
DARK_BACKGROUND = 0.35
#: ...when the tissue under the spots is also brighter than it by at least this much.
DARK_MARGIN = 0.05


def in_tissue(column: pd.Series, table_key: str) -> np.ndarray:
    """``obs['in_tissue']`` as booleans: numbers 0/1, booleans, or their text ("1"/"0", "true"/"false")."""
    if pd.api.types.is_bool_dtype(column):
        return column.to_numpy(dtype=bool)
    if pd.api.types.is_numeric_dtype(column):
        values = column.to_numpy(dtype=float)
        unknown = sorted(set(values[~np.isin(values, (0.0, 1.0))].tolist()), key=str)
        flags = values == 1.0
    else:
        text = column.astype(str).str.strip().str.lower().to_numpy()
        unknown = sorted(set(text) - _TRUE - _FALSE)
        flags = np.isin(text, list(_TRUE))
    if unknown:
        msg = (
            f"Table {table_key!r} column `obs['in_tissue']` holds {unknown[:5]}, which do not say whether a spot is "
            "in the tissue; use 1/0 or True/False, e.g. `table.obs['in_tissue'] = (table.obs['in_tissue'] == "
            "'yes').astype(int)`."
        )
        raise ValueError(msg)
    return flags


def check_spot_geometry(centres: np.ndarray, radius: np.ndarray, names: pd.Index, shapes_key: str) -> None:
    """Refuse spots without a finite position, with a radius that is not positive, or sharing a position."""
    bad = ~np.isfinite(centres).all(axis=1)
    if bad.any():
        msg = (
            f"{int(bad.sum())} spots of shapes {shapes_key!r} have no finite position (e.g. "
            f"{names[bad][:3].tolist()}). Drop them from the shapes and the table."
        )
        raise ValueError(msg)
    bad = ~(np.isfinite(radius) & (radius > 0))
    if bad.any():
        examples = [f"{n}: {r}" for n, r in zip(names[bad][:3], radius[bad][:3], strict=True)]
        msg = (
            f"{int(bad.sum())} spots of shapes {shapes_key!r} have a radius that is 0, negative or NaN (e.g. "
            f"{examples}). Set the spots' radius in the shapes' units, e.g. `sdata.shapes[{shapes_key!r}]['radius'] "
            "= spot_diameter_fullres / 2` for Visium."
        )
        raise ValueError(msg)
    _, first, counts = np.unique(centres, axis=0, return_inverse=True, return_counts=True)
    shared = counts[first.ravel()] > 1
    if shared.any():
        msg = (
            f"{int(shared.sum())} spots of shapes {shapes_key!r} share their position with another spot (e.g. "
            f"{names[shared][:4].tolist()}). Each spot needs its own position: drop the duplicated spots from the "
            "shapes and the table, or check the shapes' geometry."
        )
        raise ValueError(msg)


def check_counts_informative(counts: sparse.csr_matrix, table_key: str) -> None:
    """Refuse a table without genes or whose spots hold no counts at all."""
    if counts.shape[1] == 0:
        msg = f"Table {table_key!r} has no genes (its `var` is empty). Pass the table of raw counts per gene."
        raise ValueError(msg)
    if counts.count_nonzero() == 0:
        msg = (
            f"Table {table_key!r} holds only zeros for the {counts.shape[0]} spots in the tissue. Pass the table of "
            "raw counts, e.g. `table.X = table.layers['counts']`."
        )
        raise ValueError(msg)


def _bit_depth_white(value: float) -> float:
    """The full-scale value of the smallest bit depth of at least 8 bits that holds ``value``."""
    bits = max(8, math.ceil(math.log2(max(value, 1.0) + 1)))
    return float(2**bits - 1)


def _coarse_sample(level: xr.DataArray) -> np.ndarray:
    """A strided sample of ``level`` (at most about :data:`SAMPLE_VALUES` values), ``(c, y, x)``.

    Read here even when a dask cluster is the default scheduler: a small sample of the smallest level.
    """
    step = max(1, math.ceil(math.sqrt(level.sizes["y"] * level.sizes["x"] * level.sizes["c"] / SAMPLE_VALUES)))
    return np.asarray(level[:, ::step, ::step].compute(scheduler="threads").values)


def _under_spots(level: xr.DataArray, spots: np.ndarray) -> np.ndarray:
    """The pixels of ``level`` under each spot centre (``(x, y)`` in units of its width), ``(c, n_spots)``."""
    import xarray as xr

    on_level = np.floor(spots * level.sizes["x"]).astype(int)
    rows, cols = on_level[:, 1].clip(0, level.sizes["y"] - 1), on_level[:, 0].clip(0, level.sizes["x"] - 1)
    return np.asarray(level.isel(y=xr.DataArray(rows), x=xr.DataArray(cols)).compute(scheduler="threads").values)


def intensity_white(level: xr.DataArray, image_key: str, spots: np.ndarray, spot_names: pd.Index) -> float:
    """The value an H&E's pixels are divided by to lie in ``[0, 1]``, decided once for the whole image.

    ``level`` is the image's coarsest pyramid level, sampled (at most :data:`SAMPLE_VALUES` values) to see the
    range its values use; ``spots`` the spot centres ``(x, y)`` in units of the image's width. Integers are read on the
    scale of the bit depth their values use (a uint16 image holding 0-255 is 8-bit); floats on ``[0, 1]`` when
    nearly all of them lie there (a stray pixel above 1 does not darken the slide), else on the bit depth their
    values use. NaN under a spot is refused; elsewhere NaN and ``+inf`` read as white glass, ``-inf`` as black.
    """
    dtype = level.dtype
    sample = _coarse_sample(level)
    if np.issubdtype(dtype, np.integer):
        top = float(sample.max()) if sample.size else 0.0
        white = float(np.iinfo(dtype).max) if dtype == np.uint8 else min(_bit_depth_white(top), np.iinfo(dtype).max)
        logger.info("Image %r (%s, values up to %g): read on a 0-%g scale.", image_key, dtype, top, white)
        return white
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        msg = (
            f"Image {image_key!r} holds no finite values (all NaN or infinite); it cannot be read as an H&E. Pass the "
            "H&E image, or fill its missing pixels first."
        )
        raise ValueError(msg)
    under_spots = _under_spots(level, spots)
    missing = np.isnan(under_spots).any(axis=0)
    if missing.any():
        msg = (
            f"Image {image_key!r} has NaN pixels under {int(missing.sum())} of {len(missing)} spots (e.g. "
            f"{spot_names[missing][:3].tolist()}), which cannot be read as tissue. Fill them (e.g. "
            "`image.fillna(...)` with the background colour) or pass an image that covers the spots."
        )
        raise ValueError(msg)
    typical = float(np.quantile(finite, 0.999))
    white = 1.0 if typical <= 1.0 else 255.0 if typical <= 255.0 else _bit_depth_white(typical)
    non_finite = int(sample.size - finite.size)
    note = (
        f"; {non_finite} of {sample.size} sampled values are not finite (NaN, inf read as white)" if non_finite else ""
    )
    logger.info(
        "Image %r (%s, 99.9%% of values up to %g): read on a 0-%g scale%s.", image_key, dtype, typical, white, note
    )
    return white


def dark_background(level: xr.DataArray, image_key: str, spots: np.ndarray, white: float) -> bool:
    """Whether the image shows tissue bright on a dark background (fluorescence) rather than dark on glass.

    ``level`` is the image's coarsest pyramid level, ``spots`` the spot centres ``(x, y)`` in units of its width,
    ``white`` what its values are divided by (:func:`intensity_white`). The background is the median brightness of
    the image's outer :data:`BORDER` frame, the tissue that of the pixels under the spots. A fully covered crop
    (no background) of a brightfield H&E stays brightfield: its border is tissue, brighter than
    :data:`DARK_BACKGROUND`.
    """
    sample = _coarse_sample(level).astype(np.float64)
    brightness = np.nan_to_num(sample[:3].mean(axis=0) / white, nan=1.0, posinf=1.0, neginf=0.0)
    rows, cols = brightness.shape
    dr, dc = max(1, int(BORDER * rows)), max(1, int(BORDER * cols))
    frame = np.ones_like(brightness, dtype=bool)
    frame[dr:-dr, dc:-dc] = False
    background = float(np.median(brightness[frame]))
    under = _under_spots(level, spots).astype(np.float64)
    tissue = float(np.median(np.nan_to_num(under[:3].mean(axis=0) / white, nan=1.0)))
    dark = background < DARK_BACKGROUND and tissue > background + DARK_MARGIN
    if dark:
        logger.info(
            "Image %r shows tissue (median brightness %.2f under the spots) on a dark background (%.2f), as a "
            "fluorescence image does: its intensities are inverted for the histology, so that nuclei and tissue "
            "read dark on white as in a brightfield H&E.",
            image_key,
            tissue,
            background,
        )
    return dark
