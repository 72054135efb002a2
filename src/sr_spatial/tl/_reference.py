"""Training pairs from a high-resolution reference: Visium-like pseudo-spots pooled from true bins, and the bins."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from scipy.spatial import cKDTree

from sr_spatial._adapter._elements import BinGrid
from sr_spatial._groups import group_means
from sr_spatial.model import Scene
from sr_spatial.pp._lattice import TISSUE_REACH, visium_lattice
from sr_spatial.pp._stmap import nearest_spot, render_spots

if TYPE_CHECKING:
    from sr_spatial.pp._stmap import STMap

logger = logging.getLogger("sr_spatial")

__all__ = ["SPOT_DIAMETER_RATIO", "bin_aligned_map", "reference_scenes"]

#: Visium's spot diameter over its centre-to-centre pitch (55 µm / 100 µm).
SPOT_DIAMETER_RATIO = 0.55


def bin_aligned_map(st_map: STMap) -> STMap:
    """The map re-rendered on a grid whose bins coincide with the measured bins (one grid bin per bin pitch).

    :func:`~sr_spatial.pp.build_st_map` pads its grid by a fraction of a pitch, which would shift every
    target bin against the histology under it by a quarter bin; here the grid starts half a pitch before the
    first bin centre, so a square lattice of bins maps one to one onto the grid.
    """
    pitch = st_map.pitch
    margin = int(np.ceil(TISSUE_REACH))
    lo = st_map.centres.min(axis=0) - (margin + 0.5) * pitch
    extent = st_map.centres.max(axis=0) - st_map.centres.min(axis=0)
    width, height = (np.round(extent / pitch).astype(int) + 2 * margin + 1).tolist()
    grid = BinGrid(x0=float(lo[0]), y0=float(lo[1]), size=float(pitch), height=height, width=width)
    nearest, smooth, mask, footprint = render_spots(
        st_map.centres, st_map.values, grid, pitch=pitch, radius=st_map.radius
    )
    return replace(st_map, grid=grid, nearest=nearest, smooth=smooth, mask=mask, footprint=footprint)


def pool_bins(
    centres: np.ndarray, values: np.ndarray, spots: np.ndarray, *, radius: float
) -> tuple[np.ndarray, np.ndarray]:
    """Pseudo-spots measuring the bins whose centre lies in their disk, as a spot would (mean in linear space).

    Returns
    -------
    The centres ``(m, 2)`` of the pseudo-spots that hold at least one bin and their log-normalised values.
    """
    owner_distance, owner = cKDTree(spots).query(centres)
    inside = owner_distance <= radius
    used, group = np.unique(owner[inside], return_inverse=True)
    pooled, _ = group_means(np.expm1(values[inside].astype(np.float64)).T, group.ravel(), len(used))
    return spots[used], np.log1p(pooled.T).astype(np.float32)


def reference_scenes(
    st_map: STMap, reference: Scene, *, scale: int, px_per_bin: int, n_offsets: int, seed: int
) -> list[Scene]:
    """True low- to high-resolution pairs from a slide of high-resolution bins (Visium HD, binned Xenium).

    ``st_map`` holds the bins on a bin-aligned grid (:func:`bin_aligned_map`) and ``reference`` is its
    output scene. The input of each pair is what Visium would have measured over the same tissue: disks
    ``0.55 * scale`` bins wide on a hexagonal lattice ``scale`` bins apart, each the mean of the bins under it;
    the target is the bins themselves. Each extra offset shifts the lattice, giving another measurement of the
    same slide. The grid, the H&E resolution (``px_per_bin`` pixels per bin) and the ratio of spot pitch to bin
    match what :func:`sr_spatial.tl.superresolve` sees on a Visium slide at ``scale``.
    """
    rng = np.random.default_rng(seed)
    pitch = scale * st_map.pitch
    lo, hi = st_map.centres.min(axis=0), st_map.centres.max(axis=0)
    offsets = [np.zeros(2)] + [rng.uniform(0, pitch, size=2) for _ in range(max(n_offsets, 1) - 1)]
    histology = reference.histology  # the same array for every pair: the encoder runs on it once
    scenes, n_spots = [], []
    for offset in offsets:
        lattice = visium_lattice(lo, hi, pitch=pitch, offset=lo + offset)
        spot_xy, pooled = pool_bins(st_map.centres, st_map.values, lattice, radius=SPOT_DIAMETER_RATIO * pitch / 2)
        if len(spot_xy) < 3:
            msg = (
                f"The reference's {len(st_map.centres)} bins hold only {len(spot_xy)} Visium-like spots at "
                f"scale {scale}; a larger reference slide, finer bins or a smaller `scale` is needed."
            )
            raise ValueError(msg)
        n_spots.append(len(spot_xy))
        nearest, smooth, lr_mask, _ = render_spots(spot_xy, pooled, st_map.grid, pitch=pitch)
        mask = st_map.mask & lr_mask
        scenes.append(
            Scene(
                nearest=nearest * mask,
                smooth=smooth * mask,
                mask=mask,
                histology=histology,
                px_per_bin=px_per_bin,
                target=st_map.nearest * mask,
                owner=nearest_spot(spot_xy, st_map.grid),
            )
        )
    logger.info("Reference pairs: %d bins measured by %s Visium-like spots.", len(st_map.centres), n_spots)
    return scenes
