"""A small convolutional encoder learned from the slide's own spots, cross-fitted so its held-out error is honest.

Hand-crafted morphology averages what a bin holds (stain, nuclei, texture); it cannot tell which cells those
are. The histology encoder of the diffusion model (:class:`~sr_spatial.core._pixel_encoder.HistologyEncoder`)
learns per-pixel expression from the spots and can, where spots are many and the tissue's cells differ by
look. With a few hundred labels it also overfits, so it only ever enters as one more detail predictor whose
weight is fitted on spots it never saw: the spots are split into folds of whole groups (the groups the detail
weights are fitted on), one encoder is trained per fold on the other folds' spots, and each spot's held-out
prediction comes from the encoder that did not see it. The map uses the mean of the fold encoders' maps. The
encoders' weights and their input statistics are kept (:class:`LearnedDetail`), so a saved
:class:`~sr_spatial.model.HistologyModel` computes the same maps on any slide (:func:`learned_maps`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from sr_spatial.core._groups import lattice_groups
from sr_spatial.pp._stmap import spot_pixel_map

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sr_spatial.pp._stmap import STMap

logger = logging.getLogger("sr_spatial")

__all__ = [
    "AUTO_MIN_SPOTS",
    "EncoderSettings",
    "LearnedDetail",
    "fit_learned_detail",
    "fit_learned_on_references",
    "learned_maps",
    "use_learned_encoder",
]

#: Encoders trained, each on the spots of the other folds.
FOLDS = 2
#: Fewer spots than this per fold, and no encoder is trained: it could not learn anything to weigh.
MIN_SPOTS_PER_FOLD = 24
#: ``learned_encoder="auto"`` trains the encoders on slides with at least this many spots. Below it the labels
#: are few for a CNN and its training dominates the run (20x the morphology path's time on a 279-spot demo);
#: above it, a whole Visium slide, the held-out weights find detail the morphology lacks (synthetic slides:
#: r +0.017 at 3,220 spots, +0.052 at 12,902, for about twice the time) and stay near 0 where it has none.
AUTO_MIN_SPOTS = 1000
#: ``learned_encoder="auto"`` leaves the encoders off on grids of more H&E pixels than this (at the encoder's
#: pixels per bin): their inputs are held whole, about 36 bytes a pixel (1.1 GiB here), which a Visium HD slide
#: at scale 4 (millions of bins) would multiply. A whole Visium slide at scale 4 holds about 3 million.
AUTO_MAX_PIXELS = 2**25


def use_learned_encoder(
    learned_encoder: bool | str, *, n_spots: int, grid_shape: tuple[int, int], px_per_bin: int
) -> bool:
    """Whether ``learned_encoder`` (``True``, ``False`` or ``"auto"``) trains the encoders for this fit.

    ``"auto"``: on slides of at least :data:`AUTO_MIN_SPOTS` spots whose output grid holds at most
    :data:`AUTO_MAX_PIXELS` H&E pixels at ``px_per_bin`` pixels a bin side.
    """
    if isinstance(learned_encoder, str):
        pixels = grid_shape[0] * grid_shape[1] * px_per_bin**2
        return n_spots >= AUTO_MIN_SPOTS and pixels <= AUTO_MAX_PIXELS
    return bool(learned_encoder)


@dataclass(frozen=True)
class LearnedDetail:
    """The cross-fitted encoder's predictions: held-out at the spots, averaged over folds at the bins.

    Attributes
    ----------
    heldout
        Each spot's log-normalised expression predicted by the encoder that did not see it, ``(n_spots, n_genes)``.
    spots
        Each spot's expression from the averaged maps (the reference its bins' detail is taken from).
    maps
        Per-bin expression from the averaged maps, ``(n_genes, height, width)``.
    encoders
        The fold encoders' weights (CPU tensors), in fold order.
    input_mean, input_std
        The per-channel statistics the encoders' inputs were standardised with, on the slide they learned from;
        ``None`` for encoders learned on references, which standardise every slide by its own.
    width, px_per_bin
        The encoders' width and the H&E pixels per bin side they read.
    """

    heldout: np.ndarray
    spots: np.ndarray
    maps: np.ndarray
    encoders: tuple[dict[str, torch.Tensor], ...] = ()
    input_mean: np.ndarray | None = None
    input_std: np.ndarray | None = None
    width: int = 16
    px_per_bin: int = 8

    def detail(self, bin_maps: np.ndarray, owner: np.ndarray) -> np.ndarray:
        """Each bin's estimate minus its spot's, ``(n_bins, n_genes)``, from ``bin_maps`` ``(n_genes, n_bins)``."""
        return bin_maps.T - self.spots[owner]


@dataclass(frozen=True)
class EncoderSettings:
    """How the learned encoders are built and trained: H&E pixels per bin, channels, optimiser steps and batch."""

    px_per_bin: int
    width: int
    steps: int
    batch_size: int

    @classmethod
    def of(cls, config) -> EncoderSettings:
        """The settings of a :class:`~sr_spatial.model.HistologyConfig`."""
        return cls(config.px_per_bin, config.encoder_width, config.encoder_steps, config.encoder_batch_size)


def fit_learned_detail(
    st_map: STMap,
    settings: EncoderSettings,
    *,
    scale: int,
    seed: int,
    device: torch.device | str = "cpu",
    show_progress_bar: bool = False,
) -> LearnedDetail | None:
    """Train :data:`FOLDS` histology encoders on folds of spot groups and collect their predictions.

    Groups are the square cells ``scale`` pitches wide that :func:`~sr_spatial.histology._regression.fit_detail_model`
    pools spots into, so no spot's held-out prediction comes from an encoder that saw its group. Returns
    ``None`` (nothing learned) when a fold would hold fewer than :data:`MIN_SPOTS_PER_FOLD` spots.
    """
    from sr_spatial.core._pixel_encoder import spot_means

    n_spots, n_genes = st_map.values.shape
    if n_spots < FOLDS * MIN_SPOTS_PER_FOLD:
        return None
    px_per_bin = settings.px_per_bin
    factor = max(int(scale), 2)
    group = lattice_groups(st_map.centres, side=factor * st_map.pitch)
    rng = np.random.default_rng(seed)
    fold = (rng.permutation(int(group.max()) + 1) % FOLDS)[group]
    inputs, mean, std = _standardised_inputs(st_map, px_per_bin)
    spot_pixels = spot_pixel_map(st_map, px_per_bin)
    device = torch.device(device)
    heldout = np.zeros((n_spots, n_genes))
    maps = np.zeros((n_genes, *st_map.grid.shape), dtype=np.float64)
    encoders = []
    logger.info(
        "Cross-fitting %d learned encoders (%d steps each), each on the spots of %d of %d folds of spot groups.",
        FOLDS,
        settings.steps,
        FOLDS - 1,
        FOLDS,
    )
    for k in range(FOLDS):
        encoder = _trained_encoder(
            settings, inputs, spot_pixels, st_map.values, seed=seed + k, device=device,
            spots=np.flatnonzero(fold != k), show_progress_bar=show_progress_bar,
        )  # fmt: skip
        fold_maps = _bin_maps(encoder, inputs, px_per_bin, device=device)
        predicted = spot_means(fold_maps, spot_pixels, n_spots, px_per_bin)
        heldout[fold == k] = predicted[fold == k]
        maps += fold_maps / FOLDS
        encoders.append(_weights(encoder))
    spots = spot_means(maps, spot_pixels, n_spots, px_per_bin)
    return LearnedDetail(
        heldout=heldout,
        spots=spots,
        maps=maps.astype(np.float32),
        encoders=tuple(encoders),
        input_mean=mean,
        input_std=std,
        width=settings.width,
        px_per_bin=px_per_bin,
    )


def _trained_encoder(
    settings: EncoderSettings, inputs, spot_pixels, values, *, seed: int, device, spots=None, show_progress_bar
):
    """A fresh encoder (initialised from ``seed``) fitted to the spots ``spots`` of ``values`` (default all)."""
    from sr_spatial.core._pixel_encoder import HistologyEncoder, pretrain_encoder

    torch.manual_seed(seed)
    encoder = HistologyEncoder(width=settings.width, n_genes=values.shape[1])
    pretrain_encoder(
        encoder,
        inputs,
        spot_pixels,
        values,
        steps=settings.steps,
        batch_size=settings.batch_size,
        learning_rate=3e-3,
        device=device,
        seed=seed,
        spots=spots,
        show_progress_bar=show_progress_bar,
    )
    return encoder


def _weights(encoder) -> dict[str, torch.Tensor]:
    """The encoder's weights, detached on the CPU: what a model keeps and saves."""
    return {name: value.detach().cpu().clone() for name, value in encoder.state_dict().items()}


def fit_learned_on_references(
    st_maps: Sequence[STMap],
    settings: EncoderSettings,
    *,
    seed: int,
    device: torch.device | str,
    show_progress_bar: bool,
) -> LearnedDetail | None:
    """Learned encoders trained on two or more reference slides' units, each reference held out by the others.

    Encoder ``k`` learns from every reference but ``k`` (laid side by side, each slide's H&E standardised by its own
    statistics, so one scanned darker is not another tissue) and predicts reference ``k``'s units: held out as a
    new slide is. (One reference is cross-fitted on its folds of groups, as a single slide: :func:`fit_learned_detail`.)
    The encoders are kept without input statistics: a target is standardised by its own (:func:`learned_maps`).
    ``heldout`` lists the units of all references in order. Returns ``None`` where too few units to learn from.
    """
    from sr_spatial.core._pixel_encoder import spot_means

    px_per_bin = settings.px_per_bin
    if min(len(m.values) for m in st_maps) < MIN_SPOTS_PER_FOLD:
        return None
    inputs = [_standardised_inputs(m, px_per_bin)[0] for m in st_maps]
    pixels = [spot_pixel_map(m, px_per_bin) for m in st_maps]
    n_genes = st_maps[0].values.shape[1]
    device = torch.device(device)
    heldout, encoders = [], []
    logger.info(
        "Training %d learned encoders (%d steps each), each on all references but one.", len(st_maps), settings.steps
    )
    for k, st_map in enumerate(st_maps):
        others = [i for i in range(len(st_maps)) if i != k]
        canvas = _Canvas(
            [inputs[i] for i in others], [pixels[i] for i in others], [len(st_maps[i].values) for i in others]
        )
        values = np.concatenate([st_maps[i].values for i in others])
        encoder = _trained_encoder(
            settings, canvas.crop, canvas.spot_pixels, values, seed=seed + k, device=device,
            show_progress_bar=show_progress_bar,
        )  # fmt: skip
        maps = _bin_maps(encoder, inputs[k], px_per_bin, device=device)
        heldout.append(spot_means(maps, pixels[k], len(st_map.values), px_per_bin))
        encoders.append(_weights(encoder))
    empty = np.zeros((0, n_genes))
    return LearnedDetail(
        heldout=np.concatenate(heldout),
        spots=empty,
        maps=np.zeros((n_genes, 0, 0), dtype=np.float32),
        encoders=tuple(encoders),
        width=settings.width,
        px_per_bin=px_per_bin,
    )


class _Canvas:
    """Slides' encoder inputs and spot pixels side by side, a gap apart: one slide for :func:`pretrain_encoder`.

    Crops are cut from the slide under them (zeros elsewhere), so no slide is copied into one large array.
    """

    #: Pixels between slides, wider than any crop, so a crop never holds two slides.
    GAP = 512

    def __init__(self, inputs: Sequence[torch.Tensor], spot_pixels: Sequence[np.ndarray], n_units: Sequence[int]):
        self.inputs = list(inputs)
        height = max(p.shape[0] for p in spot_pixels)
        self.lefts, left, offset, columns = [], 0, 0, []
        for pixels, n in zip(spot_pixels, n_units, strict=True):
            self.lefts.append(left)
            placed = np.full((height, pixels.shape[1] + self.GAP), -1, dtype=np.int32)
            placed[: pixels.shape[0], : pixels.shape[1]] = np.where(pixels >= 0, pixels + offset, -1)
            columns.append(placed)
            left += placed.shape[1]
            offset += n
        self.spot_pixels = np.concatenate(columns, axis=1)

    def crop(self, top: int, left: int, size: int) -> torch.Tensor:
        """The ``(channels, size, size)`` inputs at ``(top, left)`` of the canvas, zeros outside every slide."""
        from sr_spatial.core._pixel_encoder import window

        out = torch.zeros((self.inputs[0].shape[0], size, size), dtype=self.inputs[0].dtype)
        for start, inputs in zip(self.lefts, self.inputs, strict=True):
            if left + size > start and left < start + inputs.shape[-1]:
                out += window(inputs, top, left - start, size)
        return out


def learned_maps(learned: LearnedDetail, st_map: STMap, *, device: torch.device | str = "cpu") -> LearnedDetail:
    """The fold encoders of ``learned`` applied to another slide: its maps and spot values, nothing held out.

    The slide's H&E is standardised with the statistics of the slide the encoders learned from, so a slide
    seen at fit gives exactly the maps the fit gave (encoders learned on references: with its own).
    """
    from sr_spatial.core._pixel_encoder import HistologyEncoder, spot_means

    n_spots = len(st_map.values)
    n_genes = learned.spots.shape[1]
    inputs, _, _ = _standardised_inputs(st_map, learned.px_per_bin, learned.input_mean, learned.input_std)
    maps = np.zeros((n_genes, *st_map.grid.shape), dtype=np.float64)
    for state in learned.encoders:
        encoder = HistologyEncoder(width=learned.width, n_genes=n_genes)
        encoder.load_state_dict(state)
        maps += _bin_maps(encoder, inputs, learned.px_per_bin, device=torch.device(device)) / len(learned.encoders)
    spots = spot_means(maps, spot_pixel_map(st_map, learned.px_per_bin), n_spots, learned.px_per_bin)
    empty = np.zeros((0, n_genes))
    return LearnedDetail(
        heldout=empty,
        spots=spots,
        maps=maps.astype(np.float32),
        encoders=learned.encoders,
        input_mean=learned.input_mean,
        input_std=learned.input_std,
        width=learned.width,
        px_per_bin=learned.px_per_bin,
    )


def _standardised_inputs(
    st_map: STMap, px_per_bin: int, mean: np.ndarray | None = None, std: np.ndarray | None = None
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """The encoders' whole-slide inputs, standardised per channel (by the slide's own statistics by default)."""
    from sr_spatial._adapter._read import read_histology
    from sr_spatial.core._image_encoder import input_statistics
    from sr_spatial.core._pixel_encoder import histology_inputs

    inputs = histology_inputs(read_histology(st_map.spots, st_map.grid, px_per_bin=px_per_bin))
    if mean is None or std is None:
        # Streamed in float64, as the diffusion model's encoder statistics are.
        mean, std = input_statistics(inputs)
    inputs = torch.from_numpy(inputs)
    # In place: the inputs are a whole-slide array, and each copy costs as much again.
    inputs.sub_(torch.from_numpy(mean.astype(np.float32))[:, None, None])
    inputs.div_(torch.from_numpy(np.maximum(std, 1e-3).astype(np.float32))[:, None, None])
    return inputs, mean, std


def _bin_maps(encoder, inputs: torch.Tensor, px_per_bin: int, *, device: torch.device) -> np.ndarray:
    """The encoder's expression per bin over the whole slide, ``(n_genes, height, width)``, in rows of bins.

    The encoder has no normalisation layer, so rows processed apart agree with the whole slide except within
    its receptive field (:attr:`~sr_spatial.core._image_encoder.Encoder.context_px`) of a cut; each chunk is read
    with that margin, which ``bin_maps`` trims after the convolutions.
    """
    from sr_spatial.core._image_encoder import row_chunks

    k = px_per_bin
    height, width = inputs.shape[-2] // k, inputs.shape[-1] // k
    out = np.empty((encoder.out_channels, height, width), dtype=np.float64)
    encoder = encoder.eval().to(device)
    chunks = row_chunks(height, width, px_per_bin=k, hidden=encoder.body[0].out_channels, margin=encoder.context_px)
    with torch.no_grad():
        for start, stop, top, bottom, trim in chunks:
            chunk = inputs[:, top:bottom][None].to(device)
            bins, _ = encoder.bin_maps(chunk, k, trim=trim)
            out[:, start:stop] = bins[0].float().cpu().numpy()
    return out
