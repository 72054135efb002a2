"""The layout of the denoiser's condition channels, in one place."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ConditionLayout"]


@dataclass(frozen=True)
class ConditionLayout:
    """The condition's channels, in order, for ``n_genes`` genes: ``4 * n_genes + 1`` in all.

    Per bin, each block standardised per gene: the nearest-spot measurement, the smooth measurement, the
    histology encoder's expression estimate, that estimate minus its mean over the bin's measurement (what
    histology adds within a spot), and last the tissue mask. The denoiser reads ``x_t`` (``n_genes``
    channels) stacked before them, ``5 * n_genes + 1`` channels in all.
    """

    n_genes: int

    @property
    def channels(self) -> int:
        """Channels of the condition."""
        return 4 * self.n_genes + 1

    @property
    def denoiser_channels(self) -> int:
        """Channels the denoiser reads: ``x_t`` and the condition."""
        return self.n_genes + self.channels

    @property
    def measurement(self) -> slice:
        """The nearest-spot and the smooth measurement."""
        return slice(0, 2 * self.n_genes)

    @property
    def histology(self) -> slice:
        """The histology estimate and its detail within each measurement."""
        return slice(2 * self.n_genes, 4 * self.n_genes)

    @property
    def mask(self) -> slice:
        """The tissue mask."""
        return slice(4 * self.n_genes, 4 * self.n_genes + 1)
