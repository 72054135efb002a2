"""The ST map: spots rendered on a grid of bins, and pooling into pseudo-spots."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from sr_spatial.pp import build_st_map, coarsen_spots
from sr_spatial.pp._lattice import TISSUE_REACH, spot_pitch

IMAGE_KEY = "demo_full_image"
SCALE = 4
PITCH_PX = 100.0  # 100 µm spot spacing at 1 µm per pixel
RADIUS_PX = 27.5


def _spot_bins(st_map) -> np.ndarray:
    """``(i, j)`` of the bin holding each spot centre."""
    return st_map.grid.index_of(st_map.centres)


def test_spot_pitch_on_demo(demo_sdata, st_map):
    np.testing.assert_allclose(spot_pitch(demo_sdata.tables["table"].obsm["spatial"]), PITCH_PX, rtol=1e-6)
    np.testing.assert_allclose(st_map.pitch, PITCH_PX, rtol=1e-6)


def test_spot_pitch_needs_two_spots():
    with pytest.raises(ValueError, match="1 spot"):
        spot_pitch(np.zeros((1, 2)))
    assert spot_pitch(np.array([[0.0, 0.0], [3.0, 4.0]])) == pytest.approx(5.0)


def test_grid_bin_size_and_extent(st_map):
    grid = st_map.grid
    np.testing.assert_allclose(grid.size, st_map.pitch / SCALE, rtol=1e-12)
    assert st_map.pitch / grid.size == pytest.approx(SCALE)
    n_genes = len(st_map.genes)
    for name in ("nearest", "smooth"):
        assert getattr(st_map, name).shape == (n_genes, *grid.shape)
    assert st_map.mask.shape == grid.shape
    assert st_map.footprint.shape == grid.shape
    assert st_map.values.shape == (len(st_map.centres), n_genes)
    # The grid holds every spot with the tissue reach around it.
    reach = TISSUE_REACH * st_map.pitch
    assert grid.x0 <= st_map.centres[:, 0].min() - reach + 1e-6
    assert grid.y0 <= st_map.centres[:, 1].min() - reach + 1e-6
    assert grid.x0 + grid.width * grid.size >= st_map.centres[:, 0].max() + reach - 1e-6
    assert grid.y0 + grid.height * grid.size >= st_map.centres[:, 1].max() + reach - 1e-6


def test_values_are_log_normalised_counts(demo_sdata, st_map):
    table = demo_sdata.tables["table"]
    x = table.X.toarray().astype(float)
    lognorm = np.log1p(1e4 * x / x.sum(axis=1, keepdims=True))
    rows = table.obs_names.get_indexer(st_map.spots.obs_names)
    cols = table.var_names.get_indexer(st_map.genes)
    np.testing.assert_allclose(st_map.values, lognorm[np.ix_(rows, cols)], rtol=1e-5, atol=1e-5)


def test_explicit_genes(demo_sdata):
    genes = ["gene_11", "gene_03"]
    small = build_st_map(demo_sdata, IMAGE_KEY, genes=genes, scale=2)
    assert small.genes == genes
    assert small.nearest.shape[0] == 2
    np.testing.assert_allclose(small.grid.size, small.pitch / 2)


def test_nearest_at_spot_centres(st_map):
    ij = _spot_bins(st_map)
    at_centres = st_map.nearest[:, ij[:, 0], ij[:, 1]].T  # (n_spots, n_genes)
    np.testing.assert_array_equal(at_centres, st_map.values)
    assert st_map.mask[ij[:, 0], ij[:, 1]].all()


def test_nearest_and_smooth_outside_mask(st_map):
    outside = ~st_map.mask
    assert outside.any()
    assert (st_map.nearest[:, outside] == 0).all()
    assert (st_map.smooth[:, outside] == 0).all()
    assert np.isfinite(st_map.smooth).all()
    # The smooth map follows the measurement closely.
    smooth, nearest = st_map.smooth[:, st_map.mask], st_map.nearest[:, st_map.mask]
    assert np.corrcoef(smooth.ravel(), nearest.ravel())[0, 1] > 0.9
    assert np.median(np.abs(smooth - nearest)) < 0.2


def test_footprint(st_map):
    footprint, grid = st_map.footprint, st_map.grid
    n_spots = len(st_map.centres)
    owned = footprint >= 0
    assert set(np.unique(footprint[owned])) == set(range(n_spots))  # every spot owns at least one bin
    assert np.all(np.bincount(footprint[owned], minlength=n_spots) >= 1)
    assert not (owned & ~st_map.mask).any()

    centres = grid.centres()[owned]  # (n_owned, 2)
    owner = footprint[owned]
    distance = np.linalg.norm(centres - st_map.centres[owner], axis=1)
    np.testing.assert_allclose(st_map.radius, RADIUS_PX)
    assert (distance <= st_map.radius[owner] + 1e-9).all()

    # The bins within a spot's disk are all owned (by that spot: demo spots do not overlap).
    all_centres = grid.centres().reshape(-1, 2)
    d = np.linalg.norm(all_centres[:, None, :] - st_map.centres[None, :, :], axis=-1)
    inside = d <= st_map.radius[None, :] - 1e-9
    rows = np.flatnonzero(inside.any(axis=1))
    np.testing.assert_array_equal(footprint.reshape(-1)[rows], inside[rows].argmax(axis=1))
    # A 55 µm disk over 25 µm bins holds about pi * 27.5^2 / 25^2 ~ 3.8 bin centres.
    assert 2 <= np.bincount(owner).min() and np.bincount(owner).max() <= 6


def test_coarsen_spots_preserves_linear_expression(st_map):
    factor = 2
    centres, values = st_map.centres, st_map.values
    pooled_xy, pooled = coarsen_spots(centres, values, factor=factor, pitch=st_map.pitch)
    assert pooled.shape == (len(pooled_xy), values.shape[1])
    assert pooled.dtype == np.float32
    # Group sizes: spots per cell of the factor * pitch lattice anchored at the lowest spot.
    cell = np.floor((centres - centres.min(axis=0)) / (factor * st_map.pitch)).astype(int)
    _, sizes = np.unique(cell, axis=0, return_counts=True)
    assert sizes.sum() == len(centres)
    assert len(sizes) == len(pooled_xy)
    # The count-weighted mean of pooled linear expression is the mean over all spots, per gene.
    weighted = (np.expm1(pooled.astype(np.float64)) * sizes[:, None]).sum(axis=0) / sizes.sum()
    np.testing.assert_allclose(weighted, np.expm1(values.astype(np.float64)).mean(axis=0), rtol=1e-5)
    # Pseudo-spot centres are the mean position of their spots.
    np.testing.assert_allclose((pooled_xy * sizes[:, None]).sum(axis=0) / sizes.sum(), centres.mean(axis=0))


@pytest.mark.parametrize("factor", [2, 3])
def test_coarsen_spots_reduces_number_by_factor_squared(st_map, factor):
    pooled_xy, _ = coarsen_spots(st_map.centres, st_map.values, factor=factor, pitch=st_map.pitch)
    ratio = len(st_map.centres) / len(pooled_xy)
    # Edge cells hold fewer spots, so the ratio is somewhat below factor ** 2.
    assert 0.5 * factor**2 < ratio <= 1.3 * factor**2


def test_coarsen_spots_square_lattice_exact():
    """On an 8 x 8 square lattice, factor 2 pools exact 2 x 2 blocks: their mean in linear space."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:8, 0:8]
    centres = np.column_stack([xx.ravel(), yy.ravel()]).astype(float) * 10.0
    values = rng.uniform(0, 4, size=(64, 3)).astype(np.float32)
    pooled_xy, pooled = coarsen_spots(centres, values, factor=2, pitch=10.0)
    assert len(pooled_xy) == 16
    linear = np.expm1(values.astype(np.float64)).reshape(4, 2, 4, 2, 3)
    expected = np.log1p(linear.mean(axis=(1, 3))).reshape(16, 3)
    expected_xy = centres.reshape(4, 2, 4, 2, 2).mean(axis=(1, 3)).reshape(16, 2)
    order = np.lexsort((pooled_xy[:, 1], pooled_xy[:, 0]))
    ref = np.lexsort((expected_xy[:, 1], expected_xy[:, 0]))
    np.testing.assert_allclose(pooled_xy[order], expected_xy[ref])
    np.testing.assert_allclose(pooled[order], expected[ref], rtol=1e-6)
    # A shifted lattice pools differently but keeps the total.
    shifted_xy, shifted = coarsen_spots(centres, values, factor=2, pitch=10.0, offset=(10.0, 10.0))
    assert len(shifted_xy) == 25
    assert not np.allclose(np.sort(shifted_xy, axis=0)[:16], np.sort(pooled_xy, axis=0))


def test_one_spot_is_an_error(demo_sdata):
    sdata = copy.deepcopy(demo_sdata)
    in_tissue = np.zeros(sdata.tables["table"].n_obs, dtype=np.int64)
    in_tissue[0] = 1
    sdata.tables["table"].obs["in_tissue"] = in_tissue
    with pytest.raises(ValueError, match="1 spot"):
        build_st_map(sdata, IMAGE_KEY, scale=SCALE)


def test_scale_must_be_positive(demo_sdata):
    with pytest.raises(ValueError, match="scale"):
        build_st_map(demo_sdata, IMAGE_KEY, scale=0)


@pytest.mark.parametrize(("scale", "phase"), [(1, 0.5), (2, 0.0), (3, 0.5), (4, 0.0)])
def test_grid_puts_spots_symmetrically_among_their_bins(scale, phase):
    """Even scales: spot centres on bin corners (a 2x2 block per spot at scale 2); odd: on bin centres."""
    from sr_spatial.pp._lattice import make_grid

    xy = np.stack(np.meshgrid(np.arange(5) * 200.0 + 37.0, np.arange(4) * 200.0 + 11.0), axis=-1).reshape(-1, 2)
    grid = make_grid(xy, bin_size=200.0 / scale, pitch=200.0)
    offset = (xy - np.array([grid.x0, grid.y0])) / grid.size
    np.testing.assert_allclose(offset % 1.0, phase, atol=1e-9)
    # The margin still covers every bin within TISSUE_REACH pitches of the outer spots.
    assert (offset.min(axis=0) >= TISSUE_REACH * scale - 1e-9).all()
