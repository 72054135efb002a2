"""Interpolating spot values at arbitrary points, as the ST map renders its ``smooth`` layer."""

from __future__ import annotations

import numpy as np

__all__ = ["interpolate_at"]


def interpolate_at(points: np.ndarray, values: np.ndarray, query: np.ndarray) -> np.ndarray:
    """Cubic (Clough-Tocher) interpolation of ``values`` at ``query``, clipped at 0; nearest where undefined.

    The same interpolation :class:`~sr_spatial.pp.STMap` renders as ``smooth`` (the cubic baseline),
    at scattered points: ``points`` ``(n, 2)`` with ``values`` ``(n, n_genes)``, evaluated at ``query`` ``(m, 2)``.
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
