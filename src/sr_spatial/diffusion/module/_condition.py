"""The denoiser's condition: its channel layout, and how a scene's measurement and histology fill it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from sr_spatial.core._groups import group_means
from sr_spatial.core._image_encoder import row_chunks

if TYPE_CHECKING:
    from collections.abc import Callable

    from sr_spatial.core._scene import Scene
    from sr_spatial.diffusion.module._parts import ModelParts

__all__ = ["condition", "histology_crops", "histology_maps", "standardised_histology", "within_measurement"]


def within_measurement(values: np.ndarray, owner: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """``values`` minus their mean over the bins of the same measurement, 0 outside ``mask``."""
    out = np.zeros_like(values)
    if owner is None or not mask.any():
        return out
    cells = owner[mask]
    in_tissue = values[:, mask]
    cell_means, _ = group_means(in_tissue, cells, cells.max() + 1)
    out[:, mask] = in_tissue - cell_means[:, cells]
    return out


def condition(
    model: ModelParts, scene: Scene, maps: tuple[np.ndarray, np.ndarray | None] | None = None
) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
    """The denoiser's condition, the standardised cell-level histology, and the base map.

    The condition is laid out by :class:`~sr_spatial.diffusion.module._layout.ConditionLayout`,
    ``(4 * n_genes + 1, h, w)``; the cell-level features ``(cell_channels, 2h, 2w)`` or ``None`` when no module
    reads them. The base blends, per gene, the smooth measurement and the histology estimate with the fitted
    blend weights, or is the scene's own ``base`` (the histology predictor's map), which then also takes the
    nearest measurement's place in the condition; the denoiser generates the remaining residual, so an
    untrained denoiser returns the base. ``maps`` is the scene's :func:`histology_maps` when already computed.
    """
    network = model.network
    mean = network.gene_mean.cpu().numpy()[:, None, None]
    std = network.gene_std.cpu().numpy()[:, None, None]
    blend = network.blend.cpu().numpy()[:, :, None, None]
    mask = scene.mask.astype(np.float32)
    histology, cells = histology_maps(model, scene) if maps is None else maps
    detail = within_measurement(histology, scene.owner, scene.mask)
    measured = scene.nearest if scene.base is None else scene.base
    standardised = [(m - mean) / std * mask for m in (measured, scene.smooth, histology)]
    cond = np.concatenate([*standardised, detail / std, mask[None]]).astype(np.float32)
    if scene.base is None:
        base = (blend[:, 0] * scene.smooth + blend[:, 1] * histology + blend[:, 2]) * mask
    else:
        base = scene.base * mask
    if cells is not None:
        cell_mean = network.cell_mean.cpu().numpy()[:, None, None]
        cell_std = network.cell_std.cpu().numpy()[:, None, None]
        cells = torch.from_numpy(((cells - cell_mean) / cell_std).astype(np.float32))
    return torch.from_numpy(cond), cells, base.astype(np.float32)


@torch.no_grad()
def histology_maps(
    model: ModelParts, scene: Scene, *, cells: bool | None = None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-bin expression estimate and (unstandardised) cell-level features of ``scene``'s histology.

    ``cells`` defaults to whether the network reads them. The slide is run in rows of bins, each read with the
    encoder's receptive field of context above and below (:attr:`~sr_spatial.core._image_encoder.Encoder.context_px`)
    and prepared on its own, so the result is the whole slide's and neither the slide's inputs nor its
    activations are ever held whole.
    """
    if cells is None:
        cells = model.network.needs_cells
    encoder = model.network.encoder.eval().to(model.device)
    k = scene.px_per_bin
    height, width = scene.shape
    # The outputs are allocated before the chunks' large temporaries: small results kept between those would
    # pin the freed memory below them in the heap, which then is not given back to the system.
    expression = np.empty((encoder.out_channels, height, width), dtype=np.float32)
    features = np.empty((encoder.cell_channels, 2 * height, 2 * width), dtype=np.float32) if cells else None
    chunks = row_chunks(height, width, px_per_bin=k, hidden=model.config.histology_width, margin=encoder.context_px)
    for start, stop, top, bottom, trim in chunks:
        chunk = standardised_histology(model, scene, rows=slice(top, bottom))[None].to(model.device)
        bins, cell_features = encoder.bin_maps(chunk, k, cells=cells, trim=trim)
        expression[:, start:stop] = bins[0].float().cpu().numpy()
        if cells:
            features[:, 2 * start : 2 * stop] = cell_features[0].float().cpu().numpy()
        del chunk, bins, cell_features
    return expression, features


def standardised_histology(
    model: ModelParts, scene: Scene, *, rows: slice = slice(None), cols: slice = slice(None)
) -> torch.Tensor:
    """The encoder's inputs for ``scene``, standardised with the statistics fitted on the reference.

    ``rows`` and ``cols`` select a region of the histology's pixels; only that region is prepared.
    """
    histology = scene.histology[:, rows, cols]
    prepared = model.network.encoder.prepare(histology)
    if np.may_share_memory(prepared, scene.histology):
        prepared = prepared.copy()  # standardised in place below; the scene's image must stay as it is
    inputs = torch.from_numpy(prepared)
    mean = model.network.histology_mean.cpu()[:, None, None]
    std = model.network.histology_std.cpu()[:, None, None]
    # In place: the inputs are a fresh array, and a copy per operation doubles its footprint.
    return inputs.sub_(mean).div_(std)


def histology_crops(model: ModelParts, scene: Scene) -> Callable[[int, int, int], torch.Tensor]:
    """A function ``(top, left, size)`` to the standardised inputs of that square of ``scene``'s histology.

    Zeros outside the image, as around the whole slide's inputs padded with zeros; for
    :func:`~sr_spatial.core._pixel_encoder.pretrain_encoder`, which reads only the spots' crops.
    """
    from sr_spatial.core._pixel_encoder import square_overlap

    height, width = scene.histology.shape[1:]
    channels = model.network.encoder.in_channels

    def crop(top: int, left: int, size: int) -> torch.Tensor:
        out = torch.zeros((channels, size, size))
        overlap = square_overlap(top, left, size, height, width)
        if overlap is not None:
            (rows, cols), (in_rows, in_cols) = overlap
            out[:, in_rows, in_cols] = standardised_histology(model, scene, rows=rows, cols=cols)
        return out

    return crop
