"""Reference bins finer than the output's pooled into units of its size (8 µm Visium HD bins for a 25 µm output)."""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sr_spatial.pp._stmap import STMap

logger = logging.getLogger("sr_spatial")

__all__ = ["MIN_AGGREGATED_SHARE", "aggregate_units"]

#: The share of an aggregated unit's bins that must be measured for it to be kept: a unit at the tissue's edge
#: holding one bin of nine would count a ninth of the area as if it were the whole.
MIN_AGGREGATED_SHARE = 0.5


def aggregate_units(st_map: STMap, factor: int, *, target_sum: float = 1e4) -> STMap:
    """The slide's square bins pooled ``factor`` x ``factor`` into units ``factor`` pitches wide (counts summed).

    Bins finer than the output's (8 µm Visium HD bins for a 25 µm output) become units of the output's size. The
    bins are placed on their square lattice from the first bin, so each unit pools the same whole bins wherever the
    slide starts; units holding under :data:`MIN_AGGREGATED_SHARE` of their bins (at the tissue's edge) are left
    out. The genes are those chosen on the bins; the map is not rendered (``bin_aligned_map`` renders it).
    """
    import pandas as pd
    from scipy import sparse

    from sr_spatial.pp._stmap import normalised_values

    if factor == 1:
        return st_map
    spots = st_map.spots
    lo = spots.centres.min(axis=0)
    cell = np.rint((spots.centres - lo) / st_map.pitch).astype(np.int64) // factor
    cells, group = np.unique(cell, axis=0, return_inverse=True)
    group = group.ravel()
    n = len(group)
    keep = np.bincount(group, minlength=len(cells)) >= MIN_AGGREGATED_SHARE * factor**2
    if not keep.any():
        msg = (
            f"Pooling the reference's {n} bins {factor} x {factor} leaves no unit with at least "
            f"{MIN_AGGREGATED_SHARE:.0%} of its bins measured; pass a smaller `aggregate`."
        )
        raise ValueError(msg)
    pooling = sparse.csr_matrix((np.ones(n, dtype=np.float32), (group, np.arange(n))), shape=(len(cells), n))
    counts = sparse.csr_matrix(pooling @ spots.counts)[np.flatnonzero(keep)]
    pitch = factor * st_map.pitch
    centres = lo - st_map.pitch / 2 + (cells[keep] + 0.5) * pitch
    radius = np.full(len(centres), float(np.median(spots.radius)) * factor)
    names = pd.Index([f"unit_{r}_{c}" for c, r in cells[keep]])
    pooled = replace(spots, centres=centres, radius=radius, counts=counts, obs_names=names)
    values = normalised_values(pooled, list(st_map.genes), target_sum)
    logger.info(
        "Pooled the reference's %d bins %d x %d into %d units %.3g pixels wide.", n, factor, factor, len(centres), pitch
    )
    return replace(st_map, spots=pooled, centres=centres, radius=radius, values=values, pitch=pitch)
