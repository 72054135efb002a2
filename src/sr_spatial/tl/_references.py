"""Reference slides with finer truth, read for training: their units, the target's geometry, shared genes.

A reference's spots or bins are at the output's scale: its units are what the output's bins should be. They are
pooled into pseudo-spots as the target measures (its lattice, pitch over ``scale`` units, and spot radius relative
to its pitch; Visium's without a target), at several offsets of the lattice, and their features are read on a
grid of bins one unit wide, the same physical resolution as the target's output bins.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from sr_spatial._adapter._read import _shapes_for_table, _spot_geometry, table_genes
from sr_spatial.model._reference import ReferenceUnits, standardise
from sr_spatial.pp._lattice import spot_pitch, visium_lattice

if TYPE_CHECKING:
    from collections.abc import Sequence

    from spatialdata import SpatialData

    from sr_spatial.tl._options import SlideKeys

logger = logging.getLogger("sr_spatial")

__all__ = ["PseudoSpots", "reference_units", "shared_genes", "square_lattice", "target_geometry"]

#: Visium's spot radius over its pitch (55 µm disks 100 µm apart): the pseudo-spots without a target.
VISIUM_RADIUS_RATIO = 0.275
#: Offsets of the pooling lattice per reference: each pools the same units into other pseudo-spots.
N_OFFSETS = 4


@dataclass(frozen=True)
class PseudoSpots:
    """How the target measures, relative to its pitch: the lattice's kind and the spots' radius over the pitch."""

    lattice: str
    radius_ratio: float


def target_geometry(target: SpatialData | None, slide: SlideKeys) -> PseudoSpots:
    """The target's lattice (``"hexagonal"`` or ``"square"``) and spot radius over pitch; Visium's without one.

    Both are ratios, read off the spots' shapes in their own coordinates: no image is needed.
    """
    if target is None:
        return PseudoSpots("hexagonal", VISIUM_RADIUS_RATIO)
    if slide.table_key not in target.tables:
        msg = f"The target has no table {slide.table_key!r}; pass `table_key=` naming its table of spots."
        raise KeyError(msg)
    shapes_key = _shapes_for_table(target, target.tables[slide.table_key], slide.table_key, slide.shapes_key)
    centres, radius = _spot_geometry(target.shapes[shapes_key])
    if len(centres) < 3:
        msg = f"The target has {len(centres)} spots in {shapes_key!r}; at least 3 are needed to read its lattice."
        raise ValueError(msg)
    pitch = spot_pitch(centres)
    neighbours = cKDTree(centres).query_ball_point(centres, r=1.2 * pitch, return_length=True) - 1
    lattice = "hexagonal" if np.median(neighbours) >= 5 else "square"
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
    their centres between units, the others are drawn at random over a lattice cell.
    """
    rng = np.random.default_rng(seed)
    spacing = scale * pitch
    radius = geometry.radius_ratio * spacing
    lo, hi = centres.min(axis=0), centres.max(axis=0)
    offsets = [np.full(2, pitch / 2)] + [rng.uniform(0, spacing, size=2) for _ in range(max(n_offsets, 1) - 1)]
    lattice = visium_lattice if geometry.lattice == "hexagonal" else square_lattice
    groupings = []
    for offset in offsets:
        points = lattice(lo, hi, pitch=spacing, offset=lo + offset)
        distance, nearest = cKDTree(points).query(centres)
        inside = distance <= radius
        group = np.full(len(centres), -1)
        used, group[inside] = np.unique(nearest[inside], return_inverse=True)
        groupings.append(group)
    return tuple(groupings)


def shared_genes(
    references: Sequence[SpatialData], target: SpatialData | None, genes: list[str] | None, *, table_key: str
) -> list[str] | None:
    """Check ``genes`` are in every reference (and the target); without ``genes``, the genes all of them share.

    A gene missing from a reference is refused with where it is missing, never filled with zeros. Returns the
    genes to read (``None``: choose among all, for a single reference without a target).
    """
    tables = [("reference " + str(i), table_genes(r, table_key)) for i, r in enumerate(references)]
    if target is not None:
        tables.append(("the target", table_genes(target, table_key)))
    if genes is not None:
        missing = {name: [g for g in genes if g not in set(names)] for name, names in tables}
        missing = {name: absent for name, absent in missing.items() if absent}
        if missing:
            detail = "; ".join(f"{name} lacks {absent[:10]}" for name, absent in missing.items())
            msg = f"Genes must be measured on every slide: {detail}. Pass genes all slides share."
            raise KeyError(msg)
        return genes
    if len(tables) == 1:
        return None
    common = set(tables[0][1]).intersection(*(set(names) for _, names in tables[1:]))
    dropped = {name: len(set(names) - common) for name, names in tables}
    if any(dropped.values()):
        logger.info("Genes not measured on every slide are left out: %s.", dropped)
    return [g for g in tables[0][1] if g in common]


def reference_units(
    sdata: SpatialData,
    image_key: str,
    *,
    slide: SlideKeys,
    genes: list[str] | None,
    n_top_genes: int,
    scale: int,
    geometry: PseudoSpots,
    features,
    seed: int,
    show_progress_bar: bool,
) -> tuple[ReferenceUnits, list[str]]:
    """One reference's units: features on bins one unit wide (standardised over the slide), values, pseudo-spots."""
    from sr_spatial.features import bin_features
    from sr_spatial.model._histology_detail import spot_features
    from sr_spatial.pp._stmap import build_st_map
    from sr_spatial.tl._reference import bin_aligned_map

    st_map = bin_aligned_map(
        build_st_map(sdata, image_key, **vars(slide), genes=genes, n_top_genes=n_top_genes, scale=1)
    )
    maps = standardise(
        bin_features(st_map.spots, st_map.grid, features, show_progress_bar=show_progress_bar), st_map.mask
    )
    units = ReferenceUnits(
        features=spot_features(maps, st_map.footprint, st_map.grid.index_of(st_map.centres)),
        values=st_map.values,
        centres=st_map.centres,
        pitch=st_map.pitch,
        groupings=pool_groups(
            st_map.centres, pitch=st_map.pitch, scale=scale, geometry=geometry, n_offsets=N_OFFSETS, seed=seed
        ),
    )
    return units, list(st_map.genes)
