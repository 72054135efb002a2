"""The tissue mask and grid follow any spot lattice: square, hexagonal, rectangular, staggered, irregular."""

from __future__ import annotations

import copy

import numpy as np
import pytest

import sr_spatial as sr
from sr_spatial._adapter._elements import BinGrid
from sr_spatial.pp._lattice import TISSUE_REACH, make_grid, spot_pitch, spot_reach
from sr_spatial.pp._stmap import SpotRenderer, nearest_spot

PITCH = 10.0


def _lattice(kind: str, n: int = 12) -> np.ndarray:
    rows, cols = np.mgrid[0:n, 0:n].astype(float)
    if kind == "square":
        xy = np.column_stack([cols.ravel(), rows.ravel()]) * PITCH
    elif kind == "hexagonal":
        xy = np.column_stack([(cols + 0.5 * (rows % 2)).ravel(), (rows * np.sqrt(3) / 2).ravel()]) * PITCH
    elif kind == "rectangular":  # 1:2, as pseudo-spots pooled 1 x 2
        xy = np.column_stack([cols.ravel(), 2 * rows.ravel()]) * PITCH
    elif kind == "staggered":  # rows 1.5 pitches apart, every other row shifted by half a pitch
        xy = np.column_stack([(cols + 0.5 * (rows % 2)).ravel(), (1.5 * rows).ravel()]) * PITCH
    else:  # irregular: a square lattice jittered by up to a fifth of the pitch
        rng = np.random.default_rng(0)
        xy = np.column_stack([cols.ravel(), rows.ravel()]) * PITCH + rng.uniform(-2, 2, (n * n, 2))
    return xy


@pytest.mark.parametrize("kind", ["square", "hexagonal"])
def test_regular_lattices_keep_the_isotropic_reach(kind):
    reach = spot_reach(_lattice(kind), pitch=PITCH)
    np.testing.assert_allclose(reach, TISSUE_REACH * PITCH)


@pytest.mark.parametrize("kind", ["square", "hexagonal", "rectangular", "staggered", "irregular"])
def test_every_bin_between_the_spots_is_tissue(kind):
    centres = _lattice(kind)
    pitch = float(np.median(np.sort(np.linalg.norm(centres[:, None] - centres[None], axis=-1), axis=1)[:, 1]))
    reach = spot_reach(centres, pitch=pitch)
    grid = make_grid(centres, bin_size=pitch / 4, pitch=pitch, reach=float(reach.max()))
    renderer = SpotRenderer(centres, np.ones((len(centres), 1)), pitch=pitch)
    _, _, mask, _ = renderer.render(grid)
    xy = grid.centres().reshape(-1, 2)
    lo, hi = centres.min(axis=0), centres.max(axis=0)
    inside = ((xy >= lo) & (xy <= hi)).all(axis=1).reshape(grid.shape)
    # The bins inside the lattice's extent are all tissue, whatever the lattice.
    assert mask[inside].all()
    # And the mask does not run off far past the outer spots: at most two pitches.
    far = ((xy < lo - 2 * pitch) | (xy > hi + 2 * pitch)).any(axis=1).reshape(grid.shape)
    assert not mask[far].any()


def test_a_rectangular_pseudo_spot_lattice_keeps_the_measured_spots_in_the_tissue(demo_sdata):
    """Every other row of the demo's hexagonal lattice: a rectangular lattice 1.73 pitches tall.

    With an isotropic nearest-neighbour pitch, the bins under the dropped rows fell outside the tissue mask and
    were written as 0; they must be tissue, with the value of a neighbouring spot.
    """
    sdata = copy.deepcopy(demo_sdata)
    table = sdata.tables["table"]
    keep = (table.obs["array_row"].to_numpy() % 2) == 0
    dropped_ids = table.obs_names[~keep]
    sdata.tables["table"] = table[keep].copy()
    shapes = sdata.shapes["demo"]
    dropped_xy = np.column_stack([shapes.loc[dropped_ids].geometry.x, shapes.loc[dropped_ids].geometry.y])
    sr.tl.superresolve(sdata, "demo_full_image", method="nearest", scale=2, key_added="rect", show_progress_bar=False)
    info = sdata.tables["rect_table"].uns["rect"]
    image = np.asarray(sdata.images["rect"].values)
    grid_size = info["bin_size_px"]
    x0 = float(sdata.tables["rect_table"].obsm["spatial"][:, 0].min())  # a bin centre
    y0 = float(sdata.tables["rect_table"].obsm["spatial"][:, 1].min())
    cols = np.round((dropped_xy[:, 0] - x0) / grid_size).astype(int) + int(
        sdata.tables["rect_table"].obs["array_col"].min()
    )
    rows = np.round((dropped_xy[:, 1] - y0) / grid_size).astype(int) + int(
        sdata.tables["rect_table"].obs["array_row"].min()
    )
    on_grid = (rows >= 0) & (rows < image.shape[1]) & (cols >= 0) & (cols < image.shape[2])
    assert on_grid.mean() > 0.95
    values = image[:, rows[on_grid], cols[on_grid]]
    assert np.isfinite(values).all()
    # Bins under the dropped spots are tissue: they carry a neighbouring spot's expression, not 0.
    assert (values.sum(axis=0) > 0).mean() > 0.99


def test_pitch_of_a_jittered_lattice_is_not_biased_short():
    """The nearest of several jittered neighbours is closer than the pitch; the first shell's median is not."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(0)
    xy = _lattice("square", n=30) + rng.normal(0.0, 0.04 * PITCH, (900, 2))
    nearest_only = np.median(cKDTree(xy).query(xy, k=2)[0][:, 1])
    assert nearest_only < 0.97 * PITCH
    assert spot_pitch(xy) == pytest.approx(PITCH, rel=0.005)


@pytest.mark.parametrize("kind", ["square", "hexagonal", "rectangular", "staggered"])
def test_pitch_of_regular_lattices_is_their_shorter_spacing(kind):
    assert spot_pitch(_lattice(kind)) == pytest.approx(PITCH, rel=1e-9)


@pytest.mark.parametrize("jitter", [0.0, 0.03])
def test_pseudo_spots_at_their_members_mean_keep_every_member_in_its_own_bins(jitter):
    """Pooling a round tissue leaves partial edge blocks, placed at the mean of the spots they pool.

    Those edge pseudo-spots are off the coarse lattice and closer to their neighbours: with the median
    nearest-neighbour distance as pitch and the outermost spot as the grid's phase, bins drifted off the lattice
    and a measured spot's bin belonged to another pseudo-spot (her2st B4 pooled this way: 0.48 against 0.53 for
    each spot's own pseudo-spot value). Every measured spot's bin must belong to its own pseudo-spot. (Wider
    pools are ambiguous whatever the grid: a corner spot of a 3 x 3 block is nearer a one-spot edge block's
    centre than its own; a 1 x 2 pool puts the spots on bin edges.)
    """
    pool = (2, 2)
    rng = np.random.default_rng(1)
    xy = _lattice("square", n=40) + rng.normal(0.0, jitter * PITCH, (1600, 2))
    array = np.round(_lattice("square", n=40) / PITCH).astype(int)
    inside = np.hypot(*(array - 19.5).T) < 17.3
    xy, array = xy[inside], array[inside]
    _, group = np.unique(array // np.asarray(pool), axis=0, return_inverse=True)
    group = group.ravel()
    centres = np.zeros((group.max() + 1, 2))
    np.add.at(centres, group, xy)
    centres /= np.bincount(group)[:, None]
    pitch = spot_pitch(centres)
    assert pitch == pytest.approx(min(pool) * PITCH, rel=0.02)
    scale = pool[0]
    grid = make_grid(centres, bin_size=pitch / scale, pitch=pitch)
    rows, cols = grid.index_of(xy).T
    assert (nearest_spot(centres, grid)[rows, cols] == group).all()


def _interior_mask(centres: np.ndarray, scale: int) -> tuple[np.ndarray, np.ndarray]:
    """The tissue mask of ``centres`` at ``scale``, and each bin's centre."""
    pitch = spot_pitch(centres)
    renderer = SpotRenderer(centres, np.ones((len(centres), 1)), pitch=pitch)
    grid = make_grid(centres, bin_size=pitch / scale, pitch=pitch, reach=float(renderer.reach.max()))
    _, _, mask, _ = renderer.render(grid)
    return mask.ravel(), grid.centres().reshape(-1, 2)


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_a_heavily_jittered_lattice_has_no_holes_inside(scale):
    """Spots jittered by up to 0.3 pitch leave bins farther than any spot's reach although spots surround them.

    Those bins were outside the mask (written as no tissue: 2-42 per slide of 144 spots); the spots' Delaunay
    triangles whose corners lie within their local spacings of each other fill them.
    """
    rng = np.random.default_rng(0)
    centres = _lattice("square") + rng.uniform(-0.3 * PITCH, 0.3 * PITCH, (144, 2))
    mask, xy = _interior_mask(centres, scale)
    interior = ((xy > 1.5 * PITCH) & (xy < 9.5 * PITCH)).all(axis=1)
    assert mask[interior].all()


def test_one_missing_spot_is_tissue_and_a_wider_gap_is_not():
    """A single spot missing inside the tissue (dropped by quality control) is filled; a tear two spots wide is not."""
    centres = _lattice("square", n=14)
    array = np.round(centres / PITCH).astype(int)
    single = (array == [3, 3]).all(axis=1)
    band = np.isin(array[:, 0], [9, 10])  # two missing columns of spots
    centres = centres[~single & ~band]
    mask, xy = _interior_mask(centres, 4)
    at_single = np.linalg.norm(xy - 3 * PITCH, axis=1) < 0.2 * PITCH
    in_band = (np.abs(xy[:, 0] - 9.5 * PITCH) < 0.2 * PITCH) & (xy[:, 1] > 2 * PITCH) & (xy[:, 1] < 11 * PITCH)
    assert at_single.any() and mask[at_single].all()
    assert in_band.any() and not mask[in_band].any()


def test_bin_grid_is_a_plain_value():
    grid = BinGrid(x0=0.0, y0=0.0, size=1.0, height=2, width=3)
    assert grid.shape == (2, 3)
