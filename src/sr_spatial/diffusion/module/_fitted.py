"""The quantities fitted beside the weights: statistics, the base map's blend, the residual's scale and weight."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from sr_spatial.core._consistency import project_to_spots
from sr_spatial.core._image_encoder import input_statistics
from sr_spatial.core._pixel_encoder import spot_means
from sr_spatial.core._uncertainty import MIN_SD, conformal_scale

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sr_spatial.core._scene import Scene
    from sr_spatial.diffusion.module._network import DiffSTNetwork

__all__ = [
    "CALIBRATION_DRAWS",
    "MIN_HELD_OUT_BINS",
    "fit_blend",
    "fit_cell_statistics",
    "fit_residual_scale",
    "fit_residual_weight",
    "fit_spread_scale",
    "fit_statistics",
    "held_out_bins",
    "nonnegative_ridge",
    "split_spots",
]

#: Held-out training bins needed to fit the residual's weight; on smaller slides it stays 1.
MIN_HELD_OUT_BINS = 20
#: Draws averaged when fitting the residual's weight: :func:`sr_spatial.tl.superresolve`'s default ``n_samples``.
CALIBRATION_DRAWS = 8


def nonnegative_ridge(design: np.ndarray, target: np.ndarray, *, alpha: float = 1e-2) -> np.ndarray:
    """Least squares with a light ridge on all but the last (offset) column, and non-negative weights.

    A negative weight on the measurement or on the histology has no physical reading; such a column is
    dropped and the rest refitted.
    """
    keep = list(range(design.shape[1]))
    while True:
        sub = design[:, keep]
        penalty = np.diag([alpha * len(target)] * (len(keep) - 1) + [0.0])
        weights = np.linalg.solve(sub.T @ sub + penalty, sub.T @ target)
        negative = [k for k, w in zip(keep[:-1], weights[:-1], strict=True) if w < 0]
        if not negative:
            out = np.zeros(design.shape[1])
            out[keep] = weights
            return out
        keep.remove(min(negative, key=lambda k: weights[keep.index(k)]))


def split_spots(n_spots: int, seed: int, *, held_out: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Spots the encoder learns from, and the held-out spots the blend weights are fitted on.

    Fitting the blend on spots the encoder has seen would overrate the histology, which can fit them by heart.
    Slides with fewer than 20 spots are too small to hold any out; all spots then serve both.
    """
    order = np.random.default_rng(seed).permutation(n_spots)
    n_held = int(round(held_out * n_spots)) if n_spots >= 20 else 0
    if n_held == 0:
        return order, order
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def held_out_bins(shape: tuple[int, int], seed: int, *, block: int = 4, held_out: float = 0.2) -> np.ndarray:
    """Bins whose target the denoiser never learns from: a random ``held_out`` share of ``block``-wide squares.

    Whole squares rather than single bins, so a held-out bin's neighbours are mostly held out too and the
    denoiser cannot fill it in from targets it has learned next to it.
    """
    rows, cols = -(-shape[0] // block), -(-shape[1] // block)
    squares = np.random.default_rng([int(seed), 1]).random((rows, cols)) < held_out
    return np.kron(squares, np.ones((block, block), dtype=bool))[: shape[0], : shape[1]]


def fit_statistics(network: DiffSTNetwork, scenes: Sequence[Scene], reference: Scene) -> None:
    """Per-gene mean and spread of the targets, and per-channel ones of the reference's encoder inputs."""
    values = np.concatenate([s.target[:, s.mask] for s in scenes], axis=1)
    network.gene_mean.copy_(torch.from_numpy(values.mean(axis=1)))
    network.gene_std.copy_(torch.from_numpy(np.maximum(values.std(axis=1), 1e-3)))
    mean, std = input_statistics(reference.histology, prepare=network.encoder.prepare)
    network.histology_mean.copy_(torch.from_numpy(mean.astype(np.float32)))
    network.histology_std.copy_(torch.from_numpy(np.maximum(std, 1e-3).astype(np.float32)))


def fit_cell_statistics(network: DiffSTNetwork, cells: np.ndarray) -> None:
    """Per-channel mean and spread of the reference's cell-level histology features ``(channels, h, w)``."""
    flat = cells.reshape(len(cells), -1)
    network.cell_mean.copy_(torch.from_numpy(flat.mean(axis=1)))
    network.cell_std.copy_(torch.from_numpy(np.maximum(flat.std(axis=1), 1e-3)))


def fit_blend(network: DiffSTNetwork, reference: Scene, held_out: np.ndarray, histology: np.ndarray) -> None:
    """Per gene, how to weigh the measurement around a place against the H&E at it.

    On spots the encoder never saw, each spot's value is regressed (least squares) on its neighbours' mean
    (``reference.spot_context``) and on the histology estimate over its disk. Genes the H&E predicts get
    histology weight; genes only the measurement knows (e.g. smooth gradients) get measurement weight.
    ``histology`` is the reference's per-bin histology estimate.
    """
    n_genes = network.n_genes
    at_spots = spot_means(histology, reference.spot_pixels, len(reference.spot_values), reference.px_per_bin)
    blend = np.zeros((n_genes, 3))
    for gene in range(n_genes):
        design = np.column_stack(
            [reference.spot_context[held_out, gene], at_spots[held_out, gene], np.ones(len(held_out))]
        )
        blend[gene] = nonnegative_ridge(design, reference.spot_values[held_out, gene])
    network.blend.copy_(torch.from_numpy(blend))


def fit_residual_scale(network: DiffSTNetwork, residuals: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> None:
    """Per gene, the spread of the residual the denoiser generates, in units of the gene's spread."""
    std = network.gene_std.cpu().numpy()
    pooled = np.concatenate([r[:, m] for r, m in zip(residuals, masks, strict=True)], axis=1) / std[:, None]
    # A floor keeps genes the base already explains from being blown up into noise.
    network.residual_scale.copy_(torch.from_numpy(np.maximum(pooled.std(axis=1), 0.05)))


def fit_residual_weight(
    network: DiffSTNetwork, held_out: Sequence[tuple[Scene, np.ndarray, np.ndarray, np.ndarray]]
) -> None:
    """Per gene, the share of the draws' mean residual that predicts the target on held-out bins.

    The posterior mean is ``base + weight * (mean of the draws - base)``: where the generated residual is
    mostly noise, or does not carry over to bins the denoiser never learned, averaging a few draws leaves
    most of that noise in, and the least-squares weight (clipped to ``[0, 1]``) shrinks it toward the base.
    ``held_out`` holds, per training scene with held-out bins, ``(scene, base, bins, draws)``: its base map,
    the held-out bins and the :data:`CALIBRATION_DRAWS` draws to average, the number
    :func:`sr_spatial.tl.superresolve` averages by default. Without held-out bins (tiny slides) the weight
    stays 1.
    """
    numerator = np.zeros(network.n_genes)
    denominator = np.zeros(network.n_genes)
    for scene, base, bins, draws in held_out:
        if not bins.any():
            continue
        generated = (draws.mean(axis=0) - base)[:, bins]
        wanted = (scene.target - base)[:, bins]
        numerator += (generated * wanted).sum(axis=1)
        denominator += (generated**2).sum(axis=1)
    if not denominator.any():
        return
    weight = np.clip(numerator / np.maximum(denominator, 1e-12), 0.0, 1.0)
    network.residual_weight.copy_(torch.from_numpy(weight.astype(np.float32)))


def fit_spread_scale(
    network: DiffSTNetwork, held_out: Sequence[tuple[Scene, np.ndarray, np.ndarray, np.ndarray]]
) -> None:
    """Per gene, the factor on the draws' spread that makes it a calibrated standard deviation.

    ``held_out`` is as for :func:`fit_residual_weight`. On those bins, as
    :func:`sr_spatial.tl.superresolve` reports them: the draws and the posterior mean are projected onto the
    scene's measurements (each bin's ``owner``), the spread is the projected draws' standard deviation, and
    :func:`~sr_spatial.core._uncertainty.conformal_scale` brings the central 90 % interval to 90 % coverage of
    the target there. (The spread of a few draws alone covered 81 % on the demo.) The held-out errors' mean square
    over the calibrated spread's is kept as ``network.spread_error_ratio``, with which
    :func:`~sr_spatial.core._uncertainty.finer_spread_factor` carries the spread to the output's finer bins.
    Without held-out bins (tiny slides) the factor and the ratio stay 1. Call after :func:`fit_residual_weight`.
    """
    weight = network.residual_weight.cpu().numpy()[:, None, None]
    errors, spreads = [], []
    for scene, base, bins, draws in held_out:
        if not bins.any() or scene.owner is None:
            continue
        footprint = np.where(scene.mask, scene.owner, -1)
        measured = np.zeros((int(scene.owner.max()) + 1, network.n_genes), dtype=np.float32)
        measured[scene.owner[scene.mask]] = scene.nearest[:, scene.mask].T
        mean = project_to_spots(base + weight * (draws.mean(axis=0) - base), footprint, measured)
        spread = project_to_spots(draws, footprint, measured).std(axis=0)
        errors.append((scene.target - mean)[:, bins].T)
        spreads.append(spread[:, bins].T)
    if not errors:
        return
    error, spread = np.concatenate(errors), np.concatenate(spreads)
    scale = np.ones(network.n_genes, dtype=np.float64)
    error_ratio = np.ones(network.n_genes, dtype=np.float64)
    for gene in range(network.n_genes):
        # Bins drawn identically (a spot with zero counts) are reported at the floor whatever the factor.
        drawn = spread[:, gene] > MIN_SD * 1e-3
        if drawn.sum() >= 10:
            scale[gene] = conformal_scale(error[drawn, gene : gene + 1], spread[drawn, gene : gene + 1])[0]
            calibrated = np.mean((scale[gene] * spread[drawn, gene]) ** 2)
            error_ratio[gene] = np.mean(error[drawn, gene] ** 2) / max(calibrated, 1e-12)
    network.spread_scale.copy_(torch.from_numpy(scale.astype(np.float32)))
    network.spread_error_ratio.copy_(torch.from_numpy(error_ratio.astype(np.float32)))
