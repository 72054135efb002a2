"""The ``"nearest"`` baseline: each bin takes its nearest spot's measurement."""

from __future__ import annotations

import numpy as np

from sr_spatial.core._method import BlockMethod, Fitted, Method

__all__ = ["NearestMethod"]


class NearestBlocks(BlockMethod):
    def describe(self) -> str:
        return "Computing the nearest maps"

    def maps(self, view, model, *, show_progress_bar):
        return view.nearest, np.zeros_like(view.nearest), None


class NearestMethod(Method):
    """Each bin takes its nearest spot's value: consistent with the spots, no detail, spread 0."""

    name = "nearest"

    def fit(self, st_map, renderer, call) -> Fitted:
        return Fitted(blocks=NearestBlocks())
