"""Reference slides with finer truth: their units pooled into pseudo-spots as the target measures, for training.

A reference's spots or bins are at the output's scale: its units are what the output's bins should be. They are
pooled into pseudo-spots as the target measures (its lattice, pitch over ``scale`` units, and spot radius relative
to its pitch; Visium's without a target, :func:`target_geometry`), at several offsets of the lattice
(:func:`pool_bins`, :func:`pool_groups`). Each reference is read on a grid of bins one unit wide
(:func:`reference_map`), the same physical resolution as the target's output bins; bins finer than the output's are
first pooled into units of its size (:func:`~sr_spatial.core._aggregate.aggregate_units`). What each method learns
from them is its own: the diffusion model's true pairs (:mod:`sr_spatial.diffusion._reference`), the histology
predictor's units (:mod:`sr_spatial.histology._method`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from sr_spatial._adapter._elements import BinGrid
from sr_spatial._adapter._read import resolve_table_key, shapes_for_table, spot_geometry
from sr_spatial.core._aggregate import aggregate_units
from sr_spatial.core._groups import group_means
from sr_spatial.core._reference_slides import about_reference, genes_of_request, reference_name, shared_genes
from sr_spatial.pp._lattice import TISSUE_REACH, lattice_phase, spot_pitch, visium_lattice
from sr_spatial.pp._stmap import SpotRenderer

if TYPE_CHECKING:
    from collections.abc import Sequence

    from spatialdata import SpatialData

    from sr_spatial._adapter._elements import SpotData
    from sr_spatial.pp._stmap import STMap

logger = logging.getLogger("sr_spatial")

__all__ = [
    "SPOT_DIAMETER_RATIO",
    "PseudoSpots",
    "about_reference",
    "bin_aligned_map",
    "disk_groups",
    "finest_target_grid",
    "genes_of_request",
    "pool_bins",
    "pool_groups",
    "read_px_per_bin",
    "reference_map",
    "reference_name",
    "shared_genes",
    "square_lattice",
    "target_image_candidates",
    "target_geometry",
]

#: Visium's spot diameter over its centre-to-centre pitch (55 µm / 100 µm).
SPOT_DIAMETER_RATIO = 0.55


def bin_aligned_map(st_map: STMap, *, expression: bool = True) -> STMap:
    """The map re-rendered on a grid whose bins coincide with the measured bins (one grid bin per bin pitch).

    :func:`~sr_spatial.pp.build_st_map` pads its grid by a fraction of a pitch, which would shift every
    target bin against the histology under it by a quarter bin; here the grid starts half a pitch before the
    first bin centre, so a square lattice of bins maps one to one onto the grid. With ``expression=False`` only
    the mask and footprint are rendered (``nearest`` and ``smooth`` are ``None``), for the histology predictor,
    which reads the units' values and features, not their maps.
    """
    pitch = st_map.pitch
    margin = int(np.ceil(TISSUE_REACH))
    lo = st_map.centres.min(axis=0) - (margin + 0.5) * pitch
    extent = st_map.centres.max(axis=0) - st_map.centres.min(axis=0)
    width, height = (np.round(extent / pitch).astype(int) + 2 * margin + 1).tolist()
    grid = BinGrid(x0=float(lo[0]), y0=float(lo[1]), size=float(pitch), height=height, width=width)
    renderer = SpotRenderer(st_map.centres, st_map.values, pitch=pitch, radius=st_map.radius)
    nearest, smooth, mask, footprint = renderer.render(grid, expression=expression)
    return replace(st_map, grid=grid, nearest=nearest, smooth=smooth, mask=mask, footprint=footprint)


def disk_groups(centres: np.ndarray, spots: np.ndarray, *, radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's pseudo-spot: the nearest of ``spots`` whose disk holds its centre (``-1`` outside every disk).

    Returns the group of each unit, numbered over the pseudo-spots that hold at least one unit, and the indices of
    those pseudo-spots in ``spots``.
    """
    distance, nearest = cKDTree(spots).query(centres)
    inside = distance <= radius
    group = np.full(len(centres), -1)
    used, group[inside] = np.unique(nearest[inside], return_inverse=True)
    return group, used


def pool_bins(
    centres: np.ndarray, values: np.ndarray, spots: np.ndarray, *, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-spots measuring the bins whose centre lies in their disk, as a spot would (mean in linear space).

    Returns
    -------
    The centres ``(m, 2)`` of the pseudo-spots that hold at least one bin and their log-normalised values.
    """
    group, used = disk_groups(centres, spots, radius=radius)
    inside = group >= 0
    pooled, _ = group_means(np.expm1(values[inside].astype(np.float64)).T, group[inside], len(used))
    return spots[used], np.log1p(pooled.T).astype(np.float32)


#: Offsets of the pooling lattice per reference: each pools the same units into other pseudo-spots.
N_OFFSETS = 4
#: Channels of an image that may be the target's H&E (RGB, RGBA), where the call does not name it.
MAX_IMAGE_CHANNELS = 4
#: Pseudo-spots of two or more units, over all offsets, below which a reference teaches nothing within a spot.
MIN_TRAINING_GROUPS = 10


@dataclass(frozen=True)
class PseudoSpots:
    """How the target measures, relative to its pitch: the lattice's kind and the spots' radius over the pitch."""

    lattice: str
    radius_ratio: float


def target_geometry(target: SpatialData | None, slide) -> PseudoSpots:
    """The target's lattice (``"hexagonal"`` or ``"square"``) and spot radius over pitch; Visium's without one.

    Both are ratios, read off the spots' shapes in their own coordinates: no image is needed.
    """
    if target is None:
        return PseudoSpots("hexagonal", SPOT_DIAMETER_RATIO / 2)
    table_key = resolve_table_key(target, slide.table_key)
    if table_key not in target.tables:
        msg = f"The target has no table {table_key!r}; pass `table_key=` naming its table of spots."
        raise KeyError(msg)
    shapes_key = shapes_for_table(target, target.tables[table_key], table_key, slide.shapes_key)
    centres, radius = spot_geometry(target.shapes[shapes_key])
    if len(centres) < 3:
        msg = f"The target has {len(centres)} spots in {shapes_key!r}; at least 3 are needed to read its lattice."
        raise ValueError(msg)
    pitch = spot_pitch(centres)
    neighbours = cKDTree(centres).query_ball_point(centres, r=1.2 * pitch, return_length=True) - 1
    # Inner spots have 6 neighbours on a hexagonal lattice and 4 on a square one; on a small slide most spots
    # lie at the edge (16 of 25 on 5 x 5), so the inner ones decide.
    lattice = "hexagonal" if np.quantile(neighbours, 0.9) >= 5 else "square"
    return PseudoSpots(lattice, float(np.median(radius)) / pitch)


def square_lattice(lo: np.ndarray, hi: np.ndarray, *, pitch: float, offset: np.ndarray) -> np.ndarray:
    """Centres ``(x, y)`` of a square lattice of the given pitch covering ``[lo, hi]``, shifted by ``offset``."""
    rows = np.arange(np.floor((lo[1] - offset[1]) / pitch) - 1, np.ceil((hi[1] - offset[1]) / pitch) + 2)
    cols = np.arange(np.floor((lo[0] - offset[0]) / pitch) - 1, np.ceil((hi[0] - offset[0]) / pitch) + 2)
    r, c = np.meshgrid(rows, cols, indexing="ij")
    return np.column_stack([(offset[0] + c * pitch).ravel(), (offset[1] + r * pitch).ravel()])


def pool_groups(
    centres: np.ndarray, *, pitch: float, scale: int, geometry: PseudoSpots, n_offsets: int, seed: int
) -> tuple[np.ndarray, ...]:
    """Per lattice offset, each unit's pseudo-spot (``-1`` outside every one) on the target's geometry.

    The pseudo-spots lie ``scale`` unit pitches apart with the target's radius over pitch. The first offset puts
    their centres between units, the others are drawn at random over a lattice cell. On a square lattice the first
    is phased as the output's bins are (:func:`~sr_spatial.pp._lattice.lattice_phase`, voted by every unit): the
    units a pseudo-spot pools are then the ``scale`` x ``scale`` block the output's bins of a spot are, even where
    units sit off their lattice by some jitter (legacy ST) and the outermost unit alone would misplace it. The
    predictor learns from this first pooling.
    """
    rng = np.random.default_rng(seed)
    spacing = scale * pitch
    radius = geometry.radius_ratio * spacing
    lo, hi = centres.min(axis=0), centres.max(axis=0)
    first = lo + pitch / 2
    if geometry.lattice != "hexagonal":
        first = lattice_phase(centres, pitch) + (pitch / 2 if scale % 2 == 0 else 0.0)
    offsets = [first] + [lo + rng.uniform(0, spacing, size=2) for _ in range(max(n_offsets, 1) - 1)]
    lattice = visium_lattice if geometry.lattice == "hexagonal" else square_lattice
    groupings = tuple(
        disk_groups(centres, lattice(lo, hi, pitch=spacing, offset=offset), radius=radius)[0] for offset in offsets
    )
    if sum(_multi_unit_groups(g) for g in groupings) >= MIN_TRAINING_GROUPS:
        return groupings
    # Spots small for their pitch (Visium's at scale 2) hold at most one unit's centre: nothing varies within a
    # pseudo-spot. Each then pools its lattice cell (the units nearest to it), which the output's bins also are.
    cell = spacing / (np.sqrt(3.0) if geometry.lattice == "hexagonal" else np.sqrt(2.0))
    logger.info(
        "The target's spots, pooled from the references' spots or bins (%.2f of them across), would hold too few "
        "to learn from; each pseudo-spot pools the references' spots or bins nearest to it instead.",
        2 * radius / pitch,
    )
    return tuple(
        disk_groups(centres, lattice(lo, hi, pitch=spacing, offset=offset), radius=cell)[0] for offset in offsets
    )


def _multi_unit_groups(group: np.ndarray) -> int:
    """Pseudo-spots holding at least two units."""
    inside = group[group >= 0]
    return int((np.bincount(inside) >= 2).sum()) if len(inside) else 0


def reference_map(
    sdata: SpatialData,
    image_key: str,
    *,
    slide,
    genes: list[str] | None,
    n_top_genes: int,
    aggregate: int = 1,
    expression: bool = True,
) -> STMap:
    """One reference read on bins one unit wide, each unit on its own bin (:func:`bin_aligned_map`).

    With ``aggregate`` above 1 the units are squares of ``aggregate`` x ``aggregate`` of the slide's bins
    (:func:`aggregate_units`). The slide is rendered once, on the units' own grid; its expression maps only with
    ``expression`` (see :func:`bin_aligned_map`).
    """
    from sr_spatial.pp._stmap import spot_map

    st_map = spot_map(sdata, image_key, **vars(slide), genes=genes, n_top_genes=n_top_genes, scale=1, render=False)
    return bin_aligned_map(aggregate_units(st_map, aggregate), expression=expression)


def target_image_candidates(target: SpatialData, image_keys: Sequence[str]) -> list[str]:
    """The images the target's H&E may be, where a call does not name it.

    Its only image, or the references' key where it has an image of that name; otherwise all its images (the
    caller takes the finest: a slide is super-resolved from its finest H&E, and one read more coarsely is warned
    about when the model is applied).
    """
    from sr_spatial._adapter._elements import full_resolution_level

    # Not an image with a channel per gene (an earlier super-resolved map, a truth image): colours, or a stain.
    images = [
        key
        for key, image in target.images.items()
        if full_resolution_level(image).sizes.get("c", 1) <= MAX_IMAGE_CHANNELS
    ]
    shared = [key for key in dict.fromkeys(image_keys) if key in images]
    return shared[:1] if len(images) > 1 and len(shared) == 1 else images


def finest_target_grid(
    target: SpatialData,
    image_key: str | None,
    reference_keys: Sequence[str],
    *,
    slide,
    scale: int,
    spots: SpotData | None = None,
) -> BinGrid | None:
    """The target's output grid at the output's scale, from its finest H&E: ``image_key``, else the finest candidate.

    The grid follows from the spots' geometry (:func:`~sr_spatial.pp._stmap.spot_grid`): no gene is chosen and
    nothing is rendered. ``spots`` are the target's spots already read (by ``superresolve(..., reference=...)``,
    which goes on to super-resolve them), so the target is not read again. Candidates
    (:func:`target_image_candidates`) that cannot be read as the spots' H&E (another coordinate system, say) are
    passed over; ``None`` where none can.
    """
    from sr_spatial._adapter._read import read_spots
    from sr_spatial.pp._stmap import spot_grid

    if spots is not None:
        return spot_grid(spots, scale=scale)[0]
    grids = []
    for key in [image_key] if image_key else target_image_candidates(target, reference_keys):
        try:
            grids.append(spot_grid(read_spots(target, key, **vars(slide)), scale=scale)[0])
        except (KeyError, ValueError) as err:
            logger.info("The target's image %r is not read as its H&E (%s).", key, err)
    return max(grids, key=lambda grid: grid.size, default=None)


def read_px_per_bin(st_maps: Sequence[STMap], extractor, *, target: BinGrid | None = None) -> int | None:
    """The pixels per bin every slide's H&E is read at: the coarsest any of them allows, the target's included.

    A reference scanned at 0.25 µm/px read beside a target at 2 µm/px would otherwise give features of another
    texture scale than the target's, which no per-slide standardisation undoes. ``None`` for extractors of a fixed
    physical resolution (pretrained encoders), which read every slide alike anyway.
    """
    if extractor.fixed_resolution:
        return None
    grids = [m.grid for m in st_maps] + ([] if target is None else [target])
    return int(min(extractor.px_per_bin(grid.size) for grid in grids))
