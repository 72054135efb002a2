"""The spread of a bin around its spot: what it scales with, fitted on held-out spots, and how it grows finer."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sr_spatial._groups import deviation_from_group, group_means, lattice_groups

__all__ = ["SpreadPredictors", "finer_variance_ratio", "fit_spread", "smooth_at", "spread_variance"]

#: Fewer groups of groups than this, and the finer-variance ratio is not measured (taken as 1).
MIN_PARENTS = 4


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


def smooth_at(points: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cubic (Clough-Tocher) interpolation of ``values`` at ``query``, clipped at 0; nearest where undefined.

    The same interpolation :class:`~sr_spatial.pp._stmap.SpotRenderer` renders as ``smooth``.
    """
    from scipy.interpolate import CloughTocher2DInterpolator
    from scipy.spatial import QhullError, cKDTree

    out = values[cKDTree(points).query(query)[1]].astype(np.float64)
    try:
        cubic = CloughTocher2DInterpolator(points, values)(query)
    except (QhullError, ValueError):
        return out
    defined = np.isfinite(cubic).all(axis=1)
    out[defined] = np.clip(cubic[defined], 0.0, None)
    return out


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
