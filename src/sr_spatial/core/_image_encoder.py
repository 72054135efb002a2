"""What the model needs from a histology encoder: the seam other encoders plug into, and how a slide is run through it.

A whole slide is run in rows of bins (:func:`row_chunks`) and its inputs' statistics streamed in rows
(:func:`input_statistics`), for the diffusion model's encoder and the histology method's learned encoders alike.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["CHUNK_ACTIVATIONS", "STATISTICS_ROWS", "Encoder", "input_statistics", "row_chunks"]


class Encoder(nn.Module):
    """A histology encoder: H&E pixels in, an expression estimate (or features) per location out.

    Subclasses set the class attributes and implement :meth:`prepare` and :meth:`bin_maps`; register them in
    :data:`sr_spatial.diffusion.nn._registry.ENCODERS` so a :class:`~sr_spatial.model.ModelConfig` can name them.

    Attributes
    ----------
    um_per_px
        Micrometres per input pixel the encoder was made for; ``None`` when it reads the scene's pixels at
        whatever size they are (it learns at that size from the slide's own spots).
    in_channels
        Channels of :meth:`prepare`'s output, the encoder's input.
    out_channels
        Channels per location of :meth:`bin_maps`' first output.
    estimates_expression
        Whether that output is a log-normalised estimate of each gene (``out_channels == n_genes``) rather than
        features for a head to read.
    learns_from_spots
        Whether the encoder is fitted to the slide's spots before the denoiser trains
        (:func:`~sr_spatial.core._pixel_encoder.pretrain_encoder`); a frozen pretrained encoder is not.
    cell_channels
        Channels of the cell-level features :meth:`bin_maps` returns on a grid twice as fine as the bins.
    """

    um_per_px: ClassVar[float | None] = None
    estimates_expression: ClassVar[bool] = True
    learns_from_spots: ClassVar[bool] = False
    #: Pixels of context each output pixel reads on every side (the receptive field's radius), so the slide can
    #: be run in row chunks each read with that margin; ``None`` when unknown: the slide is run whole.
    context_px: ClassVar[int | None] = None
    in_channels: int
    out_channels: int
    cell_channels: int

    @staticmethod
    def prepare(rgb: np.ndarray) -> np.ndarray:
        """RGB in ``[0, 1]`` ``(3, h, w)`` to the unstandardised input channels ``(in_channels, h, w)``.

        Each output pixel depends on its own input pixel only, so a region's inputs are the region of the
        slide's inputs (row chunks and crops are prepared on their own).
        """
        raise NotImplementedError

    def bin_maps(
        self, image: torch.Tensor, px_per_bin: int, *, cells: bool = False, trim: tuple[int, int] = (0, 0)
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Standardised inputs ``(b, in_channels, h * px_per_bin, w * px_per_bin)`` to an output per bin.

        ``trim`` is ``(top, bottom)``: pixel rows of ``image`` read as context only, dropped before pooling
        (``h`` counts the rows kept). Returns ``(b, out_channels, h, w)`` and, if ``cells``, the cell-level
        features ``(b, cell_channels, 2 * h, 2 * w)``, else ``None``.
        """
        raise NotImplementedError


#: Hidden activations (pixels times the encoder's width) in one row chunk of :func:`histology_maps`, margins
#: included: 8 MiB per layer in float32; the chunk's per-gene rates are ``n_genes / width`` times that.
CHUNK_ACTIVATIONS = 2**21


def row_chunks(height: int, width: int, *, px_per_bin: int, hidden: int, margin: int | None):
    """Rows of bins to run an encoder over in turn, each read with ``margin`` pixel rows of context.

    Yields ``(start, stop, top, bottom, trim)``: the bin rows ``start:stop`` kept, the pixel rows ``top:bottom``
    read, and ``trim`` (pixel rows of context above and below) for ``Encoder.bin_maps``. A chunk holds about
    :data:`CHUNK_ACTIVATIONS` hidden activations (``hidden`` channels), margins included, and keeps at least four
    margins of rows, so the context read twice costs at most half again. ``margin=None`` (an encoder whose
    receptive field is the whole slide) gives one chunk.
    """
    k = px_per_bin
    if margin is None:
        rows, margin = height, 0
    else:
        pixel_rows = CHUNK_ACTIVATIONS // max(width * k * hidden, 1)
        rows = max(1, (pixel_rows - 2 * margin) // k, -(-4 * margin // k))
    for start in range(0, height, rows):
        stop = min(start + rows, height)
        top, bottom = max(start * k - margin, 0), min(stop * k + margin, height * k)
        yield start, stop, top, bottom, (start * k - top, bottom - stop * k)


#: Image rows prepared at once by :func:`input_statistics`.
STATISTICS_ROWS = 256


def input_statistics(
    image: np.ndarray, *, prepare: Callable[[np.ndarray], np.ndarray] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation of ``prepare(image)`` (or of ``image``), float64, in row chunks.

    ``prepare`` (an encoder's :meth:`~sr_spatial.core._image_encoder.Encoder.prepare`) is applied to each chunk of
    rows on its own. Chunks' means and squared deviations are combined exactly as one pass over the whole image
    would give them (Chan et al.'s pairwise update, in float64), so neither the prepared inputs nor a float64
    copy of them are ever held whole.
    """
    n = 0
    mean = squares = 0.0
    for start in range(0, image.shape[1], STATISTICS_ROWS):
        rows = image[:, start : start + STATISTICS_ROWS]
        chunk = rows if prepare is None else prepare(rows)
        chunk = chunk.reshape(len(chunk), -1).astype(np.float64)
        m = chunk.shape[1]
        chunk_mean = chunk.mean(axis=1)
        chunk -= chunk_mean[:, None]
        chunk_squares = np.einsum("ij,ij->i", chunk, chunk)
        delta = chunk_mean - mean
        mean = mean + delta * (m / (n + m))
        squares = squares + chunk_squares + delta**2 * (n * m / (n + m))
        n += m
    return mean, np.sqrt(squares / max(n, 1))
