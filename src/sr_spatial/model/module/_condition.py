"""The denoiser's condition: its channel layout, and how a scene's measurement and histology fill it."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from sr_spatial._groups import group_means

if TYPE_CHECKING:
    from sr_spatial.model._scene import Scene
    from sr_spatial.model.module._parts import ModelParts

__all__ = ["condition", "histology_maps", "standardised_histology", "within_measurement"]


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

    The condition is laid out by :class:`~sr_spatial.model.module._layout.ConditionLayout`,
    ``(4 * n_genes + 1, h, w)``; the cell-level features ``(cell_channels, 2h, 2w)`` or ``None`` when no module
    reads them. The base blends, per gene, the smooth measurement and the histology estimate with the fitted
    blend weights; the denoiser generates the remaining residual, so an untrained denoiser returns it. ``maps``
    is the scene's :func:`histology_maps` when already computed.
    """
    network = model.network
    mean = network.gene_mean.cpu().numpy()[:, None, None]
    std = network.gene_std.cpu().numpy()[:, None, None]
    blend = network.blend.cpu().numpy()[:, :, None, None]
    mask = scene.mask.astype(np.float32)
    histology, cells = histology_maps(model, scene) if maps is None else maps
    detail = within_measurement(histology, scene.owner, scene.mask)
    standardised = [(m - mean) / std * mask for m in (scene.nearest, scene.smooth, histology)]
    cond = np.concatenate([*standardised, detail / std, mask[None]]).astype(np.float32)
    base = (blend[:, 0] * scene.smooth + blend[:, 1] * histology + blend[:, 2]) * mask
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

    ``cells`` defaults to whether the network reads them.
    """
    if cells is None:
        cells = model.network.needs_cells
    encoder = model.network.encoder.eval().to(model.device)
    inputs = standardised_histology(model, scene)
    k = scene.px_per_bin
    # Rows of bins at a time bound the memory of the full-resolution activations on large slides.
    rows = max(1, 2**21 // max(inputs.shape[-1] * k * model.config.histology_width, 1))
    # The outputs are allocated before the chunks' large temporaries: small results kept between those would
    # pin the freed memory below them in the heap, which then is not given back to the system.
    height, width = scene.shape
    expression = np.empty((encoder.out_channels, height, width), dtype=np.float32)
    features = np.empty((encoder.cell_channels, 2 * height, 2 * width), dtype=np.float32) if cells else None
    for start in range(0, height, rows):
        chunk = inputs[:, start * k : (start + rows) * k][None].to(model.device)
        bins, cell_features = encoder.bin_maps(chunk, k, cells=cells)
        expression[:, start : start + rows] = bins[0].float().cpu().numpy()
        if cells:
            features[:, 2 * start : 2 * (start + rows)] = cell_features[0].float().cpu().numpy()
        del chunk, bins, cell_features
    return expression, features


def standardised_histology(model: ModelParts, scene: Scene) -> torch.Tensor:
    """The encoder's inputs for ``scene``, standardised with the statistics fitted on the reference."""
    prepared = model.network.encoder.prepare(scene.histology)
    if np.may_share_memory(prepared, scene.histology):
        prepared = prepared.copy()  # standardised in place below; the scene's image must stay as it is
    inputs = torch.from_numpy(prepared)
    mean = model.network.histology_mean.cpu()[:, None, None]
    std = model.network.histology_std.cpu()[:, None, None]
    # In place: the inputs are a fresh whole-slide array, and a copy per operation doubles its footprint.
    return inputs.sub_(mean).div_(std)
