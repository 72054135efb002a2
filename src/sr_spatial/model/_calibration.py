"""Per-bin uncertainty that means what it says: spreads calibrated on held-out spots, and how to check them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sr_spatial.model._regression import DetailModel

__all__ = ["LEVELS", "calibrate_spread", "interval_coverage", "normal_quantiles", "sd_error_rank"]

#: Nominal coverages reported for central intervals.
LEVELS = (0.5, 0.8, 0.9, 0.95)
#: The level the spread is calibrated at (conformal: the held-out quantile of standardised residuals).
CALIBRATION_LEVEL = 0.9
#: No gene is ever reported as certain: a spread below this (log-normalised units) is raised to it.
MIN_SD = 0.05


def calibrate_spread(model: DetailModel) -> np.ndarray:
    """Per-gene standard deviation whose central 90 % normal interval covers 90 % of held-out deviations.

    The held-out residuals of the transfer fit (measured minus predicted deviation of a spot from its group)
    are standardised by their root mean square; the factor that brings their empirical 90 % quantile of
    ``|z|`` to the normal's (1.645) is a split-conformal correction for heavy tails. Stored on the model as
    ``coverage_scale``.
    """
    residual = model.heldout_residual
    sd = np.asarray(model.residual_sd, dtype=np.float64)
    if residual is None or len(residual) < 10:
        model.coverage_scale = np.ones_like(sd)
        return np.maximum(sd, MIN_SD)
    z = np.abs(residual) / np.maximum(sd, 1e-12)
    n = len(z)
    # The finite-sample conformal quantile: the ceil((n + 1) * level)-th smallest of n scores.
    rank = min(int(np.ceil((n + 1) * CALIBRATION_LEVEL)), n) - 1
    quantile = np.sort(z, axis=0)[rank]
    model.coverage_scale = np.where(sd > 0, quantile / stats.norm.ppf(0.5 + CALIBRATION_LEVEL / 2), 1.0)
    return np.maximum(sd * model.coverage_scale, MIN_SD)


def normal_quantiles(mean: np.ndarray, std: np.ndarray, quantiles: Sequence[float]) -> list[np.ndarray]:
    """The ``quantiles`` of a normal predictive distribution per bin, clipped at 0 (log-normalised units)."""
    return [np.clip(mean + stats.norm.ppf(q) * std, 0.0, None) for q in quantiles]


def interval_coverage(
    mean: np.ndarray, std: np.ndarray, truth: np.ndarray, *, levels: Sequence[float] = LEVELS
) -> dict[float, np.ndarray]:
    """Per gene, the fraction of true values inside the central normal interval at each nominal level.

    ``mean``, ``std`` and ``truth`` are ``(n_items, n_genes)``; returns ``{level: (n_genes,)}``.
    """
    out = {}
    z = np.abs(truth - mean) / np.maximum(std, 1e-12)
    for level in levels:
        out[float(level)] = np.mean(z <= stats.norm.ppf(0.5 + level / 2), axis=0)
    return out


def sd_error_rank(mean: np.ndarray, std: np.ndarray, truth: np.ndarray) -> float:
    """Spearman correlation between the reported standard deviation and the absolute error, over all values."""
    error = np.abs(truth - mean).ravel()
    spread = np.asarray(std).ravel()
    if np.ptp(spread) == 0 or np.ptp(error) == 0:
        return float("nan")
    return float(stats.spearmanr(spread, error).statistic)
