"""Hand-crafted, offline morphology features: stain, nuclei and texture statistics at several scales."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from sr_spatial.features._base import HistologyFeatures

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["MorphologyFeatures"]

#: Pixels darker than this (mean RGB) count as tissue rather than glass.
GLASS = 0.85
#: Histogram bins over the haematoxylin range for the slide-wide Otsu threshold.
HISTOGRAM_BINS = 1024
LBP_POINTS = 8


class MorphologyFeatures(HistologyFeatures):
    """Colour deconvolution, nuclei and texture statistics per bin and over wider neighbourhoods of bins.

    Per pixel: haematoxylin and eosin (:func:`skimage.color.rgb2hed`), brightness and saturation with their
    squares (so a bin's mean also carries its variance), tissue fraction, nuclei segmented by thresholding the
    smoothed haematoxylin at a slide-wide Otsu level (:func:`skimage.filters.threshold_otsu`) and labelled
    (nuclear fraction, nucleus count, nucleus area), gradient magnitude, four difference-of-Gaussians bands of
    the haematoxylin (blob sizes), and the uniform local binary pattern histogram
    (:func:`skimage.feature.local_binary_pattern`). Each is averaged over every bin, then over squares of
    ``context`` bins around it, so a bin sees its neighbourhood at several scales. No weights, no network: it
    works offline on any RGB image, fine or coarse.

    Parameters
    ----------
    context
        Side lengths, in bins, of the neighbourhoods averaged besides the bin itself.
    """

    name = "morphology"

    def __init__(self, *, context: tuple[int, ...] = (3, 7)) -> None:
        if any(int(c) < 1 for c in context):
            msg = f"`context` must hold positive bin counts, got {context!r}."
            raise ValueError(msg)
        self.context = tuple(int(c) for c in context)
        self.context_bins = max(self.context, default=1) // 2 + 1
        self._nuclear_level: float | None = None

    def __repr__(self) -> str:
        return f"MorphologyFeatures(context={self.context})"

    @staticmethod
    def _smoothed_h(rgb: np.ndarray) -> np.ndarray:
        from scipy import ndimage
        from skimage.color import rgb2hed

        return ndimage.gaussian_filter(rgb2hed(np.moveaxis(rgb, 0, -1))[..., 0], 1.0)

    def fit(self, bands: Iterable[np.ndarray]) -> MorphologyFeatures:
        """Fix the slide-wide nuclear staining level from an overview of the tissue, read band by band.

        ``bands`` yields RGB crops ``(3, y, x)`` in ``[0, 1]`` that together cover the slide. Otsu's threshold
        is computed on a histogram of the smoothed haematoxylin of tissue pixels accumulated over the bands, so
        memory stays that of one band however large the slide (a whole-slide overview peaked at 0.9 GB on a
        13,000-spot slide).
        """
        from skimage.color import hed_from_rgb
        from skimage.filters import threshold_otsu

        # rgb2hed clips stains at 0; haematoxylin is at most the sum of its positive coefficients.
        edges = np.linspace(0.0, float(np.clip(hed_from_rgb[:, 0], 0.0, None).sum()), HISTOGRAM_BINS + 1)
        tissue_counts = np.zeros(HISTOGRAM_BINS)
        all_counts = np.zeros(HISTOGRAM_BINS)
        for rgb in bands:
            h = self._smoothed_h(rgb)
            tissue = rgb.mean(axis=0) < GLASS
            tissue_counts += np.histogram(h[tissue], bins=edges)[0]
            all_counts += np.histogram(h, bins=edges)[0]
        # Mostly glass: fall back to every pixel.
        counts = tissue_counts if tissue_counts.sum() > 100 else all_counts
        centres = (edges[:-1] + edges[1:]) / 2
        occupied = np.flatnonzero(counts)
        if len(occupied) > 1:
            self._nuclear_level = float(threshold_otsu(hist=(counts, centres)))
        else:
            # A flat stain: nothing counts as nuclear.
            self._nuclear_level = float(edges[-1] + 1.0)
        return self

    def pixel_planes(self, rgb: np.ndarray) -> np.ndarray:
        """Per-pixel feature planes ``(n_planes, y, x)`` of an RGB crop."""
        return np.stack(self._planes(rgb)).astype(np.float32)

    def _planes(self, rgb: np.ndarray) -> list[np.ndarray]:
        """:meth:`pixel_planes` as a list of planes, so each can be averaged per bin without stacking them all."""
        from scipy import ndimage
        from skimage.color import rgb2hed
        from skimage.feature import local_binary_pattern

        image = np.moveaxis(rgb, 0, -1).astype(np.float32)
        hed = rgb2hed(image)
        h, e = hed[..., 0], hed[..., 1]
        grey = image.mean(axis=-1)
        saturation = image.max(axis=-1) - image.min(axis=-1)
        # Each blur of the haematoxylin once: the bands share sigmas (1, 2, 4) and the nuclei use sigma 1, so 5
        # filters instead of 9, the same arrays (most of the features' time is in these filters).
        blurred = {sigma: ndimage.gaussian_filter(h, sigma) for sigma in (0.5, 1, 2, 4, 8)}
        smooth_h = blurred[1]
        level = self._nuclear_level
        if level is None:
            self.fit([rgb])
            level = self._nuclear_level
        nuclear = smooth_h > level
        labels, n = ndimage.label(nuclear)
        centres = np.zeros(grey.shape, dtype=np.float32)
        area = np.zeros(grey.shape, dtype=np.float32)
        if n:
            index = np.arange(1, n + 1)
            sizes = ndimage.sum_labels(nuclear, labels, index)
            area = sizes[labels - 1].astype(np.float32) * nuclear
            com = np.asarray(ndimage.center_of_mass(nuclear, labels, index))
            rows, cols = np.clip(np.round(com).astype(int), 0, np.asarray(grey.shape) - 1).T
            np.add.at(centres, (rows, cols), 1.0)
        gradient = np.hypot(ndimage.sobel(grey, axis=0), ndimage.sobel(grey, axis=1))
        blobs = [np.abs(blurred[s] - blurred[2 * s]) for s in (0.5, 1, 2, 4)]
        del blurred
        lbp = local_binary_pattern(np.round(grey * 255).astype(np.uint8), LBP_POINTS, 1, method="uniform")
        histogram = [(lbp == k).astype(np.float32) for k in range(LBP_POINTS + 2)]
        planes = [h, e, grey, saturation, h * h, e * e, grey * grey, (grey < GLASS).astype(np.float32)]
        planes += [nuclear.astype(np.float32), centres, area, gradient, *blobs, *histogram]
        return planes

    def bin_features(self, rgb: np.ndarray, *, px_per_bin: int) -> np.ndarray:
        """Feature planes averaged per bin and over ``context`` neighbourhoods, ``(n_features, height, width)``."""
        from scipy import ndimage
        from skimage.transform import downscale_local_mean

        # Plane by plane: the same means as over the stacked planes, without a full-resolution copy of all 26 (and
        # its float64 temporaries), which was most of a tile's memory and a third of its time.
        planes = self._planes(rgb)
        per_bin = np.stack(
            [downscale_local_mean(plane.astype(np.float32, copy=False), (px_per_bin, px_per_bin)) for plane in planes]
        ).astype(np.float32)
        del planes
        scales = [per_bin]
        for side in self.context:
            if side > 1:
                scales.append(ndimage.uniform_filter(per_bin, size=(1, side, side), mode="nearest"))
        return np.concatenate(scales).astype(np.float32)
