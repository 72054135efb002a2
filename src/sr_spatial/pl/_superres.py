"""Measured spots next to the super-resolved map and its uncertainty."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sr_spatial.pl._utils import finish

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from spatialdata import SpatialData

__all__ = ["superres"]


def superres(
    sdata: SpatialData,
    genes: str | Sequence[str],
    *,
    key: str,
    cmap: str = "viridis",
    panel_size: float = 3.5,
    ax: Sequence[Axes] | np.ndarray | None = None,
    show: bool | None = None,
    save: str | Path | None = None,
    dpi: float = 120,
) -> Figure | None:
    """Plot, per gene, the measured spots, the super-resolved map and its standard deviation over the H&E.

    Measured and super-resolved panels share one colour scale, so what the model adds is visible as detail
    rather than as a change of range.

    Parameters
    ----------
    sdata
        Holds the output of :func:`sr_spatial.tl.superresolve` under ``key``.
    genes
        One gene or several; one row of panels each.
    key
        ``key_added`` of that call.
    cmap
        Matplotlib colour map of the expression panels.
    panel_size
        Inches per panel (when ``ax`` is not given).
    ax
        Axes to draw into, three per gene (measured, super-resolved, uncertainty), e.g. from
        ``plt.subplots(len(genes), 3)``; default: a new figure.
    show
        Show the figure; default: show unless ``save`` is given.
    save
        Write the figure to this path.
    dpi
        Resolution of the saved figure.

    Returns
    -------
    The figure if ``show`` is ``False``, else ``None`` (as scanpy plots do).
    """
    import matplotlib.pyplot as plt
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Circle

    from sr_spatial._adapter import output_names
    from sr_spatial.pp import build_st_map

    names = output_names(key)
    if names["table"] not in sdata.tables or key not in sdata.images:
        msg = f"No super-resolution under {key!r}; run `sr_spatial.tl.superresolve(..., key_added={key!r})` first."
        raise KeyError(msg)
    genes = [genes] if isinstance(genes, str) else list(genes)
    table = sdata.tables[names["table"]]
    missing = [g for g in genes if g not in table.var_names]
    if missing:
        msg = f"Genes {missing} were not super-resolved under {key!r}; available: {table.var_names[:10].tolist()}."
        raise KeyError(msg)
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

    if ax is None:
        fig, axes = plt.subplots(len(genes), 3, figsize=(3 * panel_size, len(genes) * panel_size), squeeze=False)
    else:
        axes = np.asarray(ax, dtype=object).reshape(-1)
        if axes.size != 3 * len(genes):
            msg = f"`ax` must hold 3 axes per gene ({3 * len(genes)} for {len(genes)} genes), got {axes.size}."
            raise ValueError(msg)
        axes = axes.reshape(len(genes), 3)
        fig = axes[0, 0].figure
    for row, gene in enumerate(genes):
        measured = st_map.values[:, row]
        vmin, vmax = float(min(measured.min(), mean[row][mask].min())), float(max(measured.max(), mean[row].max()))
        panels = [
            ("measured spots", None),
            ("super-resolved", np.ma.masked_where(~mask, mean[row])),
            ("uncertainty (sd)", np.ma.masked_where(~mask, std[row])),
        ]
        for col, (title, data) in enumerate(panels):
            ax = axes[row, col]
            ax.imshow(background)
            if data is None:
                # Circles in data units, so spots are drawn at their true size over the H&E.
                circles = PatchCollection(
                    [Circle(xy, r) for xy, r in zip(st_map.centres * scalef, st_map.radius * scalef, strict=True)],
                    cmap=cmap,
                )
                circles.set_array(measured)
                circles.set_clim(vmin, vmax)
                image = ax.add_collection(circles)
            else:
                # The sd starts at 0, so a flat (certain) map reads as certain, not as mid-range.
                limits = (
                    {"vmin": vmin, "vmax": vmax} if col == 1 else {"vmin": 0.0, "vmax": max(float(data.max()), 1e-6)}
                )
                image = ax.imshow(data, extent=extent, cmap=cmap if col == 1 else "magma", **limits)
            fig.colorbar(image, ax=ax, fraction=0.046, pad=0.02)
            ax.set_xlim(extent[0], extent[1])
            ax.set_ylim(extent[2], extent[3])
            ax.set_title(f"{gene}: {title}", fontsize=9)
            ax.set_axis_off()
    if ax is None:
        fig.tight_layout()
    return finish(fig, show=show, save=save, dpi=dpi)
