"""Sampling a scene: positional initial noise, overlapping tiles batched through the denoiser, blended stitching."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.nn import functional as F

from sr_spatial._logging import progress_bar
from sr_spatial.diffusion._precision import autocast
from sr_spatial.diffusion.module._condition import condition

if TYPE_CHECKING:
    from sr_spatial.core._scene import Scene
    from sr_spatial.diffusion.module._parts import ModelParts

__all__ = ["NOISE_CELL", "blend_ramp", "positional_noise", "sample", "tile_starts"]

#: Side, in bins, of the cells the initial noise is drawn in: each cell's noise depends only on the seed, the
#: draw and the cell's position, so any region of a slide (a block, a tile) gets the same noise on its own.
NOISE_CELL = 32


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start of each tile along an axis of ``length`` bins: tiles of ``tile`` overlapping by at least ``overlap``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


def positional_noise(
    seed: int, n_samples: int, n_genes: int, *, top: int, left: int, height: int, width: int
) -> torch.Tensor:
    """Standard normal noise ``(n_samples, n_genes, height, width)`` for the bins at ``top, left`` of a slide."""
    if top < 0 or left < 0:
        msg = f"`offset` must be non-negative (row, column) of the scene in its slide, got ({top}, {left})."
        raise ValueError(msg)
    out = np.empty((n_samples, n_genes, height, width), dtype=np.float32)
    rows = range(top // NOISE_CELL, (top + height - 1) // NOISE_CELL + 1)
    cols = range(left // NOISE_CELL, (left + width - 1) // NOISE_CELL + 1)
    for draw in range(n_samples):
        for ci in rows:
            for cj in cols:
                cell = np.random.default_rng([int(seed), draw, ci, cj]).standard_normal(
                    (n_genes, NOISE_CELL, NOISE_CELL), dtype=np.float32
                )
                y0, x0 = ci * NOISE_CELL, cj * NOISE_CELL
                ys = slice(max(top, y0), min(top + height, y0 + NOISE_CELL))
                xs = slice(max(left, x0), min(left + width, x0 + NOISE_CELL))
                out[draw, :, ys.start - top : ys.stop - top, xs.start - left : xs.stop - left] = cell[
                    :, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0
                ]
    return torch.from_numpy(out)


def blend_ramp(size: int, overlap: int) -> np.ndarray:
    """Weights along a tile: rising linearly over ``overlap`` bins at each edge, so overlaps cross-fade."""
    position = np.arange(size, dtype=np.float32)
    return np.minimum(1.0, np.minimum(position + 1, size - position) / (overlap + 1)).astype(np.float32)


@torch.no_grad()
def sample(
    model: ModelParts,
    scene: Scene,
    *,
    n_samples: int,
    steps: int,
    eta: float,
    seed: int,
    offset: tuple[int, int],
    return_mean: bool,
    show_progress_bar: bool,
    maps: tuple[np.ndarray, np.ndarray | None] | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Draws of ``scene`` and, with ``return_mean``, the posterior mean; see :meth:`~sr_spatial.model.DiffST.sample`.

    ``maps`` is the scene's :func:`~sr_spatial.diffusion.module._condition.histology_maps` when already computed.
    """
    cfg = model.config
    net = model.network.eval().to(model.device)
    denoiser = torch.compile(net) if cfg.compile else net
    height, width = scene.shape
    multiple = 2 ** (len(cfg.channel_mult) - 1)
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    cond, cells, base = condition(model, scene, maps)
    cond = F.pad(cond, (0, pad_w, 0, pad_h))
    if cells is not None:
        cells = F.pad(cells, (0, 2 * pad_w, 0, 2 * pad_h))
    generator = torch.Generator().manual_seed(int(seed))
    # Noise for the whole scene, cropped per tile, so overlapping tiles start from the same noise.
    noise = positional_noise(
        seed, n_samples, len(model.genes), top=offset[0], left=offset[1], height=height + pad_h, width=width + pad_w
    )
    tiles = [
        (top, left)
        for top in tile_starts(height + pad_h, cfg.tile_bins, cfg.tile_overlap)
        for left in tile_starts(width + pad_w, cfg.tile_bins, cfg.tile_overlap)
    ]
    tile_h, tile_w = min(cfg.tile_bins, height + pad_h), min(cfg.tile_bins, width + pad_w)
    ramp = torch.from_numpy(blend_ramp(tile_h, cfg.tile_overlap)[:, None] * blend_ramp(tile_w, cfg.tile_overlap))
    jobs = [(tile, draw) for tile in tiles for draw in range(n_samples)]
    per_batch = max(1, min(len(jobs), 2**22 // max(tile_h * tile_w * cond.shape[0], 1)))
    batches = [jobs[i : i + per_batch] for i in range(0, len(jobs), per_batch)]
    total = torch.zeros(noise.shape)
    weight = torch.zeros(noise.shape[-2:])
    bar = progress_bar(total=steps * len(batches), desc="Sampling", unit="step", disable=not show_progress_bar)
    for batch in batches:

        def crop(a, top, left, factor=1):
            return a[..., factor * top : factor * (top + tile_h), factor * left : factor * (left + tile_w)]

        x = torch.stack([crop(noise[draw], *tile) for tile, draw in batch]).to(model.device)
        cond_batch = torch.stack([crop(cond, *tile) for tile, _ in batch]).to(model.device)
        cells_batch = (
            torch.stack([crop(cells, *tile, factor=2) for tile, _ in batch]).to(model.device)
            if cells is not None
            else None
        )

        def denoise(x_t, t, cond_batch=cond_batch, cells_batch=cells_batch):
            with autocast(model.device, cfg.precision):
                return denoiser(x_t, t, cond_batch, cells_batch)

        x0 = model.schedule.sample(denoise, x, steps=steps, eta=eta, generator=generator, progress=bar.update)
        for ((top, left), draw), drawn in zip(batch, x0.float().cpu(), strict=True):
            crop(total[draw], top, left).add_(drawn * ramp)
            if draw == 0:
                crop(weight, top, left).add_(ramp)
    bar.close()
    # The draws are the largest arrays of a block: drop the noise, and build the maps with one full-size copy
    # (in place, in the order of ``(base + residual * scale * std) * mask``, so the values do not change).
    del noise
    residual = total.div_(weight)[..., :height, :width].numpy()
    std = model.network.gene_std.cpu().numpy()[None, :, None, None]
    scale = model.network.residual_scale.cpu().numpy()[None, :, None, None]
    maps = residual * scale
    del residual, total
    maps *= std
    maps += base[None]
    maps *= scene.mask[None, None]
    maps = maps.astype(np.float32, copy=False)
    if not return_mean:
        return maps
    weight = model.network.residual_weight.cpu().numpy()[:, None, None]
    mean = (base + weight * (maps.mean(axis=0) - base)) * scene.mask
    return maps, mean.astype(np.float32)
