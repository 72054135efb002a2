"""Fit the histology predictor of ``method="histology"`` on a slide: features, spot supervision, weights."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from sr_spatial._groups import group_means
from sr_spatial.features import bin_features, resolve_features
from sr_spatial.model._calibration import calibrate_spread
from sr_spatial.model._regression import fit_detail_model
from sr_spatial.tl._blocks import HistologyDetail

if TYPE_CHECKING:
    from sr_spatial.pp._stmap import STMap

logger = logging.getLogger("sr_spatial")

__all__ = ["fit_histology_detail"]


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
) -> tuple[HistologyDetail, dict]:
    """Features of every bin, the predictor fitted on the spots, and what ``uns`` records about it.

    ``rendered`` is the whole grid's ``(nearest, smooth, mask, footprint)`` and ``owner`` each bin's nearest
    spot.

    Returns
    -------
    The block job's :class:`~sr_spatial.tl._blocks.HistologyDetail` and a dict for ``uns[key]["histology"]``:
    the extractor, per-gene ``weight``, ``heldout_r``, typical calibrated ``std`` and its conformal
    ``coverage_scale``, and the number of groups the weights were fitted on.
    """
    extractor = resolve_features(features, image_um_per_px=image_um_per_px)
    nearest, smooth, mask, footprint = rendered
    maps = bin_features(st_map.spots, st_map.grid, extractor, show_progress_bar=show_progress_bar)
    per_spot = spot_features(maps, footprint, st_map.grid.index_of(st_map.centres))
    model = fit_detail_model(per_spot, st_map.values, st_map.centres, pitch=st_map.pitch, scale=scale, seed=seed)
    std = calibrate_spread(model)
    detail = HistologyDetail(
        model=model, features=maps, spot_features=per_spot, spot_prediction=model.spot_prediction(per_spot)
    )
    # The spread's predictors enter relative to their means over the slide's bins, as they did over spots.
    _, predictors = detail.bins(maps[:, mask], nearest[:, mask], smooth[:, mask], owner[mask])
    model.bin_means = predictors.means()
    helped = int((model.weight > 0.05).sum())
    logger.info(
        "Histology (%s, %d features) adds within-spot detail to %d of %d genes (median weight %.2f).",
        extractor.name,
        len(maps),
        helped,
        len(model.weight),
        float(np.median(model.weight)),
    )
    record = {
        "features": repr(extractor),
        "n_features": len(maps),
        "n_groups": model.n_groups,
        "weight": model.weight.astype(np.float32),
        "heldout_r": model.heldout_r.astype(np.float32),
        "std": std.astype(np.float32),
        "coverage_scale": model.coverage_scale.astype(np.float32),
    }
    return detail, record
