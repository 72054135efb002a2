"""Stain, texture and nuclei read in windows centred on bins or on given points (reference units)."""

from __future__ import annotations

import numpy as np
import pytest

from sr_spatial.features import _extract, bin_features, resolve_features
from sr_spatial.features._nuclei import NucleiFeatures
from sr_spatial.pp import build_st_map

K = 16  # pixels per bin


def _crop(rng, height_bins=6, width_bins=6):
    """White glass with dark purple nuclei of 4 x 4 pixels in the left half only."""
    rgb = np.ones((3, height_bins * K, width_bins * K), dtype=np.float32)
    for _ in range(60):
        y, x = rng.integers(3, height_bins * K - 3), rng.integers(3, width_bins * K // 2 - 3)
        rgb[:, y - 2 : y + 2, x - 2 : x + 2] = np.array([0.35, 0.2, 0.5])[:, None, None]
    return rgb


def test_windows_see_the_nuclei_where_they_are():
    extractor = NucleiFeatures(windows=(0.5, 1.0))
    features = extractor.bin_features(_crop(np.random.default_rng(0)), px_per_bin=K)
    assert features.shape == (2 * 29, 6, 6)
    assert features.dtype == np.float32 and np.isfinite(features).all()
    nuclear = features[22]  # the narrow window's nuclear fraction
    count = features[23]  # its nucleus density
    area = features[24]  # and their mean area
    assert nuclear[:, :2].mean() > 0.05 and nuclear[:, 4:].max() == 0
    assert count[:, :2].mean() > 0 and count[:, 4:].max() == 0
    # A 4 x 4 nucleus, segmented on the smoothed haematoxylin: its core, give or take a merge of two.
    assert 2 <= np.median(area[:, :2][count[:, :2] > 0]) <= 16


def test_points_at_bin_centres_read_what_the_bins_read():
    rgb = _crop(np.random.default_rng(1))
    extractor = NucleiFeatures()
    per_bin = extractor.bin_features(rgb, px_per_bin=K)
    rows, cols = np.array([2 * K + K // 2, 4 * K + K // 2]), np.array([1 * K + K // 2, 3 * K + K // 2])
    at_points = extractor.point_features(rgb, rows, cols, px_per_bin=K)
    np.testing.assert_array_equal(at_points[:, 0], per_bin[:, 2, 1])
    np.testing.assert_array_equal(at_points[:, 1], per_bin[:, 4, 3])
    # Off the centre, a point reads other tissue.
    moved = extractor.point_features(rgb, rows + K // 3, cols, px_per_bin=K)
    assert not np.array_equal(moved, at_points)


def test_windows_are_checked_and_named():
    with pytest.raises(ValueError, match="windows"):
        NucleiFeatures(windows=())
    assert isinstance(resolve_features("nuclei"), NucleiFeatures)
    assert NucleiFeatures().px_per_bin(300.0) == 64  # nuclei measured one by one on a fine image
    assert NucleiFeatures().px_per_bin(20.0) == 16


def test_slide_points_give_one_vector_per_point():
    import sr_spatial as sr

    st_map = build_st_map(sr.datasets.demo(n_rows=6, n_cols=8, seed=2), "demo_full_image", n_top_genes=3, scale=1)
    _extract._cache.clear()
    extractor = NucleiFeatures()
    per_unit = bin_features(st_map.spots, st_map.grid, extractor, points=st_map.centres, show_progress_bar=False)
    assert per_unit.shape == (87, len(st_map.centres)) and np.isfinite(per_unit).all()
    maps = bin_features(st_map.spots, st_map.grid, extractor, show_progress_bar=False)
    assert maps.shape[0] == 87 and maps.shape[1:] == (st_map.grid.height, st_map.grid.width)
    _extract._cache.clear()


def test_the_nuclear_threshold_is_set_on_pixels_as_sharp_as_those_segmented(monkeypatch):
    import sr_spatial as sr
    from sr_spatial.features._morphology import MorphologyFeatures

    st_map = build_st_map(sr.datasets.demo(n_rows=6, n_cols=8, seed=2), "demo_full_image", n_top_genes=3, scale=1)
    k = NucleiFeatures().px_per_bin(st_map.grid.size)
    assert k > 8
    # The nuclei's threshold: at the features' own pixels per bin; the morphology's: one overview of at most 8.
    assert {kk for kk, _ in _extract._overview(NucleiFeatures(), st_map.grid, k)} == {k}
    assert {kk for kk, _ in _extract._overview(MorphologyFeatures(), st_map.grid, k)} == {8}
    # On a large slide the tiles read for it are spread evenly and capped.
    monkeypatch.setattr(_extract, "OVERVIEW_PIXELS", 1)
    tiles = _extract._overview(NucleiFeatures(), st_map.grid, k)
    all_tiles = list(_extract._tiles(st_map.grid, k, margin=0))
    assert len(tiles) == 1 <= len(all_tiles)


def test_a_finely_read_tile_keeps_most_of_what_it_reads():
    from sr_spatial.pp._lattice import make_grid

    grid = make_grid(np.array([[0.0, 0.0], [6000.0, 6000.0]]), bin_size=100.0, pitch=100.0)
    margin = NucleiFeatures().context_bins + 2
    ratios = []
    for own, _, tile in _extract._tiles(grid, 64, margin=margin):
        rows, cols = own[0].stop - own[0].start, own[1].stop - own[1].start
        if (tile.height, tile.width) == (rows + 2 * margin, cols + 2 * margin):  # inner tiles: margins on all sides
            ratios.append(tile.height * tile.width / (rows * cols))
    # At 64 pixels a bin a tile of TILE_PIXELS read 16 bins across to keep 8 (4 times what it kept).
    assert ratios and max(ratios) <= 2.25
