"""Training the diffusion model by scale transfer on the slide's own spots; on references see ``_reference``."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Protocol

import numpy as np

from sr_spatial._adapter._read import read_histology
from sr_spatial._logging import log_phase, logger
from sr_spatial.core._groups import lattice_groups
from sr_spatial.core._scene import Scene
from sr_spatial.diffusion._config import resolve_config
from sr_spatial.diffusion._model import DiffST
from sr_spatial.features import resolve_features
from sr_spatial.pp._lattice import make_grid
from sr_spatial.pp._stmap import build_st_map, coarsen_spots, nearest_spot, render_spots, spot_pixel_map

if TYPE_CHECKING:
    from pathlib import Path

    from spatialdata import SpatialData

    from sr_spatial.diffusion._config import ModelConfig
    from sr_spatial.pp._stmap import STMap

__all__ = [
    "BaseFitter",
    "BasePredictor",
    "check_training_scale",
    "config_for_steps",
    "output_scene",
    "scale_transfer_scenes",
    "train_diffusion",
    "train_on_map",
    "training_config",
]


class BasePredictor(Protocol):
    """The predictor a model with ``histology_base`` generates around, fitted on one slide."""

    def training_base(self, values, group, spot_of_bin, maps, *, seed: int) -> np.ndarray:
        """Its held-out map of a training scene: each spot's prediction from a fit that never saw it."""

    def block_maps(self, region, nearest, smooth, owner, mask) -> tuple:
        """Its maps of one block of the output grid, the base map first."""


#: Fits a :class:`BasePredictor` on a slide: ``fit_base(st_map, *, features, scale, seed, image_um_per_px,
#: show_progress_bar, extractor=None)`` returns it and its ``uns`` record. The tools
#: pass the histology method's (:func:`sr_spatial.histology._model.fit_base`), so this package never imports it.
BaseFitter = Callable[..., tuple[BasePredictor, dict]]


def neighbour_context(st_map: STMap, *, reach: float = 1.2) -> np.ndarray:
    """Each spot's expression as the mean of its neighbours within ``reach`` pitches (itself left out).

    Spots without neighbours get the slide's mean: the measurement around them says nothing.
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(st_map.centres)
    linear = np.expm1(st_map.values.astype(np.float64))
    context = np.empty_like(linear)
    for spot, neighbours in enumerate(tree.query_ball_point(st_map.centres, r=reach * st_map.pitch)):
        others = [n for n in neighbours if n != spot]
        context[spot] = linear[others].mean(axis=0) if others else linear.mean(axis=0)
    return np.log1p(context).astype(np.float32)


def output_scene(st_map: STMap, *, px_per_bin: int) -> Scene:
    """The slide at the output resolution, with the spots' pixels as labels for the histology encoder."""
    return Scene(
        nearest=st_map.nearest,
        smooth=st_map.smooth,
        mask=st_map.mask,
        histology=read_histology(st_map.spots, st_map.grid, px_per_bin=px_per_bin),
        px_per_bin=px_per_bin,
        spot_pixels=spot_pixel_map(st_map, px_per_bin),
        spot_values=st_map.values,
        spot_context=neighbour_context(st_map),
        owner=nearest_spot(st_map.centres, st_map.grid),
    )


def scale_transfer_scenes(
    st_map: STMap,
    *,
    scale: int,
    px_per_bin: int,
    n_offsets: int,
    seed: int,
    histology: BasePredictor | None = None,
) -> list[Scene]:
    """Training pairs from one slide: spots pooled ``scale``-fold (input) and the measured spots (target).

    The target grid has one bin per spot pitch, and the pooled input is ``scale`` pitches wide, so the pair
    has the same ratio of measurement to output as the real task (spots to bins ``pitch / scale`` wide). The
    H&E is resampled to ``scale * px_per_bin`` pixels per training bin: the same physical resolution as at
    inference. Each extra offset shifts the pooling lattice, giving a different pooling of the same slide.
    With ``histology`` (the slide's fitted histology predictor), each scene's ``base`` is that predictor's
    held-out map (:meth:`BasePredictor.training_base`).
    """
    if st_map.spots is None:
        msg = "The ST map has no spots attached; build it with `sr_spatial.pp.build_st_map`."
        raise ValueError(msg)
    rng = np.random.default_rng(seed)
    pitch = st_map.pitch
    grid = make_grid(st_map.centres, bin_size=pitch, pitch=pitch)
    target, _, mask, _ = render_spots(st_map.centres, st_map.values, grid, pitch=pitch)
    image = read_histology(st_map.spots, grid, px_per_bin=scale * px_per_bin)
    offsets = [(0.0, 0.0)] + [tuple(rng.uniform(0, scale * pitch, size=2)) for _ in range(max(n_offsets, 1) - 1)]
    spot_of_bin = nearest_spot(st_map.centres, grid)
    scenes = []
    for index, offset in enumerate(offsets):
        pooled_xy, pooled = coarsen_spots(st_map.centres, st_map.values, factor=scale, pitch=pitch, offset=offset)
        if len(pooled_xy) < 3:
            msg = (
                f"Pooling {len(st_map.centres)} spots {scale}-fold leaves {len(pooled_xy)} pseudo-spots, too few to "
                "learn from. Use a smaller `scale`, or a model trained on a larger slide (`model=`)."
            )
            raise ValueError(msg)
        nearest, smooth, _, _ = render_spots(pooled_xy, pooled, grid, pitch=scale * pitch)
        nearest, smooth, owner = nearest * mask, smooth * mask, nearest_spot(pooled_xy, grid)
        base = None
        if histology is not None:
            group = lattice_groups(st_map.centres, side=scale * pitch, offset=offset)
            maps = (nearest, smooth, mask, owner)
            base = histology.training_base(st_map.values, group, spot_of_bin, maps, seed=seed + index)
        scenes.append(
            Scene(
                nearest=nearest,
                smooth=smooth,
                mask=mask,
                histology=image,
                px_per_bin=scale * px_per_bin,
                target=target,
                owner=owner,
                base=base,
            )
        )
    return scenes


def training_config(
    config: str | ModelConfig | dict, *, features: str | None, image_um_per_px: float | None, reference: bool
) -> ModelConfig:
    """The configuration a training uses, with ``features`` as its histology base's; refused before any work.

    ``features`` names the features of the predictor a ``histology_base`` model generates around (no other model
    reads them); a ``histology_base`` trains by scale transfer only, never on references.
    """
    config = resolve_config(config)
    if features is not None:
        if not isinstance(features, str):
            msg = (
                f"`features` of `train` names the features ('morphology' or a timm model id), so the saved model "
                f"can compute them again; got {type(features).__name__}."
            )
            raise TypeError(msg)
        if not config.histology_base:
            msg = (
                "`features` chooses the histology predictor a model generates around, which only a model with "
                "`histology_base=True` has; pass `config={'histology_base': True, ...}` or drop `features`."
            )
            raise ValueError(msg)
        config = replace(config, base_features=features)
    if reference and config.histology_base:
        msg = (
            "`histology_base=True` trains by scale transfer on the slide's own spots; it cannot train on a "
            "high-resolution reference. Use `reference=False`, or a configuration without `histology_base`."
        )
        raise ValueError(msg)
    if config.histology_base:
        # An encoder without the H&E's pixel size fails here, before the slide is read.
        resolve_features(config.base_features, image_um_per_px=image_um_per_px)
    return config


def train_diffusion(
    sdata: SpatialData,
    image_key: str,
    *,
    table_key: str,
    shapes_key: str | None,
    genes: list[str] | None,
    n_top_genes: int,
    scale: int,
    config: str | ModelConfig | dict,
    train_steps: int | None,
    device,
    coordinate_system: str | None,
    stain: str,
    features: str | None,
    image_um_per_px: float | None,
    seed: int,
    checkpoint_dir: str | Path | None,
    show_progress_bar: bool,
    fit_base: BaseFitter | None = None,
) -> DiffST:
    """:func:`sr_spatial.tl.train` with ``method="diffusion"`` by scale transfer, its arguments checked.

    ``fit_base`` fits the predictor a configuration with ``histology_base`` generates around (:func:`train_on_map`).
    On references: :func:`sr_spatial.diffusion._reference.train_on_references`.
    """
    config = training_config(config, features=features, image_um_per_px=image_um_per_px, reference=False)
    where = {"table_key": table_key, "shapes_key": shapes_key, "coordinate_system": coordinate_system}
    check_training_scale(sdata, image_key, scale=scale, **where)
    st_map = build_st_map(
        sdata,
        image_key,
        **where,
        genes=genes,
        n_top_genes=n_top_genes,
        scale=scale,
        stain=stain,
    )
    return train_on_map(
        st_map,
        scale=scale,
        config=config,
        train_steps=train_steps,
        device=device,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        show_progress_bar=show_progress_bar,
        image_um_per_px=image_um_per_px,
        fit_base=fit_base,
    )


def check_training_scale(sdata: SpatialData, image_key: str, *, scale: int, **where) -> None:
    """Refuse a ``scale`` that pools the slide into too few pseudo-spots to train on, before any rendering.

    ``where`` are the keyword arguments of :func:`sr_spatial._adapter._read.read_spots` that locate the spots.
    """
    from sr_spatial._adapter._read import read_spots
    from sr_spatial.pp._lattice import spot_pitch

    # Only the spots' positions matter here: the image's reading (and its log lines) comes with the slide's.
    centres = read_spots(sdata, image_key, stain="brightfield", **where).centres
    pooled, _ = coarsen_spots(
        centres, np.zeros((len(centres), 1), dtype=np.float32), factor=scale, pitch=spot_pitch(centres)
    )
    if len(pooled) < 3:
        msg = (
            f"Pooling {len(centres)} spots {scale}-fold leaves {len(pooled)} pseudo-spots, too few to learn from. "
            "Use a smaller `scale`, or a model trained on a larger slide (`model=`)."
        )
        raise ValueError(msg)


def train_on_map(
    st_map: STMap,
    *,
    scale: int,
    config: str | ModelConfig | dict,
    train_steps: int | None,
    device,
    seed: int,
    show_progress_bar: bool,
    reference: Scene | None = None,
    scenes: list[Scene] | None = None,
    checkpoint_dir: str | Path | None = None,
    image_um_per_px: float | None = None,
    fit_base: BaseFitter | None = None,
) -> DiffST:
    """Train on an already built ST map (see :func:`train`); ``reference`` is its :func:`output_scene` if built.

    ``scenes`` are the training pairs; default: :func:`scale_transfer_scenes` of the map, around the predictor
    ``fit_base`` fits for a configuration with ``histology_base``.
    """
    cfg = config_for_steps(resolve_config(config), train_steps)
    start = time.perf_counter()
    if reference is None:
        reference = output_scene(st_map, px_per_bin=cfg.px_per_bin)
    if scenes is None:
        histology = None
        if cfg.histology_base:
            histology, _ = fit_base(
                st_map,
                features=cfg.base_features,
                scale=scale,
                seed=seed,
                image_um_per_px=image_um_per_px,
                show_progress_bar=show_progress_bar,
            )
        scenes = scale_transfer_scenes(
            st_map,
            scale=scale,
            px_per_bin=cfg.px_per_bin,
            n_offsets=cfg.n_pool_offsets,
            seed=seed,
            histology=histology,
        )
    seconds = time.perf_counter() - start
    log_phase("features", seconds, "Prepared the training data (histology, spot pairs) in %.1f s.", seconds)
    start = time.perf_counter()
    model = DiffST(st_map.genes, config=cfg, scale=scale, device=device, seed=seed)
    logger.info(
        "Training on %d spots x %d genes at scale %d (%s).",
        len(st_map.values),
        len(st_map.genes),
        scale,
        model.device.type,
    )
    model.train(scenes, reference=reference, checkpoint_dir=checkpoint_dir, show_progress_bar=show_progress_bar)
    seconds = time.perf_counter() - start
    log_phase("training", seconds, "Trained in %.1f s.", seconds)
    return model


def config_for_steps(config: ModelConfig, train_steps: int | None) -> ModelConfig:
    """``config`` with ``train_steps`` denoiser steps, and the histology encoder's steps scaled in proportion.

    ``train_steps=40`` with a configuration of 300 encoder and 300 denoiser steps trains 40 of each; the
    configuration's own step counts are used when ``train_steps`` is ``None``.
    """
    if train_steps is None:
        return config
    train_steps = int(train_steps)
    encoder_steps = max(1, round(config.encoder_steps * train_steps / max(config.train_steps, 1)))
    return replace(config, train_steps=train_steps, encoder_steps=encoder_steps)
