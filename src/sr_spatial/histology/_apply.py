"""A fitted histology predictor applied to one slide: its features, the weights capped for it, its maps by block."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from sr_spatial.core._groups import group_means
from sr_spatial.core._uncertainty import SpreadPredictors
from sr_spatial.histology._regression import detail_cap

if TYPE_CHECKING:
    from sr_spatial.histology._learned import LearnedDetail
    from sr_spatial.histology._regression import DetailModel
    from sr_spatial.pp._stmap import STMap

__all__ = ["HistologyDetail", "detail_at_bins", "on_slide", "spot_features"]

logger = logging.getLogger("sr_spatial")


@dataclass(frozen=True)
class HistologyDetail:
    """What ``method="histology"`` needs for every block of one slide.

    Attributes
    ----------
    model
        The fitted predictor (slide-independent).
    features
        The slide's histology features per bin, ``(n_features, height, width)``.
    spot_features
        Each spot's features, ``(n_spots, n_features)``.
    spot_prediction
        Each spot's expression predicted from its features, ``(n_spots, n_genes)``.
    weight, interpolation_weight, learned_weight
        Per gene, the predictor's weights on this slide: after its caps
        (:func:`~sr_spatial.histology._regression.detail_cap`) and, for a model fitted on reference slides, its guard
        (:func:`~sr_spatial.histology._reference.guard`).
    bin_means
        The spread predictors' means over this slide's bins, ``(4, n_genes)``.
    learned
        The learned encoders' maps of this slide, or ``None``.
    spot_variance
        Per spot and gene, the variance its counting adds beyond a typical spot's
        (:func:`~sr_spatial.core._uncertainty.counting_variance`), added to its bins' spread; ``None``: none.
    """

    model: DetailModel
    features: np.ndarray
    spot_features: np.ndarray
    spot_prediction: np.ndarray
    weight: np.ndarray
    interpolation_weight: np.ndarray
    learned_weight: np.ndarray
    bin_means: np.ndarray
    learned: LearnedDetail | None = None
    spot_variance: np.ndarray | None = None

    def bins(
        self,
        features: np.ndarray,
        nearest: np.ndarray,
        smooth: np.ndarray,
        owner: np.ndarray,
        learned_maps: np.ndarray | None = None,
    ) -> tuple[np.ndarray, SpreadPredictors]:
        """Weighted predicted detail ``(n_bins, n_genes)`` of bins and their spread predictors.

        ``features`` is ``(n_features, n_bins)``, ``nearest`` and ``smooth`` ``(n_genes, n_bins)``, ``owner``
        each bin's nearest spot, ``learned_maps`` the learned encoder's maps at the bins ``(n_genes, n_bins)``.
        """
        return detail_at_bins(
            self.model,
            (self.weight, self.interpolation_weight, self.learned_weight),
            features,
            self.spot_prediction[owner],
            self.spot_features[owner],
            nearest,
            smooth,
            None if self.learned is None or learned_maps is None else self.learned.detail(learned_maps, owner),
        )

    def training_base(
        self,
        spot_values: np.ndarray,
        group: np.ndarray,
        spot_of_bin: np.ndarray,
        scene_maps: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
        *,
        seed: int,
    ) -> np.ndarray:
        """The predictor's map on a scale-transfer training scene whose bins are spots, ``(n_genes, h, w)``.

        The scene pools the spots by ``group``; ``scene_maps`` are its ``(nearest, smooth, mask, owner)``
        (``owner``: each bin's pseudo-spot) and ``spot_of_bin`` each bin's spot. As on the output's bins, each
        bin takes its measurement plus the weighted detail: the ridge's prediction of its spot minus the mean over
        the pseudo-spot's spots, and the interpolation's deviation. The ridge's spot predictions are held out
        (:func:`~sr_spatial.histology._regression.heldout_ridge`), so a spot's own label never enters its base, as a
        bin's truth never enters the output's.
        """
        from sr_spatial.histology._regression import heldout_ridge

        nearest, smooth, mask, owner = scene_maps
        groups = int(group.max()) + 1
        held = heldout_ridge(self.spot_features, spot_values, group, rng=np.random.default_rng(seed))
        group_held, _ = group_means(held.T, group, groups)
        histology = held[spot_of_bin].transpose(2, 0, 1) - group_held[:, owner]
        weight, interpolation = self.weight[:, None, None], self.interpolation_weight[:, None, None]
        detail = weight * histology + interpolation * (smooth - nearest)
        return (np.clip(nearest + detail, 0.0, None) * mask).astype(np.float32)

    def block_maps(
        self,
        region: tuple[slice, slice],
        nearest: np.ndarray,
        smooth: np.ndarray,
        owner: np.ndarray,
        mask: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """The measurement plus the weighted predicted detail, and the calibrated spread, over a block.

        ``region`` is the block's padded region of the slide's grid (rows, columns); both maps cover it, and the
        spread is 0 outside the tissue.
        """
        rows, cols = region
        n_genes = len(nearest)
        features = self.features[:, rows, cols].reshape(len(self.features), -1)
        learned_maps = None if self.learned is None else self.learned.maps[:, rows, cols].reshape(n_genes, -1)
        detail, predictors = self.bins(
            features, nearest.reshape(n_genes, -1), smooth.reshape(n_genes, -1), owner.ravel(), learned_maps
        )
        maps = np.clip(nearest + detail.T.reshape(nearest.shape).astype(np.float32), 0.0, None) * mask
        std = self.model.std(predictors, self.bin_means)
        if self.spot_variance is not None:
            std = np.sqrt(std**2 + self.spot_variance[owner.ravel()])
        std = std.T.reshape(nearest.shape) * mask
        return maps, std.astype(np.float32)


def detail_at_bins(
    model: DetailModel,
    weights: tuple[np.ndarray, np.ndarray, np.ndarray],
    features: np.ndarray,
    spot_prediction_of_owner: np.ndarray,
    spot_features_of_owner: np.ndarray,
    nearest: np.ndarray,
    smooth: np.ndarray,
    learned: np.ndarray | None,
) -> tuple[np.ndarray, SpreadPredictors]:
    """Weighted predicted deviation of each bin from its spot ``(n_bins, n_genes)``, and its spread predictors.

    ``weights`` are the histology, interpolation and learned weights per gene; ``features`` is
    ``(n_features, n_bins)``; ``nearest`` and ``smooth`` ``(n_genes, n_bins)``; ``learned`` the learned encoder's
    detail ``(n_bins, n_genes)`` or ``None``.
    """
    weight, interpolation_weight, learned_weight = weights
    flat = features.T
    histology = model.ridge.predict(flat) - spot_prediction_of_owner
    detail = weight * histology + interpolation_weight * (smooth - nearest).T
    if learned is not None:
        detail += learned_weight * learned
    predictors = SpreadPredictors(
        gradient=((smooth - nearest) ** 2).T,
        detail=detail**2,
        level=nearest.T,
        distance=model.ridge.feature_distance(flat, spot_features_of_owner),
    )
    return detail, predictors


def spot_features(features: np.ndarray, footprint: np.ndarray, centre_bins: np.ndarray) -> np.ndarray:
    """Each spot's features: the mean over its footprint's bins, or the bin under its centre if it has none."""
    n_spots = len(centre_bins)
    owned = footprint >= 0
    means, count = group_means(features[:, owned], footprint[owned], n_spots)
    rows = np.clip(centre_bins[:, 0], 0, footprint.shape[0] - 1)
    cols = np.clip(centre_bins[:, 1], 0, footprint.shape[1] - 1)
    at_centre = features[:, rows, cols]
    return np.where(count > 0, means, at_centre).T


def _record(
    predictor: DetailModel, detail: HistologyDetail, extractor, cap: np.ndarray, guarded: dict | None, reference
) -> dict:
    """The ``uns[key]["histology"]`` record of a predictor on one slide, with its guard's if it has one."""
    record = {
        "features": repr(extractor),
        "n_features": len(detail.features),
        "n_groups": predictor.n_groups,
        "weight": detail.weight.astype(np.float32),
        "interpolation_weight": detail.interpolation_weight.astype(np.float32),
        "detail_cap": cap.astype(np.float32),
        "heldout_r": predictor.heldout_r.astype(np.float32),
        "std": predictor.typical_sd.astype(np.float32),
        "coverage_scale": predictor.coverage_scale.astype(np.float32),
    }
    if guarded is not None:
        record["reference_weight"] = predictor.weight.astype(np.float32)
        record["reference_interpolation_weight"] = predictor.interpolation_weight.astype(np.float32)
        record["guard_factor"] = guarded["factor"].astype(np.float32)
        record["guard_slope"] = guarded["slope"].astype(np.float32)
        record["guard_slope_se"] = guarded["slope_se"].astype(np.float32)
        record["guard_spread_factor"] = guarded["spread_factor"].astype(np.float32)
        record["n_references"] = int(reference["n_references"])
    return record


def on_slide(
    predictor: DetailModel,
    maps: np.ndarray,
    per_spot: np.ndarray,
    st_map: STMap,
    learned: LearnedDetail | None,
    extractor,
    guarded: dict | None = None,
    reference: dict | None = None,
) -> tuple[HistologyDetail, dict]:
    """A fitted predictor on one slide: its :class:`HistologyDetail` and the record of ``uns[key]["histology"]``.

    ``maps`` are the slide's features per bin and ``per_spot`` its spots'; ``st_map`` the slide rendered on its
    whole grid (:func:`~sr_spatial.pp._stmap.render_whole`); ``learned`` the learned encoders' maps of the slide;
    ``extractor`` the features used; ``guarded`` the guard of a reference model
    (:func:`~sr_spatial.histology._reference.guard`) with its ``reference`` description. The weights are capped so
    the detail at bins varies only as the measurement allows (:func:`~sr_spatial.histology._regression.detail_cap`)
    and multiplied by the guard's factor.
    """
    from sr_spatial.pp._stmap import nearest_spot

    nearest, smooth, mask = st_map.nearest, st_map.smooth, st_map.mask
    owner = nearest_spot(st_map.centres, st_map.grid)
    if guarded is not None:
        # The target's own spread, checked on its spots (guard): a new predictor for this slide, the model unchanged.
        widen = guarded["spread_factor"]
        predictor = replace(
            predictor, coverage_scale=predictor.coverage_scale * widen, typical_sd=predictor.typical_sd * widen
        )
    spot_prediction = predictor.spot_prediction(per_spot)
    # Bins a spot's footprint pools, as a reference's pseudo-spots pool its units: beyond the footprints a bin's
    # deviation from its nearest spot also holds the distance to it, which the held-out spots never measured.
    pooled = st_map.footprint >= 0 if guarded is not None and (st_map.footprint >= 0).any() else mask
    bin_detail = predictor.ridge.predict(maps[:, pooled].T) - spot_prediction[owner[pooled]]
    cap = detail_cap(bin_detail.var(axis=0), predictor.group_detail_variance, predictor.finer_ratio)
    del bin_detail
    if (cap < 1.0).any():
        logger.info(
            "The histology detail swells from held-out spots to bins for %d of %d genes; their weights are "
            "scaled down to what the measurement's own variance across scales allows (median factor %.2f).",
            int((cap < 1.0).sum()),
            len(cap),
            float(np.median(cap[cap < 1.0])),
        )
    weight, interpolation_weight = predictor.weight * cap, predictor.interpolation_weight
    if guarded is not None:
        weight, interpolation_weight = weight * guarded["factor"], interpolation_weight * guarded["factor"]
    learned_weight, learned_cap = predictor.learned_weight, None
    learned_detail = None if learned is None else learned.detail(learned.maps[:, mask], owner[mask])
    if learned is not None:
        learned_cap = detail_cap(learned_detail.var(axis=0), predictor.group_learned_variance, predictor.finer_ratio)
        learned_weight = learned_weight * learned_cap
    # The spread's predictors enter relative to their means over the slide's bins, as they did over spots.
    _, predictors = detail_at_bins(
        predictor,
        (weight, interpolation_weight, learned_weight),
        maps[:, mask],
        spot_prediction[owner[mask]],
        per_spot[owner[mask]],
        nearest[:, mask],
        smooth[:, mask],
        learned_detail,
    )
    detail = HistologyDetail(
        model=predictor,
        features=maps,
        spot_features=per_spot,
        spot_prediction=spot_prediction,
        weight=weight,
        interpolation_weight=interpolation_weight,
        learned_weight=learned_weight,
        bin_means=predictors.means(),
        learned=learned,
    )
    logger.info(
        "Histology (%s, %d features) adds within-spot detail to %d of %d genes (median weight %.2f).",
        extractor.name,
        len(maps),
        int((weight > 0.05).sum()),
        len(weight),
        float(np.median(weight)),
    )
    record = _record(predictor, detail, extractor, cap, guarded, reference)
    if learned is not None:
        logger.info(
            "The learned encoder adds detail to %d of %d genes (median weight %.2f).",
            int((learned_weight > 0.05).sum()),
            len(learned_weight),
            float(np.median(learned_weight)),
        )
        record["learned_weight"] = learned_weight.astype(np.float32)
        record["learned_detail_cap"] = learned_cap.astype(np.float32)
    return detail, record
