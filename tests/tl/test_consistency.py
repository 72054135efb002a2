"""Consistency with the measurement: projecting maps onto the spots and measuring the disagreement."""

from __future__ import annotations

import numpy as np
import pytest

from sr_spatial.tl import project_to_spots, spot_residual

SEED = 0
N_GENES = 6


@pytest.fixture
def rng():
    return np.random.default_rng(SEED)


@pytest.fixture
def spots(st_map):
    """``(footprint, spot_values)`` of the demo for the first genes."""
    return st_map.footprint, st_map.values[:, :N_GENES]


def _random_maps(rng, shape) -> np.ndarray:
    return rng.uniform(0.0, 4.0, size=shape).astype(np.float32)


def test_projection_reproduces_spots(rng, spots):
    footprint, values = spots
    maps = _random_maps(rng, (N_GENES, *footprint.shape))
    assert spot_residual(maps, footprint, values) > 0.1
    projected = project_to_spots(maps, footprint, values)
    assert projected.shape == maps.shape
    assert projected.dtype == np.float32
    assert spot_residual(projected, footprint, values) < 1e-5
    np.testing.assert_array_less(spot_residual(projected, footprint, values, per_gene=True), 1e-5)


def test_projection_of_a_batch(rng, spots):
    footprint, values = spots
    maps = _random_maps(rng, (3, N_GENES, *footprint.shape))
    projected = project_to_spots(maps, footprint, values)
    assert projected.shape == maps.shape
    for sample in projected:
        assert spot_residual(sample, footprint, values) < 1e-5
    # Each sample is projected on its own.
    np.testing.assert_allclose(projected[1], project_to_spots(maps[1], footprint, values), rtol=1e-6, atol=1e-6)


def test_projection_in_place_equals_a_fresh_one(rng, spots):
    """Blocks project their draws into the draws' own array; the values are the same bit for bit."""
    footprint, values = spots
    maps = _random_maps(rng, (3, N_GENES, *footprint.shape))
    fresh = project_to_spots(maps, footprint, values)
    written = project_to_spots(maps, footprint, values, out=maps)
    assert written is maps
    np.testing.assert_array_equal(written, fresh)


def test_projection_leaves_bins_outside_spots_unchanged(rng, spots):
    footprint, values = spots
    maps = _random_maps(rng, (N_GENES, *footprint.shape))
    projected = project_to_spots(maps, footprint, values)
    outside = footprint < 0
    assert outside.any()
    np.testing.assert_allclose(projected[:, outside], maps[:, outside], rtol=1e-5, atol=1e-6)


def test_projection_is_non_negative(rng, spots):
    footprint, values = spots
    maps = rng.normal(0.5, 1.5, size=(N_GENES, *footprint.shape)).astype(np.float32)  # some negative bins
    assert (maps < 0).any()
    projected = project_to_spots(maps, footprint, values)
    assert (projected >= 0).all()
    assert spot_residual(projected, footprint, values) < 1e-5


def test_projection_keeps_within_spot_pattern(rng, spots):
    """The projection is multiplicative: ratios of linear expression between bins of one spot are kept."""
    footprint, values = spots
    maps = _random_maps(rng, (N_GENES, *footprint.shape)) + 0.1
    projected = project_to_spots(maps, footprint, values)
    for spot in (0, len(values) // 2, len(values) - 1):
        bins = footprint == spot
        assert bins.sum() >= 2
        ratio = np.expm1(projected[:, bins].astype(np.float64)) / np.expm1(maps[:, bins].astype(np.float64))
        np.testing.assert_allclose(ratio, np.repeat(ratio[:, :1], ratio.shape[1], axis=1), rtol=1e-4)


def test_projection_fills_empty_spots_with_their_value(spots):
    footprint, values = spots
    maps = np.zeros((N_GENES, *footprint.shape), dtype=np.float32)
    projected = project_to_spots(maps, footprint, values)
    owned = footprint >= 0
    np.testing.assert_allclose(projected[:, owned], values[footprint[owned]].T, rtol=1e-5, atol=1e-6)
    assert (projected[:, ~owned] == 0).all()


def test_residual_of_nearest_map_is_zero(st_map):
    assert spot_residual(st_map.nearest, st_map.footprint, st_map.values) == pytest.approx(0.0, abs=1e-7)
    per_gene = spot_residual(st_map.nearest, st_map.footprint, st_map.values, per_gene=True)
    assert per_gene.shape == (len(st_map.genes),)
    np.testing.assert_allclose(per_gene, 0.0, atol=1e-7)


def test_residual_measures_relative_error(spots):
    """Doubling every bin's linear expression gives a relative residual of exactly 1."""
    footprint, values = spots
    owned = footprint >= 0
    maps = np.zeros((N_GENES, *footprint.shape))
    maps[:, owned] = np.log1p(2 * np.expm1(values[footprint[owned]].astype(np.float64))).T
    assert spot_residual(maps, footprint, values) == pytest.approx(1.0, rel=1e-5)


def test_group_means_of_no_items():
    from sr_spatial.core._groups import group_means

    means, counts = group_means(np.zeros((2, 3, 0)), np.zeros(0, dtype=int), 0)
    assert means.shape == (2, 3, 0)
    assert counts.shape == (0,)
