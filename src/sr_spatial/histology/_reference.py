"""The histology predictor learned from reference slides with finer truth, and its guard on the target slide.

A reference holds units at the output's scale (legacy-ST or Visium spots, Visium HD bins, binned Xenium). Pooled
into pseudo-spots with the target's geometry, they give true pairs: each unit's deviation from its pseudo-spot is
measured, so the detail weights are fitted on the truth the output is judged by, with hundreds or thousands of
labels where a slide alone gives tens (:func:`fit_on_references`). Features are standardised per slide, so a
stain that is darker overall does not shift the predictions; the held-out predictions come from folds of whole
pseudo-spots pooled over the references (leaving out one of two references, one of them unrelated, drove every
weight to 0), and the weights are shrunk toward their mean over genes.

A reference may still not fit the target (another patient, another tissue). Before its detail is trusted, the
target's own spots are pooled one level coarser (as in scale transfer) and the reference model's weighted detail
is regressed on their measured deviations, gene by gene (:func:`guard`): the slope is 1 where the reference is
right. Its posterior under a prior centred on 1 (:data:`~sr_spatial.core._shrinkage.PRIOR_SD`) shrinks each
gene's detail toward the measurement where the target's own spots say it does not predict, and leaves it where
they cannot tell.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from sr_spatial.core._groups import deviation_from_group, group_means, lattice_groups
from sr_spatial.core._shrinkage import PRIOR_SD, guard_slopes
from sr_spatial.core._uncertainty import MIN_SD, finer_variance_ratio
from sr_spatial.histology._regression import fit_detail_model
from sr_spatial.pp._interpolate import interpolate_at

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sr_spatial.histology._regression import DetailModel

__all__ = [
    "MIN_SPREAD_FACTOR",
    "ReferenceUnits",
    "at_own_depth",
    "bins_per_spot",
    "fit_on_references",
    "guard",
    "library_sizes",
    "standardise",
]

#: The most the target's own spots may narrow a reference model's spread (:func:`guard`): the median ratio over
#: genes rests on a slide's spots pooled one level coarser, tens of groups on a legacy-ST section.
MIN_SPREAD_FACTOR = 0.5


@dataclass(frozen=True)
class ReferenceUnits:
    """One reference slide's units, ready to fit on.

    Attributes
    ----------
    features
        Each unit's histology features ``(n_units, n_features)``, standardised over the slide's bins.
    values
        Each unit's log-normalised expression ``(n_units, n_genes)``.
    centres
        Unit centres ``(n_units, 2)`` in the slide's pixels.
    pitch
        The units' spacing, in the same pixels.
    groupings
        For each pooling offset, each unit's pseudo-spot (``-1`` outside every pseudo-spot).
    """

    features: np.ndarray
    values: np.ndarray
    centres: np.ndarray
    pitch: float
    groupings: tuple[np.ndarray, ...]


def at_own_depth(
    values: np.ndarray, library: np.ndarray, *, units_per_measurement: float = 1.0, target_sum: float = 1e4
) -> np.ndarray:
    """Log-normalised ``values`` (``log1p`` of counts per ``target_sum``) re-expressed at the slide's own depth.

    Each measurement becomes ``log1p(fraction x depth)``, with ``depth`` the median ``library`` (total counts) of
    the slide's measurements over ``units_per_measurement`` (the output-sized units each one pools): what one unit
    of the slide holds. Counts per 10,000 would blow a shallow slide's counting noise up to a deep slide's scale (a
    unit of 600 counts: 0 or 1 read as 0 or 2.8); at its own depth a shallow reference teaches less, as it should,
    and the deviations of a slide's units are read in the units a reference model was fitted in.
    """
    depth = float(np.median(np.asarray(library, dtype=np.float64))) / max(float(units_per_measurement), 1.0)
    fraction = np.expm1(np.asarray(values, dtype=np.float64)) / target_sum
    return np.log1p(fraction * max(depth, 1e-9)).astype(np.float32)


def bins_per_spot(footprint: np.ndarray, n_spots: int) -> float:
    """The median number of output bins in a spot's footprint (``footprint``: each bin's spot, ``-1`` for none)."""
    owned = footprint[footprint >= 0]
    counts = np.bincount(owned.ravel(), minlength=n_spots)
    counts = counts[counts > 0]
    return float(np.median(counts)) if len(counts) else 1.0


def library_sizes(counts) -> np.ndarray:
    """Total counts of each measurement (a row of ``counts``, sparse or dense)."""
    return np.asarray(counts.sum(axis=1), dtype=np.float64).ravel()


def standardise(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Features ``(n_features, h, w)`` standardised by their mean and deviation over the slide's tissue bins."""
    tissue = maps[:, mask].astype(np.float64)
    mean = tissue.mean(axis=1)
    sd = tissue.std(axis=1)
    sd = np.where(sd > 1e-9, sd, 1.0)
    return ((maps - mean[:, None, None]) / sd[:, None, None]).astype(np.float32)


def fit_on_references(
    units: Sequence[ReferenceUnits],
    *,
    scale: int,
    seed: int,
    learned: np.ndarray | None = None,
    show_progress_bar: bool = False,
) -> DetailModel:
    """The predictor fitted on the references' units and their true deviations from the pseudo-spots pooling them.

    Slides are laid side by side (their pseudo-spots never mix) and each is a held-out fold when there are several.
    ``learned``: each unit's held-out prediction by the learned encoders (all references' units in order), a
    third detail predictor (:func:`~sr_spatial.histology._learned.fit_learned_on_references`).
    """
    n_offsets = min(len(u.groupings) for u in units)
    centres, groupings, shift, base = [], [[] for _ in range(n_offsets)], 0.0, 0
    for u in units:
        # Side by side, a lattice apart: pooling and interpolation never reach across slides.
        moved = u.centres - u.centres.min(axis=0) + np.array([shift, 0.0])
        shift = float(moved[:, 0].max()) + 10 * max(u.pitch, 1.0)
        centres.append(moved)
        for k in range(n_offsets):
            group = u.groupings[k]
            groupings[k].append(np.where(group >= 0, group + base, -1))
        base += max(int(max(g.max() for g in u.groupings[:n_offsets])) + 1, 0)
    pitch = float(np.median([u.pitch for u in units]))
    sections = np.concatenate([np.full(len(u.values), i) for i, u in enumerate(units)])
    features = np.concatenate([u.features for u in units])
    groupings = [np.concatenate(g) for g in groupings]
    predictor = fit_detail_model(
        features,
        np.concatenate([u.values for u in units]).astype(np.float32),
        np.concatenate(centres),
        pitch=pitch,
        scale=scale,
        seed=seed,
        groupings=groupings,
        sections=sections,
        learned=learned,
        leave_sections_out=False,
        within_groups=True,
        show_progress_bar=show_progress_bar,
    )
    # The cap on a target's weights (detail_cap) compares the detail its bins get from the fitted ridge with the
    # detail that ridge gives the references' units around their pseudo-spots: the same ridge, the same level.
    return replace(predictor, group_detail_variance=_unit_detail_variance(predictor, features, groupings))


def _unit_detail_variance(predictor: DetailModel, features: np.ndarray, groupings) -> np.ndarray:
    """Per gene, the variance of the fitted ridge's predicted deviation of units from their pseudo-spots."""
    predicted = predictor.ridge.predict(features)
    deviations = []
    for group in groupings:
        inside = group >= 0
        groups = int(group.max()) + 1
        size = np.bincount(group[inside], minlength=groups)
        multi = inside.copy()
        multi[inside] = size[group[inside]] >= 2
        deviations.append(deviation_from_group(predicted[multi], group[multi], groups))
    return np.concatenate(deviations).var(axis=0)


def guard(
    predictor: DetailModel,
    spot_features: np.ndarray,
    values: np.ndarray,
    centres: np.ndarray,
    *,
    pitch: float,
    scale: int,
    prior_sd: float = PRIOR_SD,
    learned_spots: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per gene, how far the target's own spots confirm a reference model's detail: a factor in ``[0, 1]``.

    The target's spots are pooled into groups ``scale`` pitches wide (two phases, as in scale transfer); the
    reference model's weighted detail of each spot (its ridge's deviation from the group plus the interpolation's,
    and the learned encoders' where ``learned_spots``, their prediction of each spot, is given)
    is regressed, through the origin, on the measured deviation. With ``b`` the slope and ``se`` its standard error
    (inflated as the spots of a group are not independent), the factor is the posterior mean of the slope under a
    normal prior around 1 of deviation ``prior_sd``, clipped to ``[0, 1]``: ``(b * prior_sd**2 + se**2) /
    (prior_sd**2 + se**2)``.

    The spread is checked on the same spots: the target's residuals around the guarded detail, carried to the
    output's bins by the target's own finer-scale variance ratio, against the references' held-out residuals:
    ``spread_factor`` (one for the slide, the square root of the median ratio over genes) widens the spread where
    the target scatters more (a shallower slide) and narrows it where it scatters less (a deeper one), at most by
    :data:`MIN_SPREAD_FACTOR`.

    Returns
    -------
    ``factor``, the slope ``slope``, its ``slope_se``, ``n_groups`` (groups of at least two spots) and
    ``spread_factor``, per gene.
    """
    factor = max(int(scale), 2)
    predicted = predictor.ridge.predict(spot_features)
    values = values.astype(np.float64)
    detail, measured, n_groups = [], [], 0
    for phase in (0.0, 0.5):
        group = lattice_groups(centres, side=factor * pitch, offset=phase * factor * pitch)
        groups = int(group.max()) + 1
        size = np.bincount(group, minlength=groups)
        multi = size[group] >= 2
        n_groups += int((size >= 2).sum())
        linear, _ = group_means(np.expm1(values).T, group, groups)
        group_values = np.log1p(linear.T)
        group_centres, _ = group_means(centres.T.astype(np.float64), group, groups)
        smooth = interpolate_at(group_centres.T, group_values, centres)
        interpolated = deviation_from_group(smooth - group_values[group], group, groups)
        histology = deviation_from_group(predicted, group, groups)
        weighted = predictor.weight * histology + predictor.interpolation_weight * interpolated
        if learned_spots is not None and predictor.learned_weight is not None:
            weighted = weighted + predictor.learned_weight * deviation_from_group(learned_spots, group, groups)
        detail.append(weighted[multi])
        measured.append(deviation_from_group(values, group, groups)[multi])
    detail, measured = np.concatenate(detail), np.concatenate(measured)
    guarded = guard_slopes(detail, measured, n_groups=n_groups // 2, prior_sd=prior_sd)
    # How much the target's spots scatter around the guarded detail, carried to the output's bins like the spread of
    # a model fitted on the slide itself, against what the references' held-out residuals promise.
    calibrated = predictor.residual_sd > MIN_SD
    if len(detail) and calibrated.any():
        residual = np.mean((measured - guarded["factor"] * detail) ** 2, axis=0)
        finer = finer_variance_ratio(values, centres, pitch=pitch, scale=factor)
        ratio = residual[calibrated] * finer / predictor.residual_sd[calibrated] ** 2
        spread = max(MIN_SPREAD_FACTOR, float(np.sqrt(np.median(ratio))))
    else:  # no group of two spots, or a reference that measured no residual: nothing to check the spread against
        spread = 1.0
    guarded["spread_factor"] = np.full(values.shape[1], spread)
    return guarded
