"""The ``"bicubic"`` baseline: cubic (Clough-Tocher) interpolation of the spots."""

from __future__ import annotations

import numpy as np

from sr_spatial.core._method import BlockMethod, Fitted, Method

__all__ = ["BicubicMethod"]


class BicubicBlocks(BlockMethod):
    def describe(self) -> str:
        return "Computing the bicubic maps"

    def maps(self, view, model, *, show_progress_bar):
        return view.smooth, np.zeros_like(view.smooth), None


class BicubicMethod(Method):
    """Cubic interpolation of the spots: smooth, not consistent with the spots, spread 0."""

    name = "bicubic"

    def fit(self, st_map, renderer, call) -> Fitted:
        return Fitted(blocks=BicubicBlocks())
