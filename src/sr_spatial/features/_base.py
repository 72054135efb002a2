"""The seam every histology feature extractor implements: an H&E region in, one feature vector per bin out."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

__all__ = ["HistologyFeatures"]


class HistologyFeatures(ABC):
    """Histology features per bin of a regular grid.

    An implementation receives the H&E under a grid of bins, resampled to :meth:`px_per_bin` pixels per bin
    (RGB float in ``[0, 1]``, white outside the image), and returns one feature vector per bin. Features of a
    spot are the mean of its bins' features, so a linear model fitted on spots applies unchanged to bins.

    Subclasses set :attr:`name` (recorded in ``uns``) and implement :meth:`bin_features`; those with a fixed
    physical pixel size (pretrained encoders) override :meth:`px_per_bin`.
    """

    #: Short name recorded with the results.
    name: str = "features"
    #: Bins of context on each side a block of bins needs for its features to equal the whole grid's.
    context_bins: int = 0
    #: Whether the H&E is read at a fixed physical pixel size (pretrained encoders): then slides of different
    #: resolutions already give comparable features, and a cap on the pixels per bin does not apply.
    fixed_resolution: bool = False
    #: Whether :meth:`fit`'s slide-wide levels are read at the features' own pixels per bin (tiles spread over the
    #: slide) rather than on a coarse overview of it.
    levels_at_read_resolution: bool = False

    def px_per_bin(self, bin_size_px: float) -> int:
        """Pixels per bin to read the H&E at, given a bin's size in full-resolution image pixels.

        The default reads as finely as the image allows up to 32 pixels per bin (at least 4), so nuclei stay
        resolved on fine images and coarse images are not inflated.
        """
        finest = 2 ** int(np.floor(np.log2(max(bin_size_px, 1.0))))
        return int(min(max(finest, 4), 32))

    @abstractmethod
    def bin_features(self, rgb: np.ndarray, *, px_per_bin: int) -> np.ndarray:
        """Features of every bin of ``rgb``.

        Parameters
        ----------
        rgb
            ``(3, height * px_per_bin, width * px_per_bin)`` float RGB in ``[0, 1]``.
        px_per_bin
            Pixels per bin side.

        Returns
        -------
        ``(n_features, height, width)`` float32.
        """

    def reduce(self, features: np.ndarray) -> np.ndarray:
        """A transform fitted on all bins' features ``(n_features, n_bins)`` at once (e.g. PCA); default none."""
        return features

    def cache_key(self) -> str:
        """What identifies this extractor's output for the same image and grid (its settings)."""
        return repr(self)

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
