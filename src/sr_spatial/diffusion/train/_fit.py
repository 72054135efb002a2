"""Training a model: statistics, histology encoder, blend and residual scale, then the denoiser, then calibration.

Each fit resumes from the checkpoints of an interrupted run with the same settings and data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from sr_spatial.core._pixel_encoder import pretrain_encoder
from sr_spatial.diffusion._io import refuse_non_finite
from sr_spatial.diffusion.module._condition import condition, histology_crops, histology_maps
from sr_spatial.diffusion.module._fitted import (
    CALIBRATION_DRAWS,
    MIN_HELD_OUT_BINS,
    fit_blend,
    fit_cell_statistics,
    fit_residual_scale,
    fit_residual_weight,
    fit_spread_scale,
    fit_statistics,
    held_out_bins,
    split_spots,
)
from sr_spatial.diffusion.module._sampler import sample
from sr_spatial.diffusion.nn._gene_graph import build_gene_graph
from sr_spatial.diffusion.train._checkpoint import (
    ENCODER_CHECKPOINT,
    TRAINING_CHECKPOINT,
    fingerprint,
    load_checkpoint,
    save_checkpoint,
)
from sr_spatial.diffusion.train._loop import SceneTensors, train_network

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from sr_spatial.core._scene import Scene
    from sr_spatial.diffusion.module._parts import ModelParts

__all__ = ["fit_encoder", "train_model"]


def train_model(
    model: ModelParts,
    scenes: Sequence[Scene],
    *,
    reference: Scene,
    steps: int,
    checkpoint_dir: Path | None,
    checkpoint_every: int,
    callback: Callable[[int, dict[str, list[float]]], None] | None,
    show_progress_bar: bool,
) -> None:
    """Train ``model`` in place; the steps and arguments of :meth:`~sr_spatial.model.DiffST.train`."""
    cfg = model.config
    run = fingerprint(scenes, reference, config=cfg, genes=model.genes, seed=model.seed, steps=steps)
    encoder_file = checkpoint_dir / ENCODER_CHECKPOINT if checkpoint_dir is not None else None
    resumed = encoder_file is not None and encoder_file.is_file()
    if resumed:
        state = load_checkpoint(encoder_file, run)
        model.network.load_state_dict(state["network"])
        model.network.encoder.requires_grad_(False)
        encoder_losses = list(state["encoder_losses"])
    else:
        encoder_losses = fit_encoder(model, scenes, reference, show_progress_bar=show_progress_bar)
    # Scenes from shifted poolings of one slide share their H&E: run the encoder once per image.
    maps = {}
    for s in [reference, *scenes]:
        if id(s.histology) not in maps:
            maps[id(s.histology)] = histology_maps(model, s)
    reference_histology, reference_cells = maps[id(reference.histology)]
    if not resumed:
        held_out = split_spots(len(reference.spot_values), model.seed)[1]
        fit_blend(model.network, reference, held_out, reference_histology)
    if reference_cells is not None:
        fit_cell_statistics(model.network, reference_cells)
    inputs = [condition(model, s, maps[id(s.histology)]) for s in scenes]
    residuals = [(s.target - base) * s.mask for s, (*_, base) in zip(scenes, inputs, strict=True)]
    fit_residual_scale(model.network, residuals, [s.mask for s in scenes])
    if encoder_file is not None and not resumed:
        save_checkpoint(encoder_file, run, network=model.network.state_dict(), encoder_losses=encoder_losses)
    scale = (model.network.gene_std * model.network.residual_scale).cpu().numpy()[:, None, None]
    held = [held_out_bins(s.shape, model.seed) & s.mask for s in scenes]
    if sum(int(h.sum()) for h in held) < MIN_HELD_OUT_BINS:
        held = [np.zeros_like(s.mask) for s in scenes]
    tensors = [
        SceneTensors(
            cond,
            torch.from_numpy(r / scale),
            # The loss skips the held-out bins, so the residual's weight can be fitted on them honestly.
            torch.from_numpy((s.mask & ~h).astype(np.float32)),
            cfg.patch_bins,
            cells=cells,
        )
        for s, (cond, cells, _), r, h in zip(scenes, inputs, residuals, held, strict=True)
    ]
    ema, losses = train_network(
        model.network,
        tensors,
        model.schedule,
        steps=steps,
        batch_size=cfg.batch_size,
        patch_bins=cfg.patch_bins,
        learning_rate=cfg.learning_rate,
        ema_decay=cfg.ema_decay,
        disentangle_weight=cfg.disentangle_weight,
        precision=cfg.precision,
        compile=cfg.compile,
        device=model.device,
        seed=model.seed,
        checkpoint=checkpoint_dir / TRAINING_CHECKPOINT if checkpoint_dir is not None else None,
        checkpoint_every=checkpoint_every,
        fingerprint=run,
        callback=callback,
        show_progress_bar=show_progress_bar,
    )
    model.network = ema
    model.history = {"encoder": encoder_losses, **losses}
    refuse_non_finite(model.network.state_dict())
    model.is_trained = True

    # The encoder is frozen, so the averaged network's histology maps are the ones computed above.
    scene_maps = [maps[id(s.histology)] for s in scenes]
    calibrate_posterior(model, scenes, [base for *_, base in inputs], held, maps=scene_maps)


def calibrate_posterior(
    model: ModelParts,
    scenes: Sequence[Scene],
    bases: Sequence[np.ndarray],
    held: Sequence[np.ndarray],
    *,
    maps: Sequence[tuple[np.ndarray, np.ndarray | None]] | None = None,
) -> None:
    """Fit the posterior mean's shrinkage, then the spread's calibration, on the same draws of held-out bins.

    Each scene with held-out bins is sampled once (:data:`CALIBRATION_DRAWS` draws, the number
    :func:`sr_spatial.tl.superresolve` averages by default); both fits read those draws. ``maps`` are the
    scenes' histology maps when already computed (running the encoder over the whole H&E again per scene
    costs seconds and a transient of several copies of the image).
    """
    maps = [None] * len(scenes) if maps is None else maps
    held_out = [
        (scene, base, bins, sample(
            model,
            scene,
            n_samples=CALIBRATION_DRAWS,
            steps=model.config.sampling_steps,
            eta=0.0,
            seed=model.seed,
            offset=(0, 0),
            return_mean=False,
            show_progress_bar=False,
            maps=scene_maps,
        ))
        for scene, base, bins, scene_maps in zip(scenes, bases, held, maps, strict=True)
        if bins.any()
    ]  # fmt: skip
    fit_residual_weight(model.network, held_out)
    fit_spread_scale(model.network, held_out)


def fit_encoder(
    model: ModelParts, scenes: Sequence[Scene], reference: Scene, *, show_progress_bar: bool
) -> list[float]:
    """Fit the statistics, the histology encoder (on the spots not held out) and the gene graph."""
    cfg = model.config
    fit_statistics(model.network, scenes, reference)
    torch.manual_seed(model.seed)
    learn, _ = split_spots(len(reference.spot_values), model.seed)
    encoder = model.network.encoder
    encoder_losses = []
    if encoder.learns_from_spots:
        encoder_losses = pretrain_encoder(
            encoder,
            histology_crops(model, reference),
            reference.spot_pixels,
            reference.spot_values,
            steps=cfg.encoder_steps,
            batch_size=cfg.encoder_batch_size,
            learning_rate=3e-3,
            device=model.device,
            seed=model.seed,
            spots=learn,
            show_progress_bar=show_progress_bar,
        )
    if not np.isfinite(encoder_losses).all():
        msg = (
            f"Fitting the histology encoder diverged (its loss became {encoder_losses[-1]}). Check that the H&E "
            "holds finite values, or retrain with another `seed`."
        )
        raise FloatingPointError(msg)
    encoder.requires_grad_(False)
    if model.network.unet.gene_graph is not None:
        model.network.unet.gene_graph.set_graph(build_gene_graph(reference.spot_values, k=cfg.gene_graph_k))
    return encoder_losses
