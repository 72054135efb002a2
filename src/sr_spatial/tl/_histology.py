"""Fit the histology predictor of ``method="histology"`` on a slide: features, spot supervision, weights."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sr_spatial._groups import group_means
from sr_spatial._logging import log_phase
from sr_spatial.features import bin_features, resolve_features
from sr_spatial.model._calibration import calibrate_spread
from sr_spatial.model._regression import detail_cap, fit_detail_model
from sr_spatial.model._spread import SpreadPredictors
from sr_spatial.tl._learned import fit_learned_detail

if TYPE_CHECKING:
    import torch

    from sr_spatial.model._config import ModelConfig
    from sr_spatial.model._regression import DetailModel
    from sr_spatial.pp._stmap import STMap
    from sr_spatial.tl._learned import LearnedDetail
    from sr_spatial.tl._plan import Block

logger = logging.getLogger("sr_spatial")

__all__ = ["HistologyDetail", "fit_histology_detail", "histology_predictor"]


@dataclass(frozen=True)
class HistologyDetail:
    """What ``method="histology"`` needs for every block: the fitted predictor and the slide's features."""

    model: DetailModel
    features: np.ndarray
    spot_features: np.ndarray
    spot_prediction: np.ndarray
    learned: LearnedDetail | None = None

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
        flat = features.T
        learned = None
        if self.learned is not None and learned_maps is not None:
            learned = self.learned.detail(learned_maps, owner)
        detail = self.model.detail(flat, self.spot_prediction[owner], (smooth - nearest).T, learned)
        predictors = SpreadPredictors(
            gradient=((smooth - nearest) ** 2).T,
            detail=detail**2,
            level=nearest.T,
            distance=self.model.ridge.feature_distance(flat, self.spot_features[owner]),
        )
        return detail, predictors

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
        (:func:`~sr_spatial.model._regression.heldout_ridge`), so a spot's own label never enters its base, as a
        bin's truth never enters the output's.
        """
        from sr_spatial.model._regression import heldout_ridge

        nearest, smooth, mask, owner = scene_maps
        groups = int(group.max()) + 1
        held = heldout_ridge(self.spot_features, spot_values, group, rng=np.random.default_rng(seed))
        group_held, _ = group_means(held.T, group, groups)
        histology = held[spot_of_bin].transpose(2, 0, 1) - group_held[:, owner]
        weight, interpolation = self.model.weight[:, None, None], self.model.interpolation_weight[:, None, None]
        detail = weight * histology + interpolation * (smooth - nearest)
        return (np.clip(nearest + detail, 0.0, None) * mask).astype(np.float32)

    def block_maps(
        self, block: Block, nearest: np.ndarray, smooth: np.ndarray, owner: np.ndarray, mask: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """The measurement plus the weighted predicted detail, and the calibrated spread, over ``block``.

        Both cover the block's padded region; the spread is 0 outside the tissue.
        """
        rows, cols = block.region
        n_genes = len(nearest)
        features = self.features[:, rows, cols].reshape(len(self.features), -1)
        learned_maps = None if self.learned is None else self.learned.maps[:, rows, cols].reshape(n_genes, -1)
        detail, predictors = self.bins(
            features, nearest.reshape(n_genes, -1), smooth.reshape(n_genes, -1), owner.ravel(), learned_maps
        )
        maps = np.clip(nearest + detail.T.reshape(nearest.shape).astype(np.float32), 0.0, None) * mask
        std = self.model.std(predictors).T.reshape(nearest.shape) * mask
        return maps, std.astype(np.float32)


def spot_features(features: np.ndarray, footprint: np.ndarray, centre_bins: np.ndarray) -> np.ndarray:
    """Each spot's features: the mean over its footprint's bins, or the bin under its centre if it has none."""
    n_spots = len(centre_bins)
    owned = footprint >= 0
    means, count = group_means(features[:, owned], footprint[owned], n_spots)
    rows = np.clip(centre_bins[:, 0], 0, footprint.shape[0] - 1)
    cols = np.clip(centre_bins[:, 1], 0, footprint.shape[1] - 1)
    at_centre = features[:, rows, cols]
    return np.where(count > 0, means, at_centre).T


def fit_histology_detail(
    st_map: STMap,
    rendered: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    owner: np.ndarray,
    *,
    features,
    image_um_per_px: float | None,
    scale: int,
    seed: int,
    show_progress_bar: bool,
    learned_encoder: ModelConfig | None = None,
    device: torch.device | str = "cpu",
) -> tuple[HistologyDetail, dict]:
    """Features of every bin, the predictor fitted on the spots, and what ``uns`` records about it.

    ``rendered`` is the whole grid's ``(nearest, smooth, mask, footprint)`` and ``owner`` each bin's nearest
    spot. With ``learned_encoder`` (a configuration: its encoder width, steps, batch size and pixels per bin),
    histology encoders are also cross-fitted on the spots (:mod:`sr_spatial.tl._learned`) and their detail
    enters as a third predictor, weighted like the others on held-out groups.

    Returns
    -------
    The block job's :class:`~sr_spatial.tl._blocks.HistologyDetail` and a dict for ``uns[key]["histology"]``:
    the extractor, per-gene ``weight`` (after ``detail_cap``), ``interpolation_weight``, ``detail_cap``
    (:func:`~sr_spatial.model._regression.detail_cap`), ``heldout_r``, typical calibrated ``std`` and its
    conformal ``coverage_scale``, the number of groups the weights were fitted on, and, with ``learned_encoder``,
    ``learned_weight`` (after its own ``learned_detail_cap``; absent when there were too few spots to learn from).
    """
    start = time.perf_counter()
    extractor = resolve_features(features, image_um_per_px=image_um_per_px)
    nearest, smooth, mask, footprint = rendered
    maps = bin_features(st_map.spots, st_map.grid, extractor, show_progress_bar=show_progress_bar)
    seconds = time.perf_counter() - start
    log_phase("features", seconds, "Computed %d histology features per bin in %.1f s.", len(maps), seconds)
    start = time.perf_counter()
    per_spot = spot_features(maps, footprint, st_map.grid.index_of(st_map.centres))
    learned = None
    if learned_encoder is not None:
        learned = fit_learned_detail(
            st_map,
            scale=scale,
            px_per_bin=learned_encoder.px_per_bin,
            width=learned_encoder.histology_width,
            steps=learned_encoder.encoder_steps,
            batch_size=learned_encoder.encoder_batch_size,
            seed=seed,
            device=device,
            show_progress_bar=show_progress_bar,
        )
        if learned is None:
            logger.info("Too few spots to cross-fit the learned encoder on; the morphology features work alone.")
    model = fit_detail_model(
        per_spot,
        st_map.values,
        st_map.centres,
        pitch=st_map.pitch,
        scale=scale,
        seed=seed,
        learned=None if learned is None else learned.heldout,
    )
    spot_prediction = model.spot_prediction(per_spot)
    bin_detail = model.ridge.predict(maps[:, mask].T) - spot_prediction[owner[mask]]
    cap = detail_cap(bin_detail.var(axis=0), model.group_detail_variance, model.finer_ratio)
    del bin_detail
    if (cap < 1.0).any():
        logger.info(
            "The histology detail swells from held-out spots to bins for %d of %d genes; their weights are scaled "
            "down to what the measurement's own variance across scales allows (median factor %.2f).",
            int((cap < 1.0).sum()),
            len(cap),
            float(np.median(cap[cap < 1.0])),
        )
    model.weight = model.weight * cap
    learned_cap = None
    learned_maps = None if learned is None else learned.maps[:, mask]
    if learned is not None:
        learned_variance = learned.detail(learned_maps, owner[mask]).var(axis=0)
        learned_cap = detail_cap(learned_variance, model.group_learned_variance, model.finer_ratio)
        model.learned_weight = model.learned_weight * learned_cap
    std = calibrate_spread(model)
    detail = HistologyDetail(
        model=model, features=maps, spot_features=per_spot, spot_prediction=spot_prediction, learned=learned
    )
    # The spread's predictors enter relative to their means over the slide's bins, as they did over spots.
    _, predictors = detail.bins(maps[:, mask], nearest[:, mask], smooth[:, mask], owner[mask], learned_maps)
    model.bin_means = predictors.means()
    helped = int((model.weight > 0.05).sum())
    seconds = time.perf_counter() - start
    log_phase("training", seconds, "Fitted the histology predictor in %.1f s.", seconds)
    logger.info(
        "Histology (%s, %d features) adds within-spot detail to %d of %d genes (median weight %.2f).",
        extractor.name,
        len(maps),
        helped,
        len(model.weight),
        float(np.median(model.weight)),
    )
    if learned is not None:
        logger.info(
            "The learned encoder adds detail to %d of %d genes (median weight %.2f).",
            int((model.learned_weight > 0.05).sum()),
            len(model.learned_weight),
            float(np.median(model.learned_weight)),
        )
    record = {
        "features": repr(extractor),
        "n_features": len(maps),
        "n_groups": model.n_groups,
        "weight": model.weight.astype(np.float32),
        "interpolation_weight": model.interpolation_weight.astype(np.float32),
        "detail_cap": cap.astype(np.float32),
        "heldout_r": model.heldout_r.astype(np.float32),
        "std": std.astype(np.float32),
        "coverage_scale": model.coverage_scale.astype(np.float32),
    }
    if learned is not None:
        record["learned_weight"] = model.learned_weight.astype(np.float32)
        record["learned_detail_cap"] = learned_cap.astype(np.float32)
    return detail, record


def histology_predictor(
    st_map: STMap,
    *,
    scale: int,
    seed: int,
    show_progress_bar: bool,
    features: str = "morphology",
    image_um_per_px: float | None = None,
    rendered: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None,
    owner: np.ndarray | None = None,
) -> tuple[HistologyDetail, dict]:
    """The predictor of ``method="histology"`` (without the learned encoder): a diffusion model's base.

    A model trained with ``histology_base`` generates the residual around this predictor's map, on the
    features its configuration names (``base_features``) at training and wherever it is applied.
    ``rendered`` and ``owner`` are as for :func:`fit_histology_detail`; default: those of a rendered ``st_map``.
    Returns the predictor and its ``uns`` record.
    """
    from sr_spatial.pp._stmap import nearest_spot

    if rendered is None:
        rendered = (st_map.nearest, st_map.smooth, st_map.mask, st_map.footprint)
    if owner is None:
        owner = nearest_spot(st_map.centres, st_map.grid)
    return fit_histology_detail(
        st_map,
        rendered,
        owner,
        features=features,
        image_um_per_px=image_um_per_px,
        scale=scale,
        seed=seed,
        show_progress_bar=show_progress_bar,
    )
