"""Training the diffusion model on reference slides with finer truth: true pairs pooled as the target measures.

One path for one reference or several, with or without a target: each reference is read once on a grid of bins
one unit wide (:func:`~sr_spatial.core._reference.reference_map`), its units pooled into pseudo-spots with the
target's geometry (Visium's without one) at several offsets (:func:`reference_scenes`), and the model trains on the
pairs of every reference (:func:`train_on_references`).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from sr_spatial.core._reference import SPOT_DIAMETER_RATIO, PseudoSpots, pool_bins, square_lattice
from sr_spatial.core._scene import Scene
from sr_spatial.diffusion._fit import output_scene, train_on_map, training_config
from sr_spatial.pp._lattice import visium_lattice
from sr_spatial.pp._stmap import nearest_spot, render_spots

if TYPE_CHECKING:
    from sr_spatial.core._method import TrainRequest
    from sr_spatial.diffusion._model import DiffST
    from sr_spatial.pp._stmap import STMap

logger = logging.getLogger("sr_spatial")

__all__ = ["reference_scenes", "train_on_references"]


def reference_scenes(
    st_map: STMap,
    reference: Scene,
    *,
    scale: int,
    px_per_bin: int,
    n_offsets: int,
    seed: int,
    geometry: PseudoSpots | None = None,
) -> list[Scene]:
    """True low- to high-resolution pairs from a slide of high-resolution bins (Visium HD, binned Xenium).

    ``st_map`` holds the bins on a bin-aligned grid (:func:`~sr_spatial.core._reference.bin_aligned_map`) and
    ``reference`` is its output scene. The input of each pair is what Visium would have measured over the same
    tissue: disks ``0.55 * scale`` bins wide on a hexagonal lattice ``scale`` bins apart, each the mean of the bins
    under it; the target is the bins themselves. Each extra offset shifts the lattice, giving another measurement of
    the same slide. The grid, the H&E resolution (``px_per_bin`` pixels per bin) and the ratio of spot pitch to bin
    match what :func:`sr_spatial.tl.superresolve` sees on a Visium slide at ``scale``. With ``geometry`` (the
    target's, :func:`target_geometry`) the pseudo-spots take its lattice and radius instead of Visium's.
    """
    geometry = geometry or PseudoSpots("hexagonal", SPOT_DIAMETER_RATIO / 2)
    lattice_of = visium_lattice if geometry.lattice == "hexagonal" else square_lattice
    rng = np.random.default_rng(seed)
    pitch = scale * st_map.pitch
    lo, hi = st_map.centres.min(axis=0), st_map.centres.max(axis=0)
    offsets = [np.zeros(2)] + [rng.uniform(0, pitch, size=2) for _ in range(max(n_offsets, 1) - 1)]
    histology = reference.histology  # the same array for every pair: the encoder runs on it once
    scenes, n_spots = [], []
    for offset in offsets:
        lattice = lattice_of(lo, hi, pitch=pitch, offset=lo + offset)
        spot_xy, pooled = pool_bins(st_map.centres, st_map.values, lattice, radius=geometry.radius_ratio * pitch)
        if len(spot_xy) < 3:
            msg = (
                f"The reference's {len(st_map.centres)} units hold only {len(spot_xy)} pseudo-spots at "
                f"scale {scale}; a larger reference slide, finer bins or a smaller `scale` is needed."
            )
            raise ValueError(msg)
        n_spots.append(len(spot_xy))
        nearest, smooth, lr_mask, _ = render_spots(spot_xy, pooled, st_map.grid, pitch=pitch)
        mask = st_map.mask & lr_mask
        scenes.append(
            Scene(
                nearest=nearest * mask,
                smooth=smooth * mask,
                mask=mask,
                histology=histology,
                px_per_bin=px_per_bin,
                target=st_map.nearest * mask,
                owner=nearest_spot(spot_xy, st_map.grid),
            )
        )
    logger.info("Reference pairs: %d bins measured by %s Visium-like spots.", len(st_map.centres), n_spots)
    return scenes


def train_on_references(request: TrainRequest) -> DiffST:
    """:func:`sr_spatial.tl.train` with ``method="diffusion"`` on references, pooled with the target's geometry.

    Visium's geometry without ``target``. Each reference gives true pairs (:func:`reference_scenes`) on its own grid
    of units; the histology encoder learns from the spots of the reference with the most counts in all (units times
    depth: the most labels and the least counting noise).
    """
    from sr_spatial.core._reference import about_reference, genes_of_request, reference_map, target_geometry

    config = training_config(
        request.config, features=request.features, image_um_per_px=request.image_um_per_px, reference=True
    )
    geometry = target_geometry(request.target, request.slide)
    genes = genes_of_request(request)
    maps, outputs, scenes, counts = [], [], [], []
    for index, (slide, image_key) in enumerate(zip(request.slides, request.image_keys, strict=True)):
        with about_reference(index, slide):
            st_map = reference_map(
                slide, image_key, slide=request.slide, genes=genes, n_top_genes=request.n_top_genes,
                aggregate=request.aggregate,
            )  # fmt: skip
        genes = st_map.genes
        output = output_scene(st_map, px_per_bin=config.px_per_bin)
        scenes += reference_scenes(
            st_map,
            output,
            scale=request.scale,
            px_per_bin=config.px_per_bin,
            n_offsets=config.n_pool_offsets,
            seed=request.seed + index,
            geometry=geometry,
        )
        maps.append(st_map)
        outputs.append(output)
        counts.append(float(st_map.spots.counts.sum()))
    largest = int(np.argmax(counts))
    model = train_on_map(
        maps[largest],
        scale=request.scale,
        config=config,
        train_steps=request.train_steps,
        device=request.device,
        seed=request.seed,
        checkpoint_dir=request.checkpoint_dir,
        show_progress_bar=request.show_progress_bar,
        reference=outputs[largest],
        scenes=scenes,
    )
    # Calibrated on true units of the output's size: its spread needs no carrying to finer bins.
    model.network.spread_error_ratio.zero_()
    # Guarded where applied when trained for a target (or on several references); a single reference without a
    # target was trained on its own path before the two were one, unguarded, and its outputs are kept.
    model.trained_on_references = request.target is not None or len(request.slides) > 1
    return model
