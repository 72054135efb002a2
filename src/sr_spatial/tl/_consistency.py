"""Consistency with the measurement: super-resolved bins must average back to each measured spot."""

from __future__ import annotations

import numpy as np

from sr_spatial._groups import group_means

__all__ = ["project_to_spots", "spot_residual"]


def _footprint_means(linear: np.ndarray, footprint: np.ndarray, n_spots: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of ``linear`` (``(..., n_genes, h, w)``) over each spot's bins, and the bin count per spot."""
    owned = footprint >= 0
    return group_means(linear[..., owned], footprint[owned], n_spots)


def spot_residual(
    maps: np.ndarray, footprint: np.ndarray, spot_values: np.ndarray, *, per_gene: bool = False
) -> float | np.ndarray:
    """Relative disagreement of ``maps`` with the measured spots, in linear normalised expression.

    ``sum |mean over spot bins - spot| / sum |spot|`` over spots and genes; 0 means every spot is reproduced.

    Parameters
    ----------
    maps
        Log-normalised maps ``(n_genes, h, w)``.
    footprint
        Spot index per bin, ``-1`` outside every spot (:attr:`sr_spatial.pp.STMap.footprint`).
    spot_values
        Log-normalised spot values ``(n_spots, n_genes)``.
    per_gene
        Return one residual per gene instead of their pooled value.

    Returns
    -------
    The relative residual, or an array of one per gene.
    """
    means, count = _footprint_means(np.expm1(maps.astype(np.float64)), footprint, len(spot_values))
    measured = np.expm1(spot_values.astype(np.float64)).T
    covered = count > 0
    error = np.abs(means - measured)[:, covered]
    scale = np.abs(measured[:, covered])
    if per_gene:
        return error.sum(axis=1) / np.maximum(scale.sum(axis=1), 1e-12)
    return float(error.sum() / max(scale.sum(), 1e-12))


def project_to_spots(samples: np.ndarray, footprint: np.ndarray, spot_values: np.ndarray) -> np.ndarray:
    """Rescale each spot's bins so they average exactly to the spot, in linear normalised expression.

    The projection is multiplicative, which keeps expression non-negative and leaves the relative pattern
    inside a spot as generated; a spot whose bins are all zero gets its value in every bin. Bins outside every
    spot are unchanged.

    Parameters
    ----------
    samples
        Log-normalised maps ``(..., n_genes, h, w)``.
    footprint
        Spot index per bin, ``-1`` outside every spot.
    spot_values
        Log-normalised spot values ``(n_spots, n_genes)``.

    Returns
    -------
    The projected log-normalised maps, same shape as ``samples``.
    """
    linear = np.expm1(np.clip(samples.astype(np.float64), 0.0, None))
    means, _ = _footprint_means(linear, footprint, len(spot_values))
    measured = np.expm1(spot_values.astype(np.float64)).T  # (n_genes, n_spots)
    owned = footprint >= 0
    owner = footprint[owned]
    bins = linear[..., owned]
    bin_mean = means[..., owner]
    target = measured[..., owner]
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(bin_mean > 0, bins * (target / bin_mean), target)
    linear[..., owned] = scaled
    return np.log1p(linear).astype(np.float32)
