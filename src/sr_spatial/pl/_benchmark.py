"""A table of metrics per method, drawn as a figure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sr_spatial._docs import doc_params, doc_show_save
from sr_spatial.pl._utils import finish

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from matplotlib.axes import Axes

__all__ = ["benchmark"]

#: Whether a larger value is better, for the metrics of :func:`sr_spatial.tl.evaluate` and the benchmark tables.
HIGHER_IS_BETTER = {
    "pearson": True,
    "ssim": True,
    "rmse": False,
    "spot_residual": False,
    "wall_s": False,
    "peak_mib": False,
}


def _as_table(results: pd.DataFrame | Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    if isinstance(results, Mapping):
        if not results:
            msg = "`results` is empty; pass e.g. {'sr': sr.tl.evaluate(sdata, 'sr', truth_key=...)}."
            raise ValueError(msg)
        frames = {}
        for method, frame in results.items():
            if not isinstance(frame, pd.DataFrame):
                msg = f"`results[{method!r}]` must be a DataFrame such as `sr_spatial.tl.evaluate` returns."
                raise TypeError(msg)
            frames[str(method)] = frame.select_dtypes("number").mean()
        return pd.DataFrame(frames).T
    if isinstance(results, pd.DataFrame):
        return results.copy()
    msg = f"`results` must be a DataFrame (methods x metrics) or a dict of evaluate() tables, got {type(results)}."
    raise TypeError(msg)


def _format(value: float) -> str:
    if not np.isfinite(value):
        return ""
    if value != 0 and abs(value) < 1e-2:
        return f"{value:.1e}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.3f}"


@doc_params(doc_show_save=doc_show_save)
def benchmark(
    results: pd.DataFrame | Mapping[str, pd.DataFrame],
    *,
    metrics: Sequence[str] | None = None,
    higher_is_better: Mapping[str, bool] | None = None,
    cmap: str = "Greens",
    title: str | None = None,
    ax: Axes | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    dpi: float = 120,
) -> Axes | None:
    """Draw a table of metrics per method; each column is shaded from worst to best and its best value is bold.

    Parameters
    ----------
    results
        Either a DataFrame with one row per method and one column per metric, or a dict mapping method names
        to per-gene tables from :func:`sr_spatial.tl.evaluate` (their gene means are shown).
    metrics
        Columns to show, in order; default: every numeric column.
    higher_is_better
        Per metric, whether larger is better; merged over the defaults for ``pearson``, ``ssim`` (higher) and
        ``rmse``, ``spot_residual``, ``wall_s``, ``peak_mib`` (lower). Metrics with no direction are not shaded.
    cmap
        Matplotlib colour map of the shading (light = worst, dark = best).
    title
        Title above the table.
    ax
        Axes to draw into; default: a new figure sized to the table.
    {doc_show_save}

    Returns
    -------
    The axes if ``show`` is ``False``, else ``None`` (as scanpy plots do).
    """
    import matplotlib.pyplot as plt
    from matplotlib import colormaps

    table = _as_table(results)
    if metrics is None:
        table = table.select_dtypes("number")
    else:
        missing = [m for m in metrics if m not in table.columns]
        if missing:
            msg = f"Metrics {missing} are not in the results; available: {list(table.columns)}."
            raise KeyError(msg)
        table = table[list(metrics)].apply(pd.to_numeric, errors="coerce")
    if table.empty:
        msg = "No numeric metrics to plot; pass `metrics=` naming numeric columns."
        raise ValueError(msg)
    directions = {**HIGHER_IS_BETTER, **dict(higher_is_better or {})}
    values = table.to_numpy(dtype=float)
    n_rows, n_cols = values.shape

    created = ax is None
    if created:
        width = 1.6 + 1.1 * n_cols + 0.07 * max(len(str(i)) for i in table.index)
        _, ax = plt.subplots(figsize=(width, 0.45 * (n_rows + 1) + (0.3 if title else 0)))
    fig = ax.figure
    colours = colormaps[cmap]
    shade = np.full(values.shape, np.nan)
    best = np.zeros(values.shape, dtype=bool)
    for col, metric in enumerate(table.columns):
        column = values[:, col]
        finite = np.isfinite(column)
        if metric not in directions or finite.sum() == 0:
            continue
        signed = column if directions[metric] else -column
        lo, hi = np.nanmin(signed[finite]), np.nanmax(signed[finite])
        shade[finite, col] = (signed[finite] - lo) / (hi - lo) if hi > lo else 1.0
        best[:, col] = finite & (signed == hi)
    # Shades stay in the light half of the map so that black text remains readable on every cell.
    rgba = np.where(np.isnan(shade)[..., None], np.ones(4), colours(0.05 + 0.5 * np.nan_to_num(shade)))
    ax.imshow(rgba, aspect="auto", interpolation="nearest")
    for row in range(n_rows):
        for col in range(n_cols):
            weight = "bold" if best[row, col] else "normal"
            ax.text(col, row, _format(values[row, col]), ha="center", va="center", fontsize=9, fontweight=weight)
    ax.set_xticks(range(n_cols), [str(c) for c in table.columns], fontsize=9)
    ax.set_yticks(range(n_rows), [str(i) for i in table.index], fontsize=9)
    ax.xaxis.tick_top()
    ax.tick_params(length=0)
    ax.set_xticks(np.arange(n_cols + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(n_rows + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10, pad=8)
    if created:
        fig.tight_layout()
    return finish(fig, show=show, save=save, dpi=dpi, result=ax)
