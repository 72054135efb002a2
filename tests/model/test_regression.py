"""The spot-supervised histology predictor and its per-gene trust in within-spot detail."""

from __future__ import annotations

import numpy as np

from sr_spatial.core._uncertainty import calibrated_spread, interval_coverage, sd_error_rank
from sr_spatial.histology._apply import detail_at_bins
from sr_spatial.histology._regression import Ridge, detail_cap, fit_detail_model


def _spots(seed=0, n=30):
    """A square lattice of n x n spots; gene 0 follows a histology feature, gene 1 is noise, gene 2 smooth."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:n, 0:n]
    centres = np.column_stack([cols.ravel(), rows.ravel()]).astype(float) * 10
    features = rng.normal(size=(n * n, 6))
    driven = 2.0 + 0.8 * features[:, 0] + 0.1 * rng.normal(size=n * n)
    noise = 2.0 + 0.5 * rng.normal(size=n * n)
    smooth = 2.0 + np.sin(centres[:, 0] / 60)
    values = np.clip(np.column_stack([driven, noise, smooth]), 0, None)
    return features, values, centres


def test_ridge_recovers_a_linear_map():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5))
    y = x @ np.array([[1.0], [0.0], [-2.0], [0.0], [0.5]]) + 3
    np.testing.assert_allclose(Ridge.fit(x, y).predict(x), y, atol=0.05)


def test_a_histology_driven_gene_gets_detail_and_a_gene_without_signal_stays_at_the_measurement():
    features, values, centres = _spots()
    model = fit_detail_model(features, values, centres, pitch=10.0, scale=2, seed=0)
    assert model.weight[0] > 0.7
    assert model.heldout_r[0] > 0.8
    assert model.weight[1] < 0.15
    assert model.weight[2] < 0.15  # smooth across spots: nothing the histology can add within a spot
    # Weights of 0 mean the bins equal their spot's measurement exactly.
    bins = features[:5]
    nearest, smooth = np.zeros((3, 5)), np.ones((3, 5))
    owner_prediction = model.spot_prediction(bins) + 1.0
    weights = (model.weight, model.interpolation_weight, model.learned_weight)
    args = (weights, bins.T, owner_prediction, bins, nearest, smooth, None)
    detail, _ = detail_at_bins(model, *args)
    unused = (model.weight == 0) & (model.interpolation_weight == 0)
    assert unused.any()
    assert np.all(detail[:, unused] == 0)


def test_a_smooth_gene_follows_its_neighbours_and_a_noisy_one_does_not():
    features, values, centres = _spots()
    model = fit_detail_model(features, values, centres, pitch=10.0, scale=2, seed=0)
    # The smooth gradient's within-group detail is what cubic interpolation across groups predicts.
    assert model.interpolation_weight[2] > 0.6
    # Spatially white genes: neighbours say nothing about a spot's deviation from its group.
    assert model.interpolation_weight[0] < 0.15
    assert model.interpolation_weight[1] < 0.15
    assert np.all((model.interpolation_weight >= 0) & (model.interpolation_weight <= 1))


def test_too_few_groups_keep_every_gene_at_the_measurement():
    features, values, centres = _spots(n=4)
    model = fit_detail_model(features, values, centres, pitch=10.0, scale=2)
    assert np.all(model.weight == 0)


def test_detail_that_swells_at_bins_is_scaled_to_the_measured_variance_law():
    """Allowed: finer_ratio times the held-out spots' predicted variance; beyond it, scaled back to it."""
    group = np.array([0.25, 0.25, 0.25, 0.0])
    bins = np.array([0.5, 1.0, 4.0, 1.0])
    cap = detail_cap(bins, group, finer_ratio=4.0)
    np.testing.assert_allclose(cap, [1.0, 1.0, 0.5, 0.0])
    np.testing.assert_allclose(detail_cap(bins, None, finer_ratio=4.0), 1.0)


def test_coverage_is_computed_correctly_on_a_known_gaussian():
    rng = np.random.default_rng(0)
    mean = np.zeros((20000, 2))
    std = np.ones((20000, 2))
    truth = rng.normal(size=(20000, 2))
    coverage = interval_coverage(mean, std, truth)
    for level, observed in coverage.items():
        np.testing.assert_allclose(observed, level, atol=0.015)
    # Twice too confident: the 90 % interval covers about 59 %.
    np.testing.assert_allclose(interval_coverage(mean, std / 2, truth)[0.9], 0.59, atol=0.02)
    # A spread that grows with the error ranks it.
    scale = rng.uniform(0.1, 3, size=(20000, 2))
    assert sd_error_rank(mean, scale, truth * scale) > 0.3


def test_calibration_moves_an_overconfident_spread_to_nominal_and_is_never_zero():
    features, values, centres = _spots()
    model = fit_detail_model(features, values, centres, pitch=10.0, scale=2)
    # Heavy tails: the root mean square alone would over-cover the bulk and under-cover the tails.
    rng = np.random.default_rng(0)
    residual = rng.standard_t(3, size=(400, model.weight.shape[0])) * 0.3
    variance = np.full(residual.shape, 0.1**2)  # over-confident
    args = (model.residual_sd, model.spread)
    scale, _, std = calibrated_spread(residual, variance, *args, finer_ratio=1.0)
    z = np.abs(residual) / (0.1 * scale)
    before = np.mean(np.abs(residual) / 0.1 <= 1.645, axis=0)
    after = np.mean(z <= 1.645, axis=0)
    assert np.all(before < 0.6)
    np.testing.assert_allclose(after, 0.9, atol=0.03)
    # Bins vary more around their spots than spots around their groups: the spread grows with that ratio.
    np.testing.assert_allclose(calibrated_spread(residual, variance, *args, finer_ratio=4.0)[2], 2 * std, rtol=1e-6)
    # Nothing is ever certain, not even where every held-out residual was 0 (e.g. zero-count spots).
    zeros = np.zeros_like(residual)
    assert np.all(calibrated_spread(zeros, zeros, *args, finer_ratio=1.0)[2] > 0)
    # The fitted model is calibrated by the same function at fit: its typical spread is never below the floor.
    assert np.all(model.typical_sd >= 0.05) and model.coverage_scale.shape == model.weight.shape


def test_the_spread_varies_over_bins_with_what_predicts_the_error():
    features, values, centres = _spots()
    # Gene 0's deviations grow with the distance of a spot's features from its group's.
    rng = np.random.default_rng(3)
    values[:, 0] = 2.0 + np.abs(features[:, 1]) * rng.normal(size=len(values))
    model = fit_detail_model(features, values, centres, pitch=10.0, scale=2)
    assert model.spread[0, 4] > 0  # the histology-distance term carries weight
