"""Consistency with the measurement: super-resolved bins must average back to each measured spot."""

from __future__ import annotations

import numpy as np

from sr_spatial.core._groups import group_means

__all__ = ["project_to_spots", "spot_residual"]


def _footprint_means(
    linear: np.ndarray, footprint: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean of ``linear`` (``(..., n_genes, h, w)``) over the bins of each spot present in ``footprint``.

    Only the spots present are indexed, so a block of a large slide costs what its own spots cost. Returns the
    present spots, their means ``(..., n_genes, n_present)``, their bin counts, and each owned bin's index into
    the present spots (bins in ``footprint >= 0`` order).
    """
    owned = footprint >= 0
    present, owner = np.unique(footprint[owned], return_inverse=True)
    owner = owner.ravel()
    means, count = group_means(linear[..., owned], owner, len(present))
    return present, means, count, owner


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
    error, scale = residual_sums(maps, footprint, spot_values)
    if per_gene:
        return error / np.maximum(scale, 1e-12)
    return float(error.sum() / max(scale.sum(), 1e-12))


def residual_sums(
    maps: np.ndarray, footprint: np.ndarray, spot_values: np.ndarray, *, spots: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per gene, ``sum |mean over spot bins - spot|`` and ``sum |spot|`` over the spots covered by ``footprint``.

    ``spots`` (boolean, one per spot) restricts the sums to some spots, so that the residual of a slide can be
    summed block by block. Only spots present in ``footprint`` are aggregated, which keeps a block's work
    proportional to its own spots.
    """
    present, means, count, _ = _footprint_means(np.expm1(maps.astype(np.float64)), footprint)
    measured = np.expm1(spot_values[present].astype(np.float64)).T
    use = count > 0
    if spots is not None:
        use &= spots[present]
    error = np.abs(means - measured)[:, use].sum(axis=1)
    return error, np.abs(measured[:, use]).sum(axis=1)


def project_to_spots(
    samples: np.ndarray, footprint: np.ndarray, spot_values: np.ndarray, *, out: np.ndarray | None = None
) -> np.ndarray:
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
    out
        A float32 array of ``samples``' shape to write the result into; it may be ``samples`` itself.

    Returns
    -------
    The projected log-normalised maps, same shape as ``samples`` (``out`` if given).
    """
    if samples.ndim > 3:
        # One map at a time: the float64 temporaries of a block's draws would be several times the draws.
        if out is None:
            out = np.empty(samples.shape, dtype=np.float32)
        for index in np.ndindex(samples.shape[:-3]):
            out[index] = project_to_spots(samples[index], footprint, spot_values)
        return out
    linear = np.expm1(np.clip(samples.astype(np.float64), 0.0, None))
    owned = footprint >= 0
    present, means, _, owner = _footprint_means(linear, footprint)
    bins = linear[..., owned]
    measured = np.expm1(spot_values[present].astype(np.float64)).T  # (n_genes, n_present)
    bin_mean = means[..., owner]
    target = measured[..., owner]
    with np.errstate(divide="ignore", invalid="ignore"):
        scaled = np.where(bin_mean > 0, bins * (target / bin_mean), target)
    linear[..., owned] = scaled
    if out is None:
        return np.log1p(linear).astype(np.float32)
    out[...] = np.log1p(linear)
    return out
