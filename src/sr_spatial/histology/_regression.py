"""Expression from histology features, supervised by the measured spots and trusted only as far as it predicts.

The predictor is a ridge regression per gene from the features of a spot (the mean of its bins' features) to the
spot's log-normalised expression, so that the bins' predictions average to the spot's by linearity. What a bin
receives is the measurement of its spot plus the predicted deviation of the bin from its spot, times a per-gene
weight, plus the cubic interpolation's deviation from the spot, times a second weight. The weights are learned
one level coarser, where a truth exists: spots are pooled into groups as the slide's bins pool into spots, the
ridge is refitted on the spots of the other folds of groups, and the held-out spots' measured deviations from
their group are regressed on both predicted deviations (:func:`detail_weights`); a learned encoder's detail,
cross-fitted so that each spot's prediction comes from an encoder that never saw it
(:mod:`sr_spatial.histology._learned`), can enter as a third. A gene no predictor helps gets weights 0 and equals
the measurement. The held-out residuals also give each gene's predictive spread, which varies over the slide
with what predicts the error (:class:`SpreadPredictors`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from sr_spatial._logging import progress_bar
from sr_spatial.core._groups import deviation_from_group, group_means, lattice_groups
from sr_spatial.core._uncertainty import (
    MIN_SD,
    SpreadPredictors,
    calibrated_spread,
    finer_variance_ratio,
    fit_spread,
    spread_variance,
)
from sr_spatial.histology._ridge import Ridge, within_group_ridge
from sr_spatial.histology._weights import detail_weights
from sr_spatial.pp._interpolate import interpolate_at

__all__ = ["DetailModel", "Ridge", "detail_cap", "detail_weights", "fit_detail_model", "heldout_ridge"]

#: Held-out folds of groups for the transfer fit.
FOLDS = 5
#: Fewer groups of at least two spots than this, and no weight is fitted: every gene stays at the measurement.
MIN_GROUPS = 8


@dataclass(frozen=True)
class DetailModel:
    """The fitted histology predictor and how far to trust its within-spot detail, per gene; complete once fitted.

    What depends on the slide it is applied to (the caps on the weights, the spread predictors' means over its
    bins) is computed where it is applied (:meth:`sr_spatial.model.HistologyModel.apply`), not stored here.

    Attributes
    ----------
    ridge
        Spot features to log-normalised expression.
    weight
        Per gene, the share of the predicted within-spot deviation added to the measurement (0: none), before the
        slide's :func:`detail_cap`.
    interpolation_weight
        Per gene, the share of the cubic interpolation's deviation from the measurement added (0: none): where
        neighbouring spots predict a spot's detail (smooth gradients), the map follows them.
    learned_weight
        Per gene, the share of the learned encoder's detail added (0 without one), before its cap.
    heldout_r
        Per gene, the correlation of predicted and measured deviations from the group on held-out groups
        (NaN where it could not be measured).
    residual_sd
        Per gene, the standard deviation of held-out measured deviations around the weighted prediction.
    n_groups
        Groups of at least two spots the weights were fitted on.
    spread
        Per gene, the coefficients of the variance on 1 and the relative :class:`SpreadPredictors`
        (:func:`~sr_spatial.core._uncertainty.fit_spread`).
    coverage_scale
        Per gene, the factor that brings the held-out residuals' central 90 % interval to nominal coverage,
        carried to bins by ``finer_ratio`` (:func:`~sr_spatial.core._uncertainty.calibrated_spread`).
    typical_sd
        Per gene, the calibrated standard deviation of a typical held-out spot.
    finer_ratio
        How much more a bin varies around its spot than a spot around its group
        (:func:`~sr_spatial.core._uncertainty.finer_variance_ratio`); the histology detail may vary at most that
        much more at bins than at held-out spots (:func:`detail_cap`).
    group_detail_variance, group_learned_variance
        Per gene, the variance of the held-out spots' predicted histology (learned) deviation from their group.
    """

    ridge: Ridge
    weight: np.ndarray
    interpolation_weight: np.ndarray
    learned_weight: np.ndarray
    heldout_r: np.ndarray
    residual_sd: np.ndarray
    n_groups: int
    spread: np.ndarray
    coverage_scale: np.ndarray
    typical_sd: np.ndarray
    finer_ratio: float = 1.0
    group_detail_variance: np.ndarray | None = field(default=None, repr=False)
    group_learned_variance: np.ndarray | None = field(default=None, repr=False)

    def spot_prediction(self, spot_features: np.ndarray) -> np.ndarray:
        """Predicted expression of each spot from its features ``(n_spots, n_features)``."""
        return self.ridge.predict(spot_features)

    def subset(self, idx: np.ndarray) -> DetailModel:
        """The predictor of the genes at ``idx`` only: every gene's ridge column, weights and spread are its own."""
        per_gene = ("weight", "interpolation_weight", "learned_weight", "heldout_r", "residual_sd", "spread",
                    "coverage_scale", "typical_sd", "group_detail_variance", "group_learned_variance")  # fmt: skip
        cut = {name: getattr(self, name)[idx] for name in per_gene if getattr(self, name) is not None}
        ridge = replace(self.ridge, coef=self.ridge.coef[:, idx], intercept=self.ridge.intercept[idx])
        return replace(self, ridge=ridge, **cut)

    def std(self, predictors: SpreadPredictors, bin_means: np.ndarray) -> np.ndarray:
        """Calibrated standard deviation of bins ``(n_bins, n_genes)``, never below ``MIN_SD``.

        ``bin_means`` (the predictors' means over all bins of the slide the map is written for) make the
        predictors relative, as they were when the spread was fitted.
        """
        variance = spread_variance(self.spread, predictors.relative(bin_means))
        return np.maximum(np.sqrt(np.maximum(variance, 0.0)) * self.coverage_scale, MIN_SD)


def detail_cap(bin_variance: np.ndarray, group_variance: np.ndarray | None, finer_ratio: float) -> np.ndarray:
    """Per gene, a factor of at most 1 on the histology weight, so the detail at bins varies only as data allow.

    The weight is fitted one level coarser, on spots around their groups; the map applies the predictor to bins
    around their spots. Where the features behave alike at both levels, the predicted detail varies about as
    much at bins as at spots (on the demo, 1.05 times); where bin features carry noise or leave the range the
    spots span, the prediction swells at bins (27 times on the demo's H&E read as a negative, whose per-bin
    predictions then lowered the map below the measurement although the held-out weights were high). The
    measured expression itself varies ``finer_ratio`` times more around spots than around groups
    (:func:`~sr_spatial.core._uncertainty.finer_variance_ratio`); the predicted detail is scaled down to that, per
    gene: ``min(1, sqrt(finer_ratio * group_variance / bin_variance))``.
    """
    if group_variance is None:
        return np.ones_like(bin_variance)
    allowed = finer_ratio * np.asarray(group_variance, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        cap = np.sqrt(allowed / bin_variance)
    return np.where(np.isfinite(cap) & (bin_variance > allowed), np.clip(cap, 0.0, 1.0), 1.0)


def heldout_ridge(
    spot_features: np.ndarray,
    spot_values: np.ndarray,
    group: np.ndarray,
    *,
    rng: np.random.Generator,
    sections: np.ndarray | None = None,
    within_groups: bool = False,
) -> np.ndarray:
    """Each spot's ridge prediction ``(n_spots, n_genes)`` from the spots of the other folds of whole groups.

    Groups are assigned to :data:`FOLDS` folds at random; a spot's prediction comes from a ridge fitted on the
    spots of the other folds, so neither it nor any spot of its group was seen. Spots of folds that leave fewer
    than 3 spots to learn from are predicted as 0. With ``sections`` (each spot's slide, several slides), each
    slide is a fold: its spots are predicted by a ridge that saw only the other slides, as a new slide will be.
    With ``within_groups`` the ridges learn the spots' deviations from their group (:func:`within_group_ridge`).
    """
    groups = int(group.max()) + 1
    folds = rng.permutation(groups) % FOLDS
    fold_of = folds[group]
    if sections is not None and len(np.unique(sections)) > 1:
        fold_of = np.unique(sections, return_inverse=True)[1].ravel()
    held = np.zeros_like(spot_values, dtype=np.float64)
    fold_seed = int(rng.integers(2**31)) if within_groups else 0
    for fold in range(int(fold_of.max()) + 1):
        # Folds are groups, but the ridge learns from spots, as the final one does: the held-out error
        # then reflects a model fitted on as many labels as the one applied to the bins.
        train = fold_of != fold
        test = fold_of == fold
        if train.sum() < 3 or not test.any():
            continue
        if within_groups:
            ridge = within_group_ridge(spot_features[train], spot_values[train], group[train], seed=fold_seed)
        else:
            ridge = Ridge.fit(spot_features[train], spot_values[train])
        held[test] = ridge.predict(spot_features[test])
    return held


def fit_detail_model(
    spot_features: np.ndarray,
    spot_values: np.ndarray,
    centres: np.ndarray,
    *,
    pitch: float,
    scale: int,
    seed: int = 0,
    learned: np.ndarray | None = None,
    groupings: Sequence[np.ndarray] | None = None,
    sections: np.ndarray | None = None,
    leave_sections_out: bool = True,
    within_groups: bool = False,
    show_progress_bar: bool = False,
) -> DetailModel:
    """Fit the predictor on all spots and its per-gene detail weights on held-out groups of spots.

    Parameters
    ----------
    spot_features
        ``(n_spots, n_features)``: each spot's mean bin features.
    spot_values
        ``(n_spots, n_genes)`` log-normalised expression.
    centres
        Spot centres ``(n_spots, 2)``, in the units of ``pitch``.
    pitch
        Spot pitch.
    scale
        Bins per spot pitch of the output; spots are pooled into groups ``scale`` pitches wide for the transfer
        fit, as the output's bins pool into spots.
    seed
        Seeds the assignment of groups to folds.
    learned
        Each spot's held-out expression predicted by the learned encoder (:mod:`sr_spatial.histology._learned`),
        ``(n_spots, n_genes)``; its deviations from the group become a third detail predictor.
    groupings
        Reference training: each "spot" is a unit at the output's scale (a reference slide's spot or bin), and
        each array gives every unit's pseudo-spot for one pooling offset (``-1`` outside every pseudo-spot), so
        the weights are fitted on the true within-pseudo-spot deviations, at the output's own level (the spread
        is not carried to finer bins). Default: square groups ``scale`` pitches wide at two phases.
    sections
        Each unit's reference slide: the interpolation runs within each slide, and with ``leave_sections_out``
        the held-out predictions leave each slide out (:func:`heldout_ridge`); otherwise folds of groups.
    within_groups
        Fit the ridges on the units' deviations from their pseudo-spot of the first of ``groupings``
        (:func:`within_group_ridge`) rather than on their levels.
    show_progress_bar
        A bar over the poolings (each a held-out fit and an interpolation), with its time left: minutes on a
        reference of hundreds of thousands of units.

    Returns
    -------
    The fitted :class:`DetailModel`, its spread calibrated on the held-out residuals.
    """
    n_genes = spot_values.shape[1]
    if within_groups and groupings is not None:
        # Each pooling is an equally valid partition of the units into pseudo-spots; a ridge fitted on one rests on
        # where its boundaries fall, and their mean does not.
        ridges = [within_group_ridge(spot_features, spot_values, _singletons_outside(g), seed=seed) for g in groupings]
        ridge = replace(ridges[0], coef=np.mean([r.coef for r in ridges], axis=0))
    else:
        ridge = Ridge.fit(spot_features, spot_values)
    rng = np.random.default_rng(seed)
    predicted, measured, gradient, level, distance, interpolated, encoded = [], [], [], [], [], [], []
    n_groups = n_held_groups = 0
    factor = max(int(scale), 2)
    same_level = groupings is not None
    if groupings is None:
        # Two phases of the pooling lattice use (almost) every spot twice, once in each of two different groups.
        groupings = [lattice_groups(centres, side=factor * pitch, offset=phase * factor * pitch) for phase in (0, 0.5)]
    poolings = progress_bar(groupings, desc="Fitting the predictor", unit="pooling", disable=not show_progress_bar)
    for group in poolings:
        group = _singletons_outside(group)
        groups = int(group.max()) + 1
        size = np.bincount(group, minlength=groups)
        multi = size[group] >= 2
        n_groups = max(n_groups, int((size >= 2).sum()))
        n_held_groups += int((size >= 2).sum())
        group_features, _ = group_means(spot_features.T, group, groups)
        # A group measures its spots pooled: the mean of their linear expression.
        linear, _ = group_means(np.expm1(spot_values.astype(np.float64)).T, group, groups)
        group_values = np.log1p(linear.T)
        folds = sections if leave_sections_out else None
        held = heldout_ridge(spot_features, spot_values, group, rng=rng, sections=folds, within_groups=within_groups)
        predicted.append(deviation_from_group(held, group, groups)[multi])
        measured.append(deviation_from_group(spot_values.astype(np.float64), group, groups)[multi])
        group_centres, _ = group_means(centres.T.astype(np.float64), group, groups)
        smooth = _interpolate_within(group_centres.T, group_values, centres, group, sections)
        gradient.append(((smooth - group_values[group]) ** 2)[multi])
        # Centred in its group like the measured deviations, as the map is projected onto its spots.
        interpolated.append(deviation_from_group(smooth - group_values[group], group, groups)[multi])
        level.append(group_values[group][multi])
        if learned is not None:
            encoded.append(deviation_from_group(learned.astype(np.float64), group, groups)[multi])
        distance.append(ridge.feature_distance(spot_features, group_features.T[group])[multi])
    dp, dy, h = np.concatenate(predicted), np.concatenate(measured), np.concatenate(gradient)
    ds, at, dist = np.concatenate(interpolated), np.concatenate(level), np.concatenate(distance)
    de = np.concatenate(encoded) if encoded else np.zeros_like(dp)
    weight = np.zeros(n_genes)
    interpolation_weight = np.zeros(n_genes)
    learned_weight = np.zeros(n_genes)
    heldout_r = np.full(n_genes, np.nan)
    if n_groups >= MIN_GROUPS and len(dp) > 2:
        with np.errstate(invalid="ignore", divide="ignore"):
            heldout_r = np.array([np.corrcoef(dp[:, g], dy[:, g])[0, 1] for g in range(n_genes)])
        weight, interpolation_weight, learned_weight = detail_weights(
            dp, ds, de, measured=dy, n_groups=n_held_groups, across_genes=within_groups and same_level
        )
    residual = dy - weight * dp - interpolation_weight * ds - learned_weight * de
    ratio = 1.0 if same_level else finer_variance_ratio(spot_values, centres, pitch=pitch, scale=factor)
    residual_sd = np.sqrt(np.mean(residual**2, axis=0)) if len(residual) else np.zeros(n_genes)
    predictors = SpreadPredictors(
        gradient=h, detail=(weight * dp + interpolation_weight * ds + learned_weight * de) ** 2, level=at, distance=dist
    )
    spread = fit_spread(residual, predictors)
    heldout_variance = spread_variance(spread, predictors.relative(predictors.means()))
    coverage_scale, spread, typical_sd = calibrated_spread(
        residual, heldout_variance, residual_sd, spread, finer_ratio=ratio
    )
    return DetailModel(
        ridge=ridge,
        weight=weight,
        interpolation_weight=interpolation_weight,
        learned_weight=learned_weight,
        heldout_r=heldout_r,
        residual_sd=residual_sd,
        n_groups=n_groups,
        spread=spread,
        coverage_scale=coverage_scale,
        typical_sd=typical_sd,
        finer_ratio=ratio,
        group_detail_variance=dp.var(axis=0) if len(dp) > 2 else None,
        group_learned_variance=de.var(axis=0) if len(de) > 2 else None,
    )


def _singletons_outside(group: np.ndarray) -> np.ndarray:
    """``group`` with each unit outside every pseudo-spot (``-1``) in a group of its own (left out as size 1)."""
    outside = group < 0
    if not outside.any():
        return group
    group = group.copy()
    group[outside] = int(group.max()) + 1 + np.arange(int(outside.sum()))
    return group


def _interpolate_within(
    group_centres: np.ndarray, group_values: np.ndarray, centres: np.ndarray, group: np.ndarray, sections
) -> np.ndarray:
    """Cubic interpolation of the groups at ``centres``; with ``sections``, of each slide's groups on its own."""
    if sections is None:
        return interpolate_at(group_centres, group_values, centres)
    out = np.empty((len(centres), group_values.shape[1]))
    for section in np.unique(sections):
        units = sections == section
        own = np.unique(group[units])
        out[units] = interpolate_at(group_centres[own], group_values[own], centres[units])
    return out
