"""Per-bin uncertainty, for every method: spreads fitted and calibrated on held-out units, carried to finer bins.

One level coarser than the output, a truth exists: spots around the groups they are pooled into. There the
errors of a method are observed, what they scale with is fitted (:class:`SpreadPredictors`, :func:`fit_spread`),
and the spread is brought to nominal coverage by a split-conformal factor (:func:`conformal_scale`,
:func:`calibrated_spread`). From that level to the output's bins the measurement's own variance grows by
:func:`finer_variance_ratio`, which carries the spread there (:func:`finer_spread_factor` for the diffusion
model's draws). No spread is ever below :data:`MIN_SD`. The same functions check a reported spread against a
truth (:func:`interval_coverage`, :func:`sd_error_rank`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import stats

from sr_spatial.core._groups import deviation_from_group, group_means, lattice_groups

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "CALIBRATION_LEVEL",
    "LEVELS",
    "MIN_SD",
    "SpreadPredictors",
    "calibrated_spread",
    "conformal_scale",
    "finer_spread_factor",
    "finer_variance_ratio",
    "fit_spread",
    "interval_coverage",
    "normal_quantiles",
    "sd_error_rank",
    "spread_variance",
]

#: Nominal coverages reported for central intervals.
LEVELS = (0.5, 0.8, 0.9, 0.95)
#: The level the spread is calibrated at (conformal: the held-out quantile of standardised residuals).
CALIBRATION_LEVEL = 0.9
#: No gene is ever reported as certain: a spread below this (log-normalised units) is raised to it.
MIN_SD = 0.05
#: Fewer groups of groups than this, and the finer-variance ratio is not measured (taken as 1).
MIN_PARENTS = 4
#: Fewer held-out residuals than this, and the spread is their root mean square, uncalibrated.
MIN_CALIBRATION_ITEMS = 10


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


def calibrated_spread(
    residual: np.ndarray | None,
    variance: np.ndarray | None,
    residual_sd: np.ndarray,
    spread: np.ndarray,
    *,
    finer_ratio: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The conformal factor of a fitted spread, carried to bins ``finer_ratio`` times as variable.

    ``residual`` are the held-out residuals of the transfer fit (measured minus predicted deviation of a spot from
    its group) and ``variance`` the spread model's variance for them, both ``(n_items, n_genes)``; ``spread`` the
    spread model's coefficients (:func:`fit_spread`). The residuals standardised by the spread are brought to
    nominal coverage by :func:`conformal_scale`, and the factor grows by ``sqrt(finer_ratio)``: calibrated on
    spots around their groups, reported for bins around their spots. With fewer than
    :data:`MIN_CALIBRATION_ITEMS` residuals the factor is 1 and, where no spread was fitted, the spread is the
    residuals' root mean square ``residual_sd``.

    Returns
    -------
    Per gene, the coverage factor, the spread coefficients (``spread`` or its fallback), and the calibrated
    standard deviation of a typical held-out spot (the root mean square of the calibrated spreads), floored at
    :data:`MIN_SD`.
    """
    n_genes = len(residual_sd)
    if residual is None or variance is None or len(residual) < MIN_CALIBRATION_ITEMS:
        sd = np.asarray(residual_sd, dtype=np.float64)
        if spread.shape[0] != n_genes:
            spread = np.column_stack([sd**2, np.zeros((n_genes, 4))])
        return np.ones(n_genes), spread, np.maximum(sd, MIN_SD)
    sd = np.sqrt(np.maximum(variance, 0.0))
    scale = conformal_scale(residual, sd) * np.sqrt(finer_ratio)
    return scale, spread, np.maximum(np.sqrt(np.mean((sd * scale) ** 2, axis=0)), MIN_SD)


def finer_spread_factor(error_ratio: np.ndarray, finer_ratio: float) -> np.ndarray:
    """Per gene, the factor carrying a diffusion spread calibrated on spots to the output's bins, at least 1.

    A model trained by scale transfer calibrates its draws' spread on spots held out from pseudo-spots, one level
    coarser than its output. From spots to bins the errors' variance grows like the measurement's own variance
    across scales (``finer_ratio``, :func:`~finer_variance_ratio`, which the histology
    path's spread is carried by too), while the draws' spread barely grows (by 2-3 % on the demo and on protocol
    2b's synthetic slide). ``error_ratio`` is, per gene, the held-out errors' mean square over the calibrated
    spread's at training (``network.spread_error_ratio``; 0 for a model calibrated on bins of the output's
    size, which needs no extrapolation). The factor ``sqrt(max(1, finer_ratio * error_ratio))`` raises the
    spread's mean square to the errors' extrapolated one and never narrows the calibrated intervals.
    """
    return np.sqrt(np.maximum(finer_ratio * np.asarray(error_ratio, dtype=np.float64), 1.0))


def finer_variance_ratio(spot_values: np.ndarray, centres: np.ndarray, *, pitch: float, scale: int) -> float:
    """How much more a unit varies around its parent ``scale`` times finer, extrapolated from coarser levels.

    The spread is fitted on spots around their groups but reported for bins around their spots, ``scale``
    times finer. The ratio ``R`` of the spots' variance around groups 2 pitches wide to those groups' variance
    around groups 4 pitches wide, pooled over genes (median), is extrapolated under self-similarity to
    ``R ** log2(scale)``: ``scale**2`` for spatially white variation (a unit of a quarter of the area varies
    four times as much), below 1 for smooth fields. ``R`` is clipped to ``[1/4, 4]``; 1 where too few groups
    exist to measure it.
    """
    factor = 2
    values = spot_values.astype(np.float64)
    group = lattice_groups(centres, side=factor * pitch)
    groups = int(group.max()) + 1
    size = np.bincount(group, minlength=groups)
    linear, _ = group_means(np.expm1(values).T, group, groups)
    group_values = np.log1p(linear.T)
    group_centres, _ = group_means(centres.T.astype(np.float64), group, groups)
    parent = lattice_groups(group_centres.T, side=factor**2 * pitch)
    parents = int(parent.max()) + 1
    siblings = np.bincount(parent, minlength=parents)
    fine = (size[group] >= 2)[:, None]
    coarse = (siblings[parent] >= 2)[:, None]
    if (siblings >= 2).sum() < MIN_PARENTS or not fine.any():
        return 1.0
    within = np.sum(deviation_from_group(values, group, groups) ** 2 * fine, axis=0) / fine.sum()
    # Groups stand for their spots: weight each by its size, as its spots would be.
    weights = size[:, None] * coarse
    parent_linear, _ = group_means((np.expm1(group_values) * size[:, None]).T, parent, parents)
    parent_size, _ = group_means(size[None].astype(np.float64), parent, parents)
    parent_values = np.log1p(parent_linear.T / np.maximum(parent_size.T, 1e-12))
    between = np.sum((group_values - parent_values[parent]) ** 2 * weights, axis=0) / max(weights.sum(), 1)
    usable = between > 1e-12
    if not usable.any():
        return 1.0
    ratio = float(np.clip(np.median(within[usable] / between[usable]), 1.0 / factor**2, factor**2))
    return ratio ** np.log2(max(scale, 1))


@dataclass
class SpreadPredictors:
    """What the error of a unit (bin or spot) around its parent scales with, known wherever a map is written.

    ``gradient``: squared difference between the smooth interpolation of the measurement and the parent's own
    value (large at the edge of a domain, where a spot hides most variation); ``detail``: squared weighted
    predicted deviation; ``level``: the parent's measurement; ``distance``: squared distance of the unit's
    standardised histology features from its parent's (a bin that looks unlike the rest of its spot). Arrays
    are ``(n_items, n_genes)`` except ``distance`` ``(n_items,)``.
    """

    gradient: np.ndarray
    detail: np.ndarray
    level: np.ndarray
    distance: np.ndarray

    def means(self) -> np.ndarray:
        """Per predictor (and gene), the mean over the items: ``(4, n_genes)``."""
        n_genes = self.gradient.shape[-1]
        return np.stack(
            [
                self.gradient.mean(axis=0),
                self.detail.mean(axis=0),
                self.level.mean(axis=0),
                np.full(n_genes, self.distance.mean()),
            ]
        )

    def relative(self, means: np.ndarray) -> np.ndarray:
        """The predictors over their means, ``(4, n_items, n_genes)``: each level's own scale factored out."""
        distance = np.broadcast_to(self.distance[:, None], self.gradient.shape)
        stacked = np.stack([self.gradient, self.detail, self.level, distance])
        return stacked / np.maximum(means[:, None, :], 1e-12)


def fit_spread(residual: np.ndarray, predictors: SpreadPredictors) -> np.ndarray:
    """Per gene, non-negative coefficients of the variance on 1 and the relative predictors, ``(n_genes, 5)``.

    Each predictor enters relative to its mean at its own level (spots around groups here, bins around spots
    where the map is written), so the coefficients say how the error's variance is shared out over the slide
    and the overall size comes from the calibration.
    """
    from scipy.optimize import nnls

    n_items, n_genes = residual.shape
    relative = predictors.relative(predictors.means())
    coef = np.zeros((n_genes, 5))
    for g in range(n_genes):
        if n_items < 6:
            coef[g, 0] = np.mean(residual[:, g] ** 2) if n_items else 0.0
            continue
        design = np.column_stack([np.ones(n_items), *relative[:, :, g]])
        coef[g] = nnls(design, residual[:, g] ** 2)[0]
    return coef


def spread_variance(coef: np.ndarray, relative: np.ndarray) -> np.ndarray:
    """The variance of :func:`fit_spread`'s coefficients at relative predictors ``(4, ..., n_genes)``."""
    return coef[:, 0] + np.einsum("g k, k ... g -> ... g", coef[:, 1:], relative)


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
