"""Ridge regression from histology features to expression: on levels, or on deviations within pseudo-spots."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sr_spatial.core._groups import deviation_from_group

__all__ = ["ALPHAS", "Ridge", "choose_penalty_and_rank", "within_group_ridge"]

#: Penalties tried, relative to the number of training rows; chosen per gene by leave-one-out error.
ALPHAS = np.logspace(-2, 4, 19)


@dataclass
class Ridge:
    """Multi-output ridge on standardised features, one penalty per output chosen by leave-one-out error."""

    coef: np.ndarray
    intercept: np.ndarray
    mean: np.ndarray
    scale: np.ndarray

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, *, shared_penalty: bool = False, rescale: bool = True) -> Ridge:
        """Fit ``y`` ``(n, n_outputs)`` on ``x`` ``(n, n_features)`` (closed form through one SVD).

        With ``shared_penalty`` one penalty serves every output, the one of least leave-one-out error summed over
        outputs: one choice made on all genes' labels, where a choice per gene would fit each gene's noise. With
        ``rescale=False`` the features keep their scale (already standardised per slide): a feature that varies
        little where the fit looks is then penalised more, not blown up to unit variance.
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        mean, scale = x.mean(axis=0), x.std(axis=0)
        scale = np.where((scale > 1e-9) & rescale, scale, 1.0)
        xs = (x - mean) / scale
        y_mean = y.mean(axis=0)
        yc = y - y_mean
        n = len(x)
        u, s, vt = np.linalg.svd(xs, full_matrices=False)
        uty = u.T @ yc
        best_err = np.full(y.shape[1], np.inf)
        best_d = np.zeros((y.shape[1], len(s)))
        for alpha in ALPHAS * n / 100:
            d = s / (s**2 + alpha)
            fitted = u @ ((s * d)[:, None] * uty)
            hat = (u**2) @ (s * d)
            # Leave-one-out residuals of a linear smoother; the intercept adds leverage 1/n.
            loo = (yc - fitted) / np.maximum(1.0 - hat - 1.0 / n, 1e-6)[:, None]
            err = np.mean(loo**2, axis=0)
            if shared_penalty:
                err = np.full_like(err, err.sum())
            better = err < best_err
            best_err[better] = err[better]
            best_d[better] = d
        coef = vt.T @ (best_d.T * uty)
        return cls(coef=coef, intercept=y_mean, mean=mean, scale=scale)

    def feature_distance(self, x: np.ndarray, reference: np.ndarray) -> np.ndarray:
        """Squared distance between rows of ``x`` and ``reference`` in standardised feature units, ``(n,)``."""
        return np.sum(((np.asarray(x, dtype=np.float64) - reference) / self.scale) ** 2, axis=1)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predictions ``(n, n_outputs)``."""
        return ((np.asarray(x, dtype=np.float64) - self.mean) / self.scale) @ self.coef + self.intercept


#: Folds of whole pseudo-spots over which a reference ridge's penalty and rank are chosen.
GROUP_FOLDS = 5


def within_group_ridge(features: np.ndarray, values: np.ndarray, group: np.ndarray, *, seed: int = 0) -> Ridge:
    """A reduced-rank ridge fitted on the deviations of units' features and values from their group's.

    The map adds to each measurement only a bin's deviation from its spot, and a ridge fitted on levels spends its
    capacity on what differs between spots (tumour against stroma), which the measurement already holds. Fitted on
    deviations inside groups of at least two units (pseudo-spots), it learns what varies within a spot. Its
    predictions are read only as differences (a bin's minus its spot's), which a linear model gives from any level.

    One penalty and one rank serve every gene, chosen together on held-out folds of whole pseudo-spots
    (:func:`choose_penalty_and_rank`): the units of a pseudo-spot share its tissue and their deviations sum to zero,
    so leaving out one unit at a time would see its neighbours and choose too little shrinkage. The rank keeps
    the few directions in gene space the features predict (a tumour-against-stroma axis, an immune one) and drops
    the rest, where a gene's own counting noise would be fitted: capacity matched to what the labels support.
    """
    groups = int(group.max()) + 1
    size = np.bincount(group, minlength=groups)
    multi = size[group] >= 2
    if multi.sum() < 3:  # no pseudo-spot of two units: nothing varies within one, nothing is learned
        n_features, n_genes = np.shape(features)[1], np.shape(values)[1]
        return Ridge(np.zeros((n_features, n_genes)), np.zeros(n_genes), np.zeros(n_features), np.ones(n_features))
    x = deviation_from_group(np.asarray(features[multi], dtype=np.float64), group[multi], groups)
    y = deviation_from_group(np.asarray(values[multi], dtype=np.float64), group[multi], groups)
    alpha, rank = choose_penalty_and_rank(x, y, group[multi], seed=seed)
    coef = _reduced_rank_coef(*np.linalg.svd(x, full_matrices=False), y, alpha, rank)
    n_features = x.shape[1]
    return Ridge(coef=coef, intercept=np.zeros(y.shape[1]), mean=np.zeros(n_features), scale=np.ones(n_features))


def _reduced_rank_coef(u, s, vt, y, alpha: float, rank: int) -> np.ndarray:
    """Ridge coefficients (no intercept) projected onto the ``rank`` leading directions of their fitted values."""
    shrunk = (s / (s**2 + alpha))[:, None] * (u.T @ y)
    coef = vt.T @ shrunk
    # The fitted values are u @ diag(s) @ shrunk: their leading right singular vectors from a features x genes matrix.
    directions = np.linalg.svd(s[:, None] * shrunk, full_matrices=False)[2][:rank]
    return coef @ directions.T @ directions


def choose_penalty_and_rank(x: np.ndarray, y: np.ndarray, group: np.ndarray, *, seed: int = 0) -> tuple[float, int]:
    """The penalty and rank of least error on held-out folds of whole groups, each gene's error over its variance.

    Every gene counts alike (as in a mean correlation over genes), whatever its level of expression. With fewer
    than two groups per fold the penalty falls back to leave-one-out over units (:meth:`Ridge.fit`) at full rank.
    """
    n, n_genes = y.shape
    full = int(min(x.shape[1], n_genes))
    ranks = sorted({r for r in (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, full) if r <= full})
    alphas = ALPHAS * n / 100
    labels = np.unique(group, return_inverse=True)[1].ravel()
    n_groups = int(labels.max()) + 1
    if n_groups < 2 * GROUP_FOLDS:
        return float(_loo_alpha(x, y)), full
    fold = np.random.default_rng(seed).permutation(n_groups)[labels] % GROUP_FOLDS
    spread = np.maximum(y.var(axis=0), 1e-12)
    err = np.zeros((len(alphas), len(ranks)))
    for k in range(GROUP_FOLDS):
        train, test = fold != k, fold == k
        u, s, vt = np.linalg.svd(x[train], full_matrices=False)
        uty = u.T @ y[train]
        for i, alpha in enumerate(alphas):
            shrunk = (s / (s**2 + alpha))[:, None] * uty
            predicted = x[test] @ (vt.T @ shrunk)
            directions = np.linalg.svd(s[:, None] * shrunk, full_matrices=False)[2]
            for j, rank in enumerate(ranks):
                kept = predicted @ directions[:rank].T @ directions[:rank]
                err[i, j] += float(np.sum((y[test] - kept) ** 2 / spread))
    i, j = np.unravel_index(int(np.argmin(err)), err.shape)
    return float(alphas[i]), int(ranks[j])


def _loo_alpha(x: np.ndarray, y: np.ndarray) -> float:
    """The one penalty of least leave-one-out error summed over genes (no intercept, features as given)."""
    n = len(x)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    uty = u.T @ y
    best, best_alpha = np.inf, float(ALPHAS[0] * n / 100)
    for alpha in ALPHAS * n / 100:
        d = s / (s**2 + alpha)
        fitted = u @ ((s * d)[:, None] * uty)
        hat = (u**2) @ (s * d)
        err = float(np.sum(((y - fitted) / np.maximum(1.0 - hat, 1e-6)[:, None]) ** 2))
        if err < best:
            best, best_alpha = err, float(alpha)
    return best_alpha
