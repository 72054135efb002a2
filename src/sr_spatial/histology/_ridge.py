"""Ridge regression from histology features to expression: on levels, or on deviations within pseudo-spots."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sr_spatial.core._groups import deviation_from_group

__all__ = ["ALPHAS", "Ridge", "within_group_ridge"]

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


def within_group_ridge(features: np.ndarray, values: np.ndarray, group: np.ndarray) -> Ridge:
    """A ridge fitted on the deviations of units' features and values from their group's, one penalty for all genes.

    The map adds to each measurement only a bin's deviation from its spot, and a ridge fitted on levels spends its
    capacity on what differs between spots (tumour against stroma), which the measurement already holds. Fitted on
    deviations inside groups of at least two units (pseudo-spots), it learns what varies within a spot. Its
    predictions are read only as differences (a bin's minus its spot's), which a linear model gives from any level.
    """
    groups = int(group.max()) + 1
    size = np.bincount(group, minlength=groups)
    multi = size[group] >= 2
    if multi.sum() < 3:  # no pseudo-spot of two units: nothing varies within one, nothing is learned
        n_features, n_genes = np.shape(features)[1], np.shape(values)[1]
        return Ridge(np.zeros((n_features, n_genes)), np.zeros(n_genes), np.zeros(n_features), np.ones(n_features))
    x = deviation_from_group(np.asarray(features[multi], dtype=np.float64), group[multi], groups)
    y = deviation_from_group(np.asarray(values[multi], dtype=np.float64), group[multi], groups)
    return Ridge.fit(x, y, shared_penalty=True, rescale=False)
