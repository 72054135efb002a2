"""Where the bins go: a slide's spot lattice (pitch, phase, how far each spot's tissue reaches) and its grid.

Any layout is read from the spot centres alone: square, hexagonal, rectangular, staggered or irregular lattices,
jittered detections and pseudo-spots placed at the mean of the spots they pool.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from sr_spatial._adapter._elements import BinGrid

__all__ = ["TISSUE_REACH", "lattice_phase", "make_grid", "spot_pitch", "spot_reach", "visium_lattice"]

#: Bins farther than this many local lattice spacings from every spot are outside the tissue. 0.75 covers the
#: whole Voronoi cell of square (0.71) and hexagonal (0.58) lattices without reaching far past the outer spots.
TISSUE_REACH = 0.75
#: Neighbours that define a spot's local lattice spacing: the 3rd nearest is the longer side of a rectangular
#: lattice, also for its edge spots (and the pitch of square and hexagonal ones, edges included), so the Voronoi
#: cell of any of them is covered.
LATTICE_NEIGHBOURS = 3
#: Neighbours of each spot looked at for the pitch (a hexagonal lattice's first shell holds six).
PITCH_NEIGHBOURS = 6
#: Neighbours within this factor of a spot's nearest one are its first shell, whose distances vote for the pitch
#: (the shorter side's two on a rectangular lattice; four on a square and six on a hexagonal one).
FIRST_SHELL = 1.25
#: Distances within this factor of each other count as one spacing (real lattices jitter by a few per cent).
PITCH_TOLERANCE = 1.1
#: Below this resultant length the spots agree on no phase within a bin (random phases of n spots give about
#: 0.9 / sqrt(n); a lattice jittered by 4 % of its pitch gives 0.6 at 4 bins per pitch).
COHERENT_PHASE = 0.3
#: Re-centring steps of the pitch on the peak of the distances, in a window half as wide.
PITCH_REFINEMENTS = 5
#: No spot's tissue reaches farther than this many (nearest-neighbour) pitches, whatever its neighbours.
MAX_REACH_PITCHES = 2.0


def spot_pitch(centres: np.ndarray) -> float:
    """The lattice's spacing: the most common distance between neighbouring spots, in the units of ``centres``.

    Distances from every spot to the neighbours of its first shell (:data:`FIRST_SHELL`) vote; the pitch is the
    median of the largest set agreeing within :data:`PITCH_TOLERANCE`, re-centred on its peak (the shorter
    side of a rectangular lattice).
    """
    if len(centres) < 2:
        msg = (
            f"Found {len(centres)} spot(s) over the image; super-resolution needs a tissue with many spots. "
            "Check `shapes_key`, the table's `in_tissue` column and the elements' transformations."
        )
        raise ValueError(msg)
    k = min(PITCH_NEIGHBOURS, len(centres) - 1)
    distances, _ = cKDTree(centres).query(centres, k=k + 1)
    distances = distances[:, 1:]
    # Every neighbour of the first shell, not only the nearest: the nearest of several jittered distances is
    # biased short, and a grid of square bins drifts off a lattice whose pitch is off by 1/n_columns.
    shell = distances <= FIRST_SHELL * distances[:, :1]
    distances = np.sort(distances[shell & (distances > 0)])
    if not len(distances):
        msg = "All spots share one centre; check the shapes' coordinates and transformations."
        raise ValueError(msg)
    # The most common spacing: spots off the lattice (edge pseudo-spots at the mean of the spots they pool,
    # gaps, doublets) pull a median down, but scatter their distances instead of agreeing on one.
    lo = np.searchsorted(distances, distances / PITCH_TOLERANCE, side="left")
    hi = np.searchsorted(distances, distances * PITCH_TOLERANCE, side="right")
    densest = int(np.argmax(hi - lo))
    pitch = float(np.median(distances[lo[densest] : hi[densest]]))
    # Re-centre on the peak: the densest window also takes in the off-lattice distances on one side of it.
    for _ in range(PITCH_REFINEMENTS):
        near = distances[(distances >= pitch / PITCH_TOLERANCE**0.5) & (distances <= pitch * PITCH_TOLERANCE**0.5)]
        pitch = float(np.median(near)) if len(near) else pitch
    return pitch


def spot_reach(centres: np.ndarray, *, pitch: float, radius: np.ndarray | None = None) -> np.ndarray:
    """How far the tissue around each spot reaches: ``TISSUE_REACH`` times its local lattice spacing.

    The spacing is the distance to the spot's 3rd nearest neighbour, its median over the spot and those
    neighbours (so a corner spot, missing neighbours, takes its neighbours' spacing), capped at
    ``MAX_REACH_PITCHES`` pitches. On square and hexagonal lattices this is ``0.75 * pitch``; on rectangular
    (e.g. 1:2) and staggered lattices it covers the longer side's cell too, which an isotropic pitch would cut
    off. A spot's own disk is always tissue.
    """
    n = len(centres)
    reach = np.full(n, TISSUE_REACH * pitch)
    k = min(LATTICE_NEIGHBOURS, n - 1)
    if k >= 1:
        distances, neighbours = cKDTree(centres).query(centres, k=k + 1)
        spacing = np.median(distances[:, k][neighbours], axis=1)
        reach = TISSUE_REACH * np.clip(spacing, pitch, MAX_REACH_PITCHES * pitch)
    if radius is not None:
        reach = np.maximum(reach, radius)
    return reach


def lattice_phase(centres: np.ndarray, bin_size: float) -> np.ndarray:
    """Where the spot centres fall within a bin, per axis: their circular mean position modulo ``bin_size``.

    Every spot votes, so a few spots off the lattice (edge pseudo-spots placed at the mean of the spots they
    pool, jittered detections) do not shift the grid, as the outermost spot alone would. Where the centres show
    no common phase (resultant length below :data:`COHERENT_PHASE`: an irregular layout, or bins much finer than
    the jitter), the outermost spot's is used, as before.
    """
    angle = 2.0 * np.pi * np.mod(centres / bin_size, 1.0)
    resultant = np.exp(1j * angle).mean(axis=0)
    phase = np.mod(np.angle(resultant) / (2.0 * np.pi), 1.0) * bin_size
    fallback = np.mod(centres.min(axis=0), bin_size)
    return np.where(np.abs(resultant) > COHERENT_PHASE, phase, fallback)


def make_grid(centres: np.ndarray, *, bin_size: float, pitch: float, reach: float | None = None) -> BinGrid:
    """The smallest grid of ``bin_size`` bins that holds the tissue around ``centres``.

    The grid is phased so that a spot's ``pitch / bin_size`` bins lie symmetrically around its centre: spot
    centres fall on bin corners when a spot spans an even number of bins, on bin centres when odd. Otherwise at
    scale 2 every spot would sit in the middle of one bin and its neighbours would straddle two spots. The phase
    is the lattice's, voted by all spots (:func:`lattice_phase`).
    """
    reach = TISSUE_REACH * pitch if reach is None else reach
    per_spot = pitch / bin_size
    odd = abs(per_spot - round(per_spot)) < 1e-6 and round(per_spot) % 2 == 1
    margin = (np.ceil(reach / bin_size - 1e-6) + (0.5 if odd else 0.0)) * bin_size
    outermost = centres.min(axis=0)
    # From the outermost spot's phase to the lattice's, by less than half a bin (0 on an exact lattice).
    shift = np.mod(lattice_phase(centres, bin_size) - outermost + bin_size / 2, bin_size) - bin_size / 2
    shift = np.where(np.abs(shift) < 1e-6 * bin_size, 0.0, shift)
    lo = outermost - margin + shift - np.where(shift > 0, bin_size, 0.0)
    hi = centres.max(axis=0) + reach
    width, height = np.ceil((hi - lo) / bin_size).astype(int)
    return BinGrid(x0=float(lo[0]), y0=float(lo[1]), size=float(bin_size), height=int(height), width=int(width))


def visium_lattice(lo: np.ndarray, hi: np.ndarray, *, pitch: float, offset: np.ndarray) -> np.ndarray:
    """Centres ``(x, y)`` of a hexagonal lattice of the given pitch covering ``[lo, hi]``, shifted by ``offset``."""
    row_step = pitch * np.sqrt(3.0) / 2.0
    rows = np.arange(np.floor((lo[1] - offset[1]) / row_step) - 1, np.ceil((hi[1] - offset[1]) / row_step) + 2)
    cols = np.arange(np.floor((lo[0] - offset[0]) / pitch) - 1, np.ceil((hi[0] - offset[0]) / pitch) + 2)
    r, c = np.meshgrid(rows, cols, indexing="ij")
    x = offset[0] + (c + 0.5 * (r % 2)) * pitch
    y = offset[1] + r * row_step
    return np.column_stack([x.ravel(), y.ravel()])
