"""Per-bin uncertainty that means what it says: spreads calibrated on held-out spots, and how to check them."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sr_spatial.model._regression import DetailModel

__all__ = [
    "LEVELS",
    "MIN_SD",
    "calibrate_spread",
    "conformal_scale",
    "finer_spread_factor",
    "interval_coverage",
    "normal_quantiles",
    "sd_error_rank",
]

#: Nominal coverages reported for central intervals.
LEVELS = (0.5, 0.8, 0.9, 0.95)
#: The level the spread is calibrated at (conformal: the held-out quantile of standardised residuals).
CALIBRATION_LEVEL = 0.9
#: No gene is ever reported as certain: a spread below this (log-normalised units) is raised to it.
MIN_SD = 0.05


def conformal_scale(residual: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """Per gene, the factor on ``sd`` that makes central 90 % normal intervals cover 90 % of ``residual``.

    ``residual`` and ``sd`` are ``(n_items, n_genes)`` held-out errors and the spreads reported for them. The
    factor brings the empirical 90 % quantile of ``|residual| / sd`` to the normal's (1.645): a split-conformal
    correction (finite-sample rank ``ceil((n + 1) * 0.9)``), which also absorbs heavy tails. Genes whose
    spread is 0 everywhere keep factor 1.
    """
    z = np.abs(residual) / np.maximum(sd, 1e-12)
    rank = min(int(np.ceil((len(z) + 1) * CALIBRATION_LEVEL)), len(z)) - 1
    quantile = np.sort(z, axis=0)[rank]
    positive = sd.max(axis=0) > 0
    return np.where(positive, quantile / stats.norm.ppf(0.5 + CALIBRATION_LEVEL / 2), 1.0)


def calibrate_spread(model: DetailModel) -> np.ndarray:
    """Set ``model.coverage_scale`` so its central 90 % normal intervals cover 90 % of held-out deviations.

    The held-out residuals of the transfer fit (measured minus predicted deviation of a spot from its group)
    are standardised by the spread model's predicted standard deviation and brought to nominal coverage by
    :func:`conformal_scale`.

    Returns
    -------
    Per gene, the calibrated standard deviation of a typical held-out spot (the root mean square of the
    calibrated spreads), floored at :data:`MIN_SD`.
    """
    residual = model.heldout_residual
    variance = model.heldout_variance
    n_genes = len(model.weight)
    if residual is None or variance is None or len(residual) < 10:
        model.coverage_scale = np.ones(n_genes)
        sd = np.asarray(model.residual_sd, dtype=np.float64)
        if model.spread.shape[0] != n_genes:
            model.spread = np.column_stack([sd**2, np.zeros((n_genes, 4))])
        return np.maximum(sd, MIN_SD)
    sd = np.sqrt(np.maximum(variance, 0.0))
    # Calibrated on spots around their groups; bins around their spots vary by the extrapolated finer ratio.
    model.coverage_scale = conformal_scale(residual, sd) * np.sqrt(model.finer_ratio)
    return np.maximum(np.sqrt(np.mean((sd * model.coverage_scale) ** 2, axis=0)), MIN_SD)


def finer_spread_factor(error_ratio: np.ndarray, finer_ratio: float) -> np.ndarray:
    """Per gene, the factor carrying a diffusion spread calibrated on spots to the output's bins, at least 1.

    A model trained by scale transfer calibrates its draws' spread on spots held out from pseudo-spots, one level
    coarser than its output. From spots to bins the errors' variance grows like the measurement's own variance
    across scales (``finer_ratio``, :func:`~sr_spatial.model._spread.finer_variance_ratio`, which the histology
    path's spread is carried by too), while the draws' spread barely grows (by 2-3 % on the demo and on protocol
    2b's synthetic slide). ``error_ratio`` is, per gene, the held-out errors' mean square over the calibrated
    spread's at training (``network.spread_error_ratio``; 0 for a model calibrated on bins of the output's
    size, which needs no extrapolation). The factor ``sqrt(max(1, finer_ratio * error_ratio))`` raises the
    spread's mean square to the errors' extrapolated one and never narrows the calibrated intervals.
    """
    return np.sqrt(np.maximum(finer_ratio * np.asarray(error_ratio, dtype=np.float64), 1.0))


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
