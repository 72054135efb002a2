"""Histology encoder: H&E pixels to an expression estimate per pixel, learned from the spots themselves."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sr_spatial._logging import logger, progress_bar
from sr_spatial.core._groups import group_means
from sr_spatial.core._image_encoder import Encoder

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = [
    "HISTOLOGY_INPUTS",
    "HistologyEncoder",
    "cell_channels",
    "histology_inputs",
    "pretrain_encoder",
    "spot_crops",
    "spot_means",
    "square_overlap",
    "window",
]


def spot_means(maps: np.ndarray, spot_pixels: np.ndarray, n_spots: int, px_per_bin: int) -> np.ndarray:
    """Log-normalised ``maps`` (per bin) averaged over each spot's pixels in linear space, ``(n_spots, n_genes)``."""
    rows, cols = np.nonzero(spot_pixels >= 0)
    spots = spot_pixels[rows, cols]
    rows //= px_per_bin
    cols //= px_per_bin
    means = np.empty((n_spots, len(maps)))
    # One gene at a time: every spot pixel of every gene in float64 at once is the size of the slide times genes.
    for gene, values in enumerate(maps):
        means[:, gene] = group_means(np.expm1(values.astype(np.float64))[rows, cols], spots, n_spots)[0]
    return np.log1p(means)


#: Input channels: RGB plus haematoxylin and eosin from colour deconvolution.
HISTOLOGY_INPUTS = 5
#: Image rows deconvolved at once by :func:`histology_inputs`.
HED_ROWS = 256
#: Dilations of the encoder's 3 x 3 convolutions; their sum is its receptive field's radius in pixels.
DILATIONS = (1, 1, 2, 4)


def histology_inputs(rgb: np.ndarray) -> np.ndarray:
    """RGB in ``[0, 1]`` ``(3, h, w)`` to the encoder's inputs ``(5, h, w)``: RGB, haematoxylin, eosin.

    Colour deconvolution (:func:`skimage.color.rgb2hed`) separates nuclear (H) from cytoplasm/stroma (E)
    staining, an explicit cell-level cue that the small encoder would otherwise have to learn from few spots.
    """
    from skimage.color import rgb2hed

    out = np.empty((HISTOLOGY_INPUTS, *rgb.shape[1:]), dtype=np.float32)
    out[:3] = rgb
    # Rows at a time: the deconvolution works per pixel in float64, several whole-slide copies at once otherwise.
    for start in range(0, rgb.shape[1], HED_ROWS):
        rows = slice(start, start + HED_ROWS)
        hed = rgb2hed(np.moveaxis(np.clip(rgb[:, rows], 1e-3, 1.0), 0, -1))
        out[3:, rows] = np.moveaxis(hed[..., :2], -1, 0)
    return out


class HistologyEncoder(Encoder):
    """A fully convolutional net from H&E pixels to the log expression rate of every gene at every pixel.

    A spot measures the average of the expression under it, so the encoder is trained to make the average of
    its per-pixel rates over each spot's disk match that spot (:func:`pretrain_encoder`). Averaging is linear,
    so the same rates averaged over any smaller bin estimate that bin: the per-bin estimate is valid at every
    resolution. No normalisation layer is used, so a small crop and a whole slide are processed alike. Its
    inputs are RGB, haematoxylin and eosin (:func:`histology_inputs`) at the scene's pixel size.
    """

    learns_from_spots = True
    context_px = sum(DILATIONS)
    prepare = staticmethod(histology_inputs)

    def __init__(self, *, width: int, n_genes: int):
        super().__init__()
        self.in_channels = HISTOLOGY_INPUTS
        self.out_channels = n_genes
        self.cell_channels = cell_channels(width)
        layers = []
        channels = HISTOLOGY_INPUTS
        for dilation in DILATIONS:
            layers += [nn.Conv2d(channels, width, 3, padding=dilation, dilation=dilation), nn.SiLU()]
            channels = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Conv2d(width, n_genes, 1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Standardised inputs ``(b, 5, h, w)`` to log rates ``(b, n_genes, h, w)`` (normalised-count units)."""
        return self.head(self.body(image))

    def bin_maps(
        self, image: torch.Tensor, px_per_bin: int, *, cells: bool = False, trim: tuple[int, int] = (0, 0)
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Expression per bin and, if ``cells``, cell-level features on a grid twice as fine as the bins.

        The cell-level features of each quarter-bin are the mean and standard deviation of each input channel
        over its pixels (nuclear density and texture from the haematoxylin channel) and the mean of the
        encoder's hidden features: ``(b, cell_channels(width), 2 * h, 2 * w)``. ``trim`` (top, bottom) pixel
        rows are context only, dropped after the convolutions (see :meth:`Encoder.bin_maps`).
        """
        features = self.body(image)
        top, bottom = trim
        if top or bottom:
            kept = slice(top, image.shape[-2] - bottom)
            features, image = features[..., kept, :], image[..., kept, :]
        # In place: one rate per gene and pixel is the largest array here, and each copy of it costs as much.
        rates = self.head(features).clamp_(max=20.0).exp_()
        expression = torch.log1p(F.avg_pool2d(rates, px_per_bin))
        del rates
        if not cells:
            return expression, None
        quarter = px_per_bin // 2
        mean = F.avg_pool2d(image, quarter)
        std = (F.avg_pool2d(image**2, quarter) - mean**2).clamp(min=0.0).sqrt()
        return expression, torch.cat([mean, std, F.avg_pool2d(features, quarter)], dim=1)


def cell_channels(width: int) -> int:
    """Channels of :meth:`HistologyEncoder.bin_maps`' cell-level features for an encoder of ``width``."""
    return 2 * HISTOLOGY_INPUTS + width


def spot_crops(spot_pixels: np.ndarray, n_spots: int, size: int) -> np.ndarray:
    """Top-left ``(row, col)`` of a ``size`` x ``size`` crop centred on each spot's pixels."""
    rows, cols = np.nonzero(spot_pixels >= 0)
    (centre_r, centre_c), _ = group_means(np.stack([rows, cols]).astype(np.float64), spot_pixels[rows, cols], n_spots)
    return np.stack([np.round(centre_r - size / 2), np.round(centre_c - size / 2)], axis=1).astype(int)


def square_overlap(
    top: int, left: int, size: int, height: int, width: int
) -> tuple[tuple[slice, slice], tuple[slice, slice]] | None:
    """Where the ``size`` x ``size`` square at ``(top, left)`` meets an image ``height`` x ``width``.

    ``((rows, cols) of the image, (rows, cols) of the square)``, or ``None`` when they do not meet.
    """
    r0, r1 = max(top, 0), min(top + size, height)
    c0, c1 = max(left, 0), min(left + size, width)
    if r1 <= r0 or c1 <= c0:
        return None
    return (slice(r0, r1), slice(c0, c1)), (slice(r0 - top, r1 - top), slice(c0 - left, c1 - left))


def window(array, top: int, left: int, size: int, fill=0):
    """The ``size`` x ``size`` square of ``array`` ``(..., h, w)`` at ``(top, left)``, ``fill`` outside it.

    A new array (or tensor), as a crop of ``array`` padded by ``size`` on every side would give, without the
    padded copy of the whole slide.
    """
    shape = (*array.shape[:-2], size, size)
    if isinstance(array, torch.Tensor):
        out = torch.full(shape, fill, dtype=array.dtype)
    else:
        out = np.full(shape, fill, dtype=array.dtype)
    overlap = square_overlap(top, left, size, *array.shape[-2:])
    if overlap is not None:
        (rows, cols), (in_rows, in_cols) = overlap
        out[..., in_rows, in_cols] = array[..., rows, cols]
    return out


def pretrain_encoder(
    encoder: HistologyEncoder,
    inputs: torch.Tensor | Callable[[int, int, int], torch.Tensor],
    spot_pixels: np.ndarray,
    spot_values: np.ndarray,
    *,
    steps: int,
    batch_size: int,
    learning_rate: float,
    device: torch.device,
    seed: int,
    spots: np.ndarray | None = None,
    show_progress_bar: bool = True,
) -> list[float]:
    """Fit the encoder so the mean rate over each spot's disk reproduces the spot (log-normalised, MSE).

    This gives the encoder one label per spot at the resolution it will be used at, instead of learning
    only through the diffusion loss.

    Parameters
    ----------
    encoder
        The encoder, trained in place.
    inputs
        Standardised histology inputs ``(5, h, w)`` on the CPU, or a function ``(top, left, size)`` to the
        ``(5, size, size)`` inputs of that square of the slide, zeros outside it: then only the spots' crops
        are ever prepared, and the whole slide's inputs need not be held.
    spot_pixels
        Spot index of each pixel of ``inputs``, ``-1`` outside every spot, ``(h, w)``.
    spot_values
        Log-normalised spot expression ``(n_spots, n_genes)``.
    spots
        Indices of the spots to learn from; default all.

    Returns
    -------
    Loss per step.
    """
    rng = np.random.default_rng(seed)
    n_spots = len(spot_values)
    present = np.flatnonzero(np.bincount(spot_pixels[spot_pixels >= 0], minlength=n_spots) > 0)
    if spots is not None:
        present = np.intersect1d(present, spots)
    rows, cols = np.nonzero(spot_pixels >= 0)
    extent = int(max(np.ptp(rows), np.ptp(cols)) + 1) if len(rows) else 8
    # One crop holds a whole spot and some context: the widest spot in pixels, plus the receptive field.
    radius_px = int(np.sqrt(np.bincount(spot_pixels[spot_pixels >= 0]).max() / np.pi)) + 1
    size = min(2 * radius_px + 16, extent + 16)
    corners = spot_crops(spot_pixels, n_spots, size)
    crop = inputs if callable(inputs) else lambda top, left, size: window(inputs, top, left, size)
    values = torch.from_numpy(spot_values.astype(np.float32))
    with torch.no_grad():
        # From the spots it learns from only: a held-out spot must not reach the encoder even through its mean.
        learned = values[torch.from_numpy(present)] if len(present) else values
        encoder.head.bias.copy_(torch.log(torch.expm1(learned).mean(dim=0).clamp(min=1e-3)))
    encoder.to(device).train()
    optimiser = torch.optim.AdamW(encoder.parameters(), lr=learning_rate, weight_decay=1e-4)
    losses = []
    logger.info("Fitting the histology encoder: %d steps.", steps)
    bar = progress_bar(range(steps), desc="Histology encoder", unit="step", disable=not show_progress_bar)
    for _ in bar:
        chosen = rng.choice(present, size=min(batch_size, len(present)), replace=False)
        crops, masks = [], []
        for spot in chosen:
            r, c = (int(x) for x in corners[spot])
            crops.append(crop(r, c, size))
            masks.append(torch.from_numpy(window(spot_pixels, r, c, size, fill=-1) == spot))
        turns = int(rng.integers(0, 4))
        crops = torch.rot90(torch.stack(crops), turns, dims=(-2, -1)).to(device)
        masks = torch.rot90(torch.stack(masks), turns, dims=(-2, -1)).to(device).float()[:, None]
        rates = torch.exp(encoder(crops).clamp(max=20.0))
        mean_rate = (rates * masks).sum(dim=(-2, -1)) / masks.sum(dim=(-2, -1)).clamp(min=1.0)
        loss = F.mse_loss(torch.log1p(mean_rate), values[chosen].to(device))
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
        if len(losses) % 20 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    bar.close()
    encoder.eval()
    return losses
