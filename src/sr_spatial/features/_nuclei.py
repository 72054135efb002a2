"""Stain, texture and segmented nuclei read in windows centred on each bin: features that carry between slides."""

from __future__ import annotations

import numpy as np

from sr_spatial.features._morphology import LBP_POINTS, MorphologyFeatures

__all__ = ["NucleiFeatures"]

#: Segmented objects smaller than this many pixels are stain specks, not nuclei.
MIN_NUCLEUS_PX = 4


class NucleiFeatures(MorphologyFeatures):
    """Per-window stain, texture and nucleus statistics around every bin's centre.

    Per pixel: haematoxylin, eosin and the residual stain (:func:`skimage.color.rgb2hed`) and the three colours,
    with their squares; the uniform local binary pattern (:func:`skimage.feature.local_binary_pattern`); and the
    nuclei, segmented by thresholding the smoothed haematoxylin at the slide-wide Otsu level
    (:meth:`MorphologyFeatures.fit`) and measured one by one (:func:`skimage.measure.regionprops_table`: area,
    eccentricity, solidity, mean haematoxylin), each placed at its centroid. Over square windows centred on the
    bin, ``windows`` bins wide (a window narrower than a bin is the tissue a spot at its centre measures, a wider
    one the bin's surroundings), each window gives the stains' and colours' means and standard deviations, the
    texture histogram, the nuclear fraction, and the nuclei's density, mean and spread of area, mean eccentricity,
    solidity and staining: what a cell mix looks like, whatever the slide's overall stain (features are
    standardised per slide where a model learned on other slides is applied).

    Parameters
    ----------
    windows
        Window widths, in bins.
    """

    name = "nuclei"
    #: The nuclear threshold is set on pixels as sharp as those it segments.
    levels_at_read_resolution = True

    def __init__(self, *, windows: tuple[float, ...] = (0.6, 1.0, 1.6)) -> None:
        if not windows or any(float(w) <= 0 for w in windows):
            msg = f"`windows` must hold positive widths in bins, got {windows!r}."
            raise ValueError(msg)
        super().__init__(context=(1,))
        self.windows = tuple(float(w) for w in windows)
        self.context_bins = int(np.ceil(max(self.windows) / 2)) + 1

    def __repr__(self) -> str:
        return f"NucleiFeatures(windows={self.windows})"

    def px_per_bin(self, bin_size_px: float) -> int:
        """As finely as the image allows up to 64 pixels per bin: nuclei are measured one by one."""
        finest = 2 ** int(np.floor(np.log2(max(bin_size_px, 1.0))))
        return int(min(max(finest, 4), 64))

    def pixel_planes(self, rgb: np.ndarray) -> np.ndarray:
        """Per-pixel planes ``(29, y, x)``: stains and colours with squares, texture, nuclei and nucleus measures."""
        from skimage.color import rgb2hed
        from skimage.feature import local_binary_pattern
        from skimage.measure import label, regionprops_table

        image = np.moveaxis(rgb, 0, -1).astype(np.float32)
        hed = rgb2hed(image)
        if self._nuclear_level is None:
            self.fit([rgb])
        nuclear = self._smoothed_h(rgb) > self._nuclear_level
        grey = np.round(image.mean(axis=-1) * 255).astype(np.uint8)
        lbp = local_binary_pattern(grey, LBP_POINTS, 1, method="uniform").astype(int)
        planes = []
        for channel in (*np.moveaxis(hed, -1, 0), *np.moveaxis(image, -1, 0)):
            planes += [channel, channel * channel]
        planes += [(lbp == k).astype(np.float32) for k in range(LBP_POINTS + 2)]
        planes.append(nuclear.astype(np.float32))
        props = regionprops_table(
            label(nuclear),
            intensity_image=hed[..., 0],
            properties=("centroid", "area", "eccentricity", "solidity", "intensity_mean"),
        )
        nuclei = props["area"] >= MIN_NUCLEUS_PX
        rows = props["centroid-0"][nuclei].astype(int)
        cols = props["centroid-1"][nuclei].astype(int)
        area = props["area"][nuclei].astype(np.float64)
        for weight in (np.ones_like(area), area, area * area, props["eccentricity"][nuclei],
                       props["solidity"][nuclei], props["intensity_mean"][nuclei]):  # fmt: skip
            plane = np.zeros(nuclear.shape, dtype=np.float64)
            np.add.at(plane, (rows, cols), weight)
            planes.append(plane)
        return np.stack(planes).astype(np.float32)

    def bin_features(self, rgb: np.ndarray, *, px_per_bin: int) -> np.ndarray:
        """The window statistics around every bin's centre, ``(29 * len(windows), height, width)``."""
        height, width = rgb.shape[1] // px_per_bin, rgb.shape[2] // px_per_bin
        rows = np.repeat(np.arange(height) * px_per_bin + px_per_bin // 2, width)
        cols = np.tile(np.arange(width) * px_per_bin + px_per_bin // 2, height)
        return self.point_features(rgb, rows, cols, px_per_bin=px_per_bin).reshape(-1, height, width)

    def point_features(self, rgb: np.ndarray, rows: np.ndarray, cols: np.ndarray, *, px_per_bin: int) -> np.ndarray:
        """The window statistics around given pixels of ``rgb`` (a unit's exact centre), ``(n_features, n_points)``."""
        from scipy import ndimage

        planes = self.pixel_planes(rgb)
        rows = np.clip(np.asarray(rows, dtype=int), 0, planes.shape[1] - 1)
        cols = np.clip(np.asarray(cols, dtype=int), 0, planes.shape[2] - 1)
        per_window = []
        for window in self.windows:
            size = max(1, int(round(window * px_per_bin)))
            mean = ndimage.uniform_filter(planes, size=(1, size, size), mode="nearest")[:, rows, cols]
            stats = []
            for c in range(6):  # six channels, each with its square: mean and standard deviation
                m, m2 = mean[2 * c], mean[2 * c + 1]
                stats += [m, np.sqrt(np.maximum(m2 - m * m, 0.0))]
            stats += list(mean[12 : 12 + LBP_POINTS + 3])  # texture histogram (10 bins) and nuclear fraction
            count, area, area2, eccentricity, solidity, intensity = mean[23:29]
            per_nucleus = np.maximum(count, 1e-6)
            mean_area = area / per_nucleus
            stats += [
                count,
                mean_area,
                np.sqrt(np.maximum(area2 / per_nucleus - mean_area**2, 0.0)),
                eccentricity / per_nucleus,
                solidity / per_nucleus,
                intensity / per_nucleus,
            ]
            per_window.append(np.stack(stats))
        return np.concatenate(per_window).astype(np.float32)
