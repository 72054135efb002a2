"""What every plotting function does last: save, show, return (as scanpy does)."""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.figure import Figure

T = TypeVar("T")

__all__ = ["finish"]


def finish(fig: Figure, *, show: bool | None, save: str | Path | None, dpi: float, result: T | None = None):
    """Save ``fig`` if asked, then show it (returning ``None``) or return ``result`` (default: the figure).

    ``show=None`` shows unless the figure is saved, so scripts that save do not block on a window.
    """
    import matplotlib.pyplot as plt

    if save is not None:
        fig.savefig(save, dpi=dpi, bbox_inches="tight")
    if show is None:
        show = save is None
    if show:
        plt.show()
        return None
    return fig if result is None else result
