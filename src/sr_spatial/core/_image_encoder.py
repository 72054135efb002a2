"""What the model needs from a histology encoder: the seam other encoders plug into."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
from torch import nn

__all__ = ["Encoder"]


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
