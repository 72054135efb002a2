"""Checks of what is read from a slide: tissue flags, spot geometry, counts, and the H&E's intensity range.

Each either returns the reading that is certain or raises with what to change; none guesses silently.
"""

from __future__ import annotations

import logging
import math
import re
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    import xarray as xr
    from scipy import sparse

logger = logging.getLogger("sr_spatial")

__all__ = [
    "STAINS",
    "check_stain",
    "check_counts_informative",
    "check_name",
    "check_spot_geometry",
    "check_table_x",
    "dark_background",
    "in_tissue",
    "intensity_white",
]

_TRUE = {"1", "1.0", "true", "yes", "in_tissue"}
_FALSE = {"0", "0.0", "false", "no", "out_of_tissue"}

#: Values sampled from the coarsest pyramid level to decide an image's intensity range.
SAMPLE_VALUES = 2**20
#: A background darker than this (0 black, 1 white) is a fluorescence image's, not glass under brightfield...
DARK_BACKGROUND = 0.35
#: ...when the tissue under the spots is also brighter than it by at least this much (and glass brighter than the
#: tissue by this much is brightfield's).
DARK_MARGIN = 0.05
#: Tissue brighter than this is brightfield's: a fluorescence image's tissue is dim (signal on black).
BRIGHT_TISSUE = 0.5


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


#: The values of ``stain``: how the H&E's intensities are read.
STAINS = ("auto", "brightfield", "fluorescence")


def check_stain(stain) -> None:
    """Refuse a ``stain`` other than ``"auto"``, ``"brightfield"`` or ``"fluorescence"``."""
    if not isinstance(stain, str) or stain not in STAINS:
        msg = (
            f"`stain` must be one of {list(STAINS)}, got {stain!r}: 'brightfield' for an H&E (dark tissue on light "
            "glass), 'fluorescence' for bright tissue on a dark background, 'auto' to decide from the image."
        )
        raise ValueError(msg)


def check_name(key_added) -> None:
    """Refuse a ``key_added`` that spatialdata or zarr would refuse only once the outputs are written."""
    if not isinstance(key_added, str) or not key_added:
        msg = f"`key_added` must be a non-empty name, got {key_added!r}; pass a name, or None for the default."
        raise ValueError(msg)
    reason = None
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", key_added):
        reason = "use letters, digits, '_', '.' and '-' only"
    elif key_added in (".", ".."):
        reason = "'.' and '..' name folders of a zarr store, not elements"
    elif key_added.startswith("__"):
        reason = "names starting with '__' are reserved by spatialdata and zarr"
    if reason is not None:
        msg = f"`key_added` {key_added!r} is not a valid element name: {reason}. Pass e.g. `key_added='superres'`."
        raise ValueError(msg)


def check_table_x(table, table_key: str) -> None:
    """Refuse a table whose ``X`` holds no matrix (the counts kept only in a layer)."""
    if table.X is None:
        layers = sorted(table.layers.keys())
        where = f"e.g. `table.X = table.layers[{layers[0]!r}]`" if layers else "e.g. `table.X = counts`"
        msg = (
            f"Table {table_key!r} has no `X`; the raw counts per spot and gene are read from `X`. Put them there, "
            f"{where}" + (f" (its layers: {layers})." if layers else ".")
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


def _unit_brightness(pixels: np.ndarray, white: float, *, alpha: bool) -> np.ndarray:
    """Mean RGB brightness in ``[0, 1]`` of ``(c, ...)`` pixels; transparent pixels read as white glass."""
    rgb = np.nan_to_num(pixels[:3].astype(np.float64) / white, nan=1.0, posinf=1.0, neginf=0.0).clip(0, 1)
    if alpha and pixels.shape[0] == 4:
        opacity = np.nan_to_num(pixels[3].astype(np.float64) / white, nan=1.0).clip(0, 1)
        rgb = rgb * opacity + (1.0 - opacity)
    return rgb.mean(axis=0)


def dark_background(
    level: xr.DataArray, image_key: str, spots: np.ndarray, white: float, *, stain: str = "auto", alpha: bool = False
) -> bool:
    """Whether the image shows tissue bright on a dark background (fluorescence) rather than dark on glass.

    ``level`` is the image's coarsest pyramid level, ``spots`` the spot centres ``(x, y)`` in units of its width,
    ``white`` what its values are divided by (:func:`intensity_white`), ``alpha`` whether its 4th channel is
    opacity (transparent pixels read as white glass). ``stain`` ``"brightfield"`` or ``"fluorescence"`` says
    it; ``"auto"`` decides from the tissue against its background: the tissue is the pixels within half a spot
    pitch of a spot, the background those 1 to 3 pitches from every spot (the glass around the tissue, not the
    image's border, which black padding or transparent corners fill). Glass brighter than the tissue is
    brightfield; a dark background with tissue brighter than it, fluorescence. A call that cannot tell (no
    background in sight, or dim tissue on a background like it) reads brightfield and logs a warning that says
    how to state it.
    """
    if stain != "auto":
        return stain == "fluorescence"
    from scipy.spatial import cKDTree

    sample = _coarse_sample(level)
    brightness = _unit_brightness(sample, white, alpha=alpha)
    rows, cols = brightness.shape
    # The sample's pixel centres and the spots, in units of the sample's columns.
    step_x = level.sizes["x"] / cols
    centres = spots * level.sizes["x"] / step_x
    tree = cKDTree(centres)
    pitch = float(np.median(tree.query(centres, k=2)[0][:, 1])) if len(centres) > 1 else max(rows, cols) / 10
    pitch = max(pitch, 1.0)
    yy, xx = np.mgrid[0:rows, 0:cols]
    distance = tree.query(np.column_stack([xx.ravel() + 0.5, yy.ravel() + 0.5]))[0].reshape(rows, cols) / pitch
    under = brightness[distance <= 0.5]
    if under.size == 0:
        under = _unit_brightness(_under_spots(level, spots), white, alpha=alpha)
    tissue = float(np.median(under))
    ring = brightness[(distance >= 1.0) & (distance <= 3.0)]
    bright_tissue = tissue > BRIGHT_TISSUE
    if ring.size < 16:
        dark, sure, background = False, bright_tissue, float("nan")
    else:
        background, upper = float(np.median(ring)), float(np.quantile(ring, 0.75))
        if upper >= tissue + DARK_MARGIN:
            dark, sure = False, True
        elif background < DARK_BACKGROUND and upper <= tissue - DARK_MARGIN:
            dark, sure = True, not bright_tissue
        else:
            dark, sure = False, bright_tissue
    reading = (
        "fluorescence (tissue bright on a dark background): its intensities are inverted for the histology, so "
        "that nuclei and tissue read dark on white as in a brightfield H&E"
        if dark
        else "brightfield (tissue dark on light glass)"
    )
    around = "no background in sight" if np.isnan(background) else f"the glass around it {background:.2f}"
    if sure:
        logger.info(
            "Image %r: median brightness %.2f under the spots, %s; read as %s.", image_key, tissue, around, reading
        )
    else:
        logger.warning(
            "Image %r: median brightness %.2f under the spots, %s; cannot tell brightfield from fluorescence, read "
            "as %s. Pass `stain='brightfield'` or `stain='fluorescence'` to say which it is.",
            image_key,
            tissue,
            around,
            reading,
        )
    return dark
