"""Does the reported uncertainty mean what it says? Reliability diagram and spread against error."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sr_spatial.pl._utils import finish

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from matplotlib.axes import Axes
    from spatialdata import SpatialData

__all__ = ["calibration"]

#: Nominal coverages drawn on the reliability diagram.
NOMINAL = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99)


def calibration(
    sdata: SpatialData,
    key: str,
    *,
    truth_key: str,
    genes: Sequence[str] | None = None,
    n_bins: int = 10,
    ax: Sequence[Axes] | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    dpi: float = 120,
) -> list[Axes] | None:
    """Reliability diagram of the per-bin intervals and the reported spread against the actual error.

    Left: for nominal levels from 10 to 99 %, the fraction of true bin values inside the central normal interval
    ``mean ± z * std`` (one thin line per gene, all genes pooled in bold); a calibrated map lies on the
    diagonal. Right: bins grouped into ``n_bins`` quantiles of their reported standard deviation, against their
    root mean square error; a spread that says where the map is wrong rises with the error, along the diagonal.

    Parameters
    ----------
    sdata
        Holds the output of :func:`sr_spatial.tl.superresolve` under ``key`` and the truth.
    key
        ``key_added`` of that call.
    truth_key
        Image with the true expression (channels = genes), box-averaged onto the bins as in
        :func:`sr_spatial.tl.evaluate`.
    genes
        Genes to include; default all.
    n_bins
        Quantile groups of the spread on the right panel.
    ax
        Two axes to draw into; default a new figure.
    show
        Show the figure; default unless ``save`` is given.
    save
        Path to save the figure to.
    dpi
        Resolution when saving.

    Returns
    -------
    The two Axes if ``show`` is false, else ``None``.
    """
    import matplotlib.pyplot as plt
    from scipy import stats

    from sr_spatial.tl._evaluate import bin_values

    if f"{key}_std" not in sdata.images:
        msg = f"Image {key + '_std'!r} not found: run `sr_spatial.tl.superresolve(..., key_added={key!r})` first."
        raise KeyError(msg)
    genes, mean, std, truth = bin_values(sdata, key, truth_key=truth_key, genes=genes)
    if not np.any(std > 0):
        msg = f"{key!r} has no spread (a baseline such as 'nearest'); calibration needs a method with uncertainty."
        raise ValueError(msg)
    if ax is None:
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.8))
    else:
        axes = list(ax)
        fig = axes[0].figure
    z = np.abs(truth - mean) / np.maximum(std, 1e-12)
    limits = stats.norm.ppf(0.5 + np.asarray(NOMINAL) / 2)
    per_gene = (z[None] <= limits[:, None, None]).mean(axis=1)  # (levels, genes)
    reliability, spread = axes[0], axes[1]
    reliability.plot(NOMINAL, per_gene, color="0.6", lw=0.6, alpha=0.6)
    reliability.plot(NOMINAL, (z[None] <= limits[:, None, None]).mean(axis=(1, 2)), color="C3", lw=2, label="all")
    reliability.plot([0, 1], [0, 1], ls="--", color="k", lw=1, label="calibrated")
    reliability.set(xlabel="nominal coverage", ylabel="observed coverage", xlim=(0, 1), ylim=(0, 1))
    reliability.set_title("Reliability of the intervals")
    reliability.legend(loc="upper left", frameon=False)

    flat_sd, flat_error = std.ravel(), np.abs(truth - mean).ravel()
    edges = np.unique(np.quantile(flat_sd, np.linspace(0, 1, n_bins + 1)))
    group = np.clip(np.searchsorted(edges, flat_sd, side="right") - 1, 0, max(len(edges) - 2, 0))
    count = np.bincount(group, minlength=len(edges) - 1)
    used = count > 0
    rms_error = np.sqrt(np.bincount(group, flat_error**2, minlength=len(edges) - 1)[used] / count[used])
    mean_sd = np.sqrt(np.bincount(group, flat_sd**2, minlength=len(edges) - 1)[used] / count[used])
    rho = stats.spearmanr(flat_sd, flat_error).statistic if np.ptp(flat_sd) > 0 else np.nan
    spread.plot(mean_sd, rms_error, "o-", color="C0", label=f"Spearman(sd, |error|) = {rho:.2f}")
    top = float(max(mean_sd.max(), rms_error.max()) * 1.05)
    spread.plot([0, top], [0, top], ls="--", color="k", lw=1)
    spread.set(xlabel="reported standard deviation", ylabel="root mean square error", xlim=(0, top), ylim=(0, top))
    spread.set_title("Spread against error")
    spread.legend(loc="upper left", frameon=False)
    fig.tight_layout()
    return finish(fig, show=show, save=save, dpi=dpi, result=[reliability, spread])
