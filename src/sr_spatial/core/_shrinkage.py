"""Shrinking a predicted detail towards what a slide's own spots confirm: one slope per gene, with a prior.

Both methods guard a prediction made elsewhere (a reference-trained histology predictor, a reference-trained
diffusion model) by how far its deviations agree with the target's measured ones.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger("sr_spatial")

__all__ = ["PRIOR_SD", "guard_slopes", "log_guard"]

#: The prior's standard deviation on the slope of a reference model's detail on a target, around 1: how far a
#: section's relation between histology and expression may plausibly differ from the references'. Chosen on her2st
#: C2 (references B4 and C3) among 0.25, 0.5 and 1; the other sections are reported untouched
#: (``benchmarks/results/her2st_reference.md``).
PRIOR_SD = 0.5


def guard_slopes(
    predicted: np.ndarray, measured: np.ndarray, *, n_groups: int, prior_sd: float = PRIOR_SD
) -> dict[str, np.ndarray]:
    """Per gene, the posterior slope of ``measured`` on ``predicted`` deviations ``(n, n_genes)``, clipped to [0, 1].

    The slope through the origin and its standard error, inflated by ``n / n_groups`` as deviations inside one
    group are not independent, are combined with a normal prior around 1 of deviation ``prior_sd``: ``(slope *
    prior_sd**2 + se**2) / (prior_sd**2 + se**2)``; genes whose predicted deviations are all 0 keep 1. Returns
    ``factor``, ``slope``, ``slope_se`` and ``n_groups`` per gene.
    """
    r, dy = predicted, measured
    n, n_genes = r.shape
    slope, se = np.ones(n_genes), np.full(n_genes, np.inf)
    if n > 2 and n_groups > 0:
        sxx = np.sum(r**2, axis=0)
        usable = sxx > 1e-12
        slope[usable] = np.sum(r * dy, axis=0)[usable] / sxx[usable]
        sigma2 = np.sum((dy - slope * r) ** 2, axis=0) / (n - 1)
        se[usable] = np.sqrt(sigma2[usable] / sxx[usable] * n / n_groups)
    prior, se2 = prior_sd**2, np.square(se)
    posterior = np.ones(n_genes)
    finite = np.isfinite(se2)
    posterior[finite] = (slope[finite] * prior + se2[finite]) / (prior + se2[finite])
    return {
        "factor": np.clip(posterior, 0.0, 1.0),
        "slope": slope,
        "slope_se": se,
        "n_groups": np.full(n_genes, n_groups),
    }


def log_guard(guarded: dict[str, np.ndarray]) -> None:
    """Either method's guard, said in one log line: for how many genes the target's own spots confirm the detail."""
    factor = guarded["factor"]
    logger.info(
        "The reference model's detail is confirmed on this slide's own spots for %d of %d genes (median factor %.2f; "
        "1: as the references say, 0: the measurement).",
        int((factor > 0.5).sum()),
        len(factor),
        float(np.median(factor)),
    )
