"""The model's input contract: plain arrays, no SpatialData."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Scene"]


@dataclass(frozen=True)
class Scene:
    """One slide region as the model sees it.

    Attributes
    ----------
    nearest
        Low-resolution measurement, each bin its nearest spot's log-normalised value, ``(n_genes, height, width)``.
    smooth
        The same measurement interpolated smoothly (cubic), ``(n_genes, height, width)``.
    mask
        Bins in the tissue, ``(height, width)``.
    histology
        RGB H&E in ``[0, 1]`` at ``px_per_bin`` pixels per bin, ``(3, height * px_per_bin, width * px_per_bin)``.
    px_per_bin
        H&E pixels per bin along each axis.
    target
        The expression to learn, ``(n_genes, height, width)``; only for training.
    spot_pixels
        Index of the spot whose disk holds each histology pixel, ``-1`` outside every spot,
        ``(height * px_per_bin, width * px_per_bin)``; with ``spot_values``, the labels the histology encoder
        is fitted to.
    spot_values
        Log-normalised expression of the spots, ``(n_spots, n_genes)``.
    spot_context
        Each spot's log-normalised expression as its neighbours predict it (mean of the adjacent spots),
        ``(n_spots, n_genes)``: how much the measurement around a place tells about it.
    owner
        Index of the measurement (spot or pseudo-spot) nearest to each bin, ``(height, width)``: the bins whose
        average that measurement fixes. Lets the model see what histology adds *within* a measurement.
    base
        A deterministic map the denoiser generates the residual around, ``(n_genes, height, width)``; ``None``:
        the model's own blend of the measurement and its histology estimate.
    """

    nearest: np.ndarray
    smooth: np.ndarray
    mask: np.ndarray
    histology: np.ndarray
    px_per_bin: int
    target: np.ndarray | None = None
    spot_pixels: np.ndarray | None = None
    spot_values: np.ndarray | None = None
    spot_context: np.ndarray | None = None
    owner: np.ndarray | None = None
    base: np.ndarray | None = None

    def __post_init__(self):
        n_genes, height, width = self.nearest.shape
        expected = {
            "smooth": (n_genes, height, width),
            "mask": (height, width),
            "histology": (3, height * self.px_per_bin, width * self.px_per_bin),
        }
        if self.target is not None:
            expected["target"] = (n_genes, height, width)
        if self.owner is not None:
            expected["owner"] = (height, width)
        if self.base is not None:
            expected["base"] = (n_genes, height, width)
        if self.spot_pixels is not None:
            expected["spot_pixels"] = expected["histology"][1:]
        for name, shape in expected.items():
            if getattr(self, name).shape != shape:
                msg = f"Scene.{name} has shape {getattr(self, name).shape}, expected {shape}."
                raise ValueError(msg)

    @property
    def shape(self) -> tuple[int, int]:
        return self.mask.shape
