"""Reference units at their own depth, and a ridge that learns deviations within pseudo-spots."""

from __future__ import annotations

import numpy as np

from sr_spatial.histology._reference import at_own_depth, bins_per_spot, library_sizes
from sr_spatial.histology._ridge import Ridge, within_group_ridge


def test_a_shallow_slide_is_read_at_its_own_depth():
    fraction = np.array([[0.0, 1 / 600], [2 / 600, 0.0]])
    per_10k = np.log1p(fraction * 1e4)
    library = np.array([600.0, 600.0])
    own = at_own_depth(per_10k, library)
    np.testing.assert_allclose(own, np.log1p(fraction * 600), rtol=1e-6)
    # A count of 1 is a step of log(2) at its own depth, not log1p(16.7) as per 10,000.
    assert own.max() < 1.1 < per_10k.max()
    # At a depth of 10,000 nothing changes; a measurement pooling four units is read at a unit's depth.
    np.testing.assert_allclose(at_own_depth(per_10k, np.full(2, 1e4)), per_10k, rtol=1e-6)
    np.testing.assert_allclose(at_own_depth(per_10k, library * 4, units_per_measurement=4), own, rtol=1e-6)


def test_library_sizes_and_bins_per_spot():
    from scipy import sparse

    counts = sparse.csr_matrix(np.array([[1, 2, 0], [0, 0, 5]]))
    np.testing.assert_array_equal(library_sizes(counts), [3, 5])
    footprint = np.array([[0, 0, -1], [1, 1, 1], [1, -1, -1]])
    assert bins_per_spot(footprint, 2) == 3.0  # spots of 2 and 4 bins
    assert bins_per_spot(np.full((2, 2), -1), 3) == 1.0


def test_a_ridge_on_deviations_ignores_what_differs_between_pseudo_spots():
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(150), 4)
    within = rng.normal(size=len(groups))  # varies inside a pseudo-spot
    between = np.repeat(rng.normal(size=150), 4)  # only between pseudo-spots
    x = np.column_stack([within + between, between + 0.05 * rng.normal(size=len(groups))])
    # Expression follows `within` inside pseudo-spots, and `between` much more strongly across them.
    y = (0.5 * within + 3.0 * between + 0.1 * rng.normal(size=len(groups)))[:, None]
    deviation = within_group_ridge(x, y, groups)
    level = Ridge.fit(x, y)
    truth = 0.5 * (within - np.repeat(within.reshape(150, 4).mean(1), 4))
    for model, r_min in ((deviation, 0.95), (level, -1.0)):
        predicted = model.predict(x)[:, 0]
        predicted = predicted - np.repeat(predicted.reshape(150, 4).mean(1), 4)
        r = np.corrcoef(predicted, truth)[0, 1]
        assert r > r_min
    level_pred = level.predict(x)[:, 0]
    level_dev = level_pred - np.repeat(level_pred.reshape(150, 4).mean(1), 4)
    dev_pred = deviation.predict(x)[:, 0]
    dev_dev = dev_pred - np.repeat(dev_pred.reshape(150, 4).mean(1), 4)
    # The level fit carries the between-spot slope into the detail; the deviation fit keeps its scale.
    assert np.std(dev_dev) < np.std(level_dev)
    assert abs(np.std(dev_dev) / np.std(truth) - 1) < 0.2


def test_one_penalty_for_all_genes():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 5))
    y = np.column_stack([x[:, 0] + 0.1 * rng.normal(size=200), rng.normal(size=200)])
    shared = Ridge.fit(x, y, shared_penalty=True)
    each = Ridge.fit(x, y)
    # Per gene, the pure-noise gene is shrunk harder on its own; with one penalty both genes share it.
    assert np.abs(each.coef[:, 1]).sum() < np.abs(shared.coef[:, 1]).sum()


def test_units_that_share_no_pseudo_spot_teach_nothing():
    x, y = np.random.default_rng(2).normal(size=(5, 3)), np.ones((5, 2))
    ridge = within_group_ridge(x, y, np.arange(5))
    np.testing.assert_array_equal(ridge.predict(x), np.zeros((5, 2)))


#: Two expression programmes over 30 genes, each driven by one histology feature.
PROGRAMMES = np.random.default_rng(99).normal(size=(2, 30))


def _low_rank_deviations(seed: int, *, n_groups: int = 120, noise: float = 1.0):
    """Units in groups of four whose expression follows :data:`PROGRAMMES` of two of 12 features, plus noise."""
    rng = np.random.default_rng(seed)
    groups = np.repeat(np.arange(n_groups), 4)
    x = rng.normal(size=(len(groups), 12))
    programmes = PROGRAMMES
    signal = x[:, :2] @ programmes
    y = signal + noise * rng.normal(size=signal.shape)
    return x, y, groups, signal


def test_penalty_and_rank_are_chosen_on_whole_pseudo_spots():
    from sr_spatial.histology._ridge import choose_penalty_and_rank

    x, y, groups, _ = _low_rank_deviations(3)
    alpha, rank = choose_penalty_and_rank(x, y, groups, seed=0)
    # Two programmes drive every gene: the held-out folds keep about two directions in gene space, not thirty.
    assert 1 <= rank <= 4
    assert alpha > 0
    # Too few pseudo-spots for folds of them: one penalty by leave-one-out, every direction kept.
    few = groups < 6
    alpha_few, rank_few = choose_penalty_and_rank(x[few], y[few], groups[few], seed=0)
    assert rank_few == min(x.shape[1], y.shape[1]) and alpha_few > 0


def test_a_reduced_rank_ridge_predicts_new_units_better_than_one_of_full_rank():
    from sr_spatial.core._groups import deviation_from_group

    x, y, groups, _ = _low_rank_deviations(4, noise=2.0)
    ridge = within_group_ridge(x, y, groups, seed=0)
    assert np.linalg.matrix_rank(ridge.coef, tol=1e-8) <= 4
    full = Ridge.fit(deviation_from_group(x, groups, 120), deviation_from_group(y, groups, 120), shared_penalty=True)
    x_new, _, new_groups, signal = _low_rank_deviations(5, noise=2.0)
    truth = deviation_from_group(signal, new_groups, 120)

    def error(model):
        predicted = deviation_from_group(model.predict(x_new), new_groups, 120)
        return np.mean((predicted - truth) ** 2)

    assert error(ridge) < error(full)
    # The same seed gives the same fit.
    np.testing.assert_array_equal(within_group_ridge(x, y, groups, seed=0).coef, ridge.coef)
