"""Measured spots next to the super-resolved map and its uncertainty."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sr_spatial._docs import doc_params, doc_show_save
from sr_spatial.pl._utils import finish

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from matplotlib.axes import Axes
    from spatialdata import SpatialData

__all__ = ["superres"]


@doc_params(doc_show_save=doc_show_save)
def _checked(sdata: SpatialData, genes, *, key: str, names: dict, max_std):
    """The genes as a list and the output's table, once the output, its spread and the genes are found."""
    if names["table"] not in sdata.tables or key not in sdata.images:
        msg = f"No super-resolution under {key!r}; run `sr_spatial.tl.superresolve(..., key_added={key!r})` first."
        raise KeyError(msg)
    if names["std"] not in sdata.images:
        why = "`max_std` hides bins by it" if max_std is not None else "the uncertainty panel draws it"
        msg = (
            f"Image {names['std']!r} (the standard deviation of {key!r}) not found, and {why}. Keep or re-read "
            f"the elements `sr_spatial.tl.superresolve(..., key_added={key!r})` wrote."
        )
        raise KeyError(msg)
    if max_std is not None and not (isinstance(max_std, int | float | np.number) and max_std >= 0):
        msg = f"`max_std` must be a non-negative number (log-normalised expression) or None, got {max_std!r}."
        raise ValueError(msg)
    genes = [genes] if isinstance(genes, str) else list(genes)
    table = sdata.tables[names["table"]]
    missing = [g for g in genes if g not in table.var_names]
    if missing:
        msg = f"Genes {missing} were not super-resolved under {key!r}; available: {table.var_names[:10].tolist()}."
        raise KeyError(msg)
    return genes, table


def _truth(sdata: SpatialData, truth_key: str, key: str, genes: list[str]) -> np.ndarray:
    """The true expression averaged onto the output's bins, as :func:`sr_spatial.tl.evaluate` scores it."""
    if truth_key not in sdata.images:
        msg = f"Truth image {truth_key!r} not found; available images: {sorted(sdata.images.keys())}."
        raise KeyError(msg)
    from sr_spatial.tl._evaluate import regrid_to

    # Averaged onto the bins, as `tl.evaluate` scores it: the best any map on these bins could do.
    return regrid_to(sdata, truth_key, key, channels=genes)


def _figure(ax, *, n_genes: int, n_cols: int, panel_size: float):
    """The figure and its axes, ``(n_genes, n_cols)``: a new figure, or the axes passed, checked."""
    import matplotlib.pyplot as plt

    if ax is None:
        size = (n_cols * panel_size, n_genes * panel_size)
        return plt.subplots(n_genes, n_cols, figsize=size, squeeze=False)
    axes = np.asarray(ax, dtype=object).reshape(-1)
    if axes.size != n_cols * n_genes:
        msg = f"`ax` must hold {n_cols} axes per gene ({n_cols * n_genes} for {n_genes} genes), got {axes.size}."
        raise ValueError(msg)
    axes = axes.reshape(n_genes, n_cols)
    return axes[0, 0].figure, axes


def superres(
    sdata: SpatialData,
    genes: str | Sequence[str],
    *,
    key: str,
    truth_key: str | None = None,
    max_std: float | None = None,
    cmap: str = "viridis",
    alpha: float = 0.75,
    panel_size: float = 3.5,
    ax: Sequence[Axes] | np.ndarray | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    dpi: float = 120,
) -> list[Axes] | None:
    """Plot, per gene, the measured spots, the super-resolved map and its standard deviation over the H&E.

    Measured, super-resolved (and true) panels share one colour scale per gene, so what the model adds is
    visible as detail rather than as a change of range. The uncertainty panel's scale starts at 0. Every panel
    is drawn over the H&E, with the data at opacity ``alpha`` so the tissue shows through; outside the tissue
    (where the images are NaN) only the H&E is drawn.

    Parameters
    ----------
    sdata
        Holds the output of :func:`sr_spatial.tl.superresolve` under ``key``.
    genes
        One gene or several; one row of panels each.
    key
        ``key_added`` of that call.
    truth_key
        An image of true expression (channels = genes, e.g. ``"demo_truth"`` of
        :func:`sr_spatial.datasets.demo`): adds a panel with it averaged onto the bins, on the same colour scale.
    max_std
        Hide, in the super-resolved panel, the bins whose standard deviation (the image ``f"{key}_std"``, in
        log-normalised expression as the uncertainty panel's colour bar) exceeds this value, so only confident
        bins are drawn; hidden bins are transparent and the colour scale spans the bins drawn. The uncertainty
        panel still shows every bin. Default: draw every bin.
    cmap
        Matplotlib colour map of the expression panels.
    alpha
        Opacity of the spots and maps over the H&E (1: opaque, the H&E shows only around the tissue).
    panel_size
        Inches per panel (when ``ax`` is not given).
    ax
        Axes to draw into, three per gene (measured, super-resolved, uncertainty; four with ``truth_key``),
        e.g. from ``plt.subplots(len(genes), 3)``; default: a new figure.
    {doc_show_save}

    Returns
    -------
    If ``show`` is ``False``, the panels' axes in a list, gene by gene (measured, super-resolved, [truth,]
    uncertainty); else ``None``, as scanpy plots do. The figure is ``axes[0].figure``.
    """
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle

    from sr_spatial._adapter._write import output_names
    from sr_spatial.pp import build_st_map

    names = output_names(key)
    genes, table = _checked(sdata, genes, key=key, names=names, max_std=max_std)
    params = table.uns[key]["params"]
    st_map = build_st_map(
        sdata,
        params["image_key"],
        table_key=params.get("table_key", "table"),
        shapes_key=params.get("shapes_key"),
        genes=genes,
        scale=params["scale"],
        coordinate_system=table.uns[key].get("coordinate_system"),
    )
    legacy = table.uns["spatial"][key]
    background = legacy["images"]["hires"]
    scalef = legacy["scalefactors"]["tissue_hires_scalef"]
    grid = st_map.grid
    extent = [grid.x0 * scalef, (grid.x0 + grid.width * grid.size) * scalef]
    extent += [(grid.y0 + grid.height * grid.size) * scalef, grid.y0 * scalef]
    mean = np.asarray(sdata.images[key].sel(c=genes).values)
    std = np.asarray(sdata.images[names["std"]].sel(c=genes).values)
    mask = st_map.mask

    truth = None if truth_key is None else _truth(sdata, truth_key, key, genes)
    n_cols = 3 if truth is None else 4

    new_figure = ax is None
    fig, axes = _figure(ax, n_genes=len(genes), n_cols=n_cols, panel_size=panel_size)
    for row, gene in enumerate(genes):
        measured = st_map.values[:, row]
        shown = mean[row]
        if max_std is not None:
            # NaN is drawn transparent, like the glass around the tissue.
            shown = np.where(std[row] > max_std, np.nan, shown)
        visible = shown[mask & np.isfinite(shown)]
        shared = [measured, visible] + ([] if truth is None else [truth[row][mask]])
        shared = [a for a in shared if a.size]
        vmin, vmax = float(min(a.min() for a in shared)), float(max(a.max() for a in shared))
        panels = [
            ("measured spots", "spots", None),
            ("super-resolved" if max_std is None else f"super-resolved, sd ≤ {max_std:g}", "expression", shown),
            *([] if truth is None else [("truth", "expression", truth[row])]),
            ("uncertainty (sd)", "sd", std[row]),
        ]
        for col, (title, kind, data) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(background)
            if kind == "spots":
                # Circles in data units, so spots are drawn at their true size over the H&E.
                circles = PatchCollection(
                    [Circle(xy, r) for xy, r in zip(st_map.centres * scalef, st_map.radius * scalef, strict=True)],
                    cmap=cmap,
                )
                circles.set_array(measured)
                circles.set_clim(vmin, vmax)
                circles.set_alpha(alpha)
                image = ax.add_collection(circles)
            else:
                # Masked (outside the tissue; NaN in the images) is drawn transparent, so the H&E shows there.
                data = np.ma.masked_where(~mask | np.isnan(data), data)
                if kind == "expression":
                    image = ax.imshow(data, extent=extent, cmap=cmap, vmin=vmin, vmax=vmax, alpha=alpha)
                else:
                    # The sd starts at 0, so a flat (certain) map reads as certain, not as mid-range.
                    top = max(float(data.max()), 1e-6)
                    image = ax.imshow(data, extent=extent, cmap="magma", vmin=0.0, vmax=top, alpha=alpha)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
            ax.set_title(f"{gene}: {title}", fontsize=9)
            ax.set_axis_off()
    if new_figure:
        fig.tight_layout()
    return finish(fig, show=show, save=save, dpi=dpi, result=list(axes.ravel()))
