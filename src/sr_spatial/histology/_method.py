"""``method="histology"`` (the default): the measurement plus the within-spot detail histology predicts.

Fits a :class:`~sr_spatial.model.HistologyModel` on the slide, or applies a fitted one, and computes each block's
map, projected exactly onto the spots, with its calibrated spread.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from sr_spatial.core._consistency import project_to_spots, residual_sums
from sr_spatial.core._device import resolve_device
from sr_spatial.core._method import BlockMethod, Call, Fitted, Method, TrainRequest
from sr_spatial.histology._config import HistologyConfig, resolve_histology_config
from sr_spatial.histology._model import HistologyModel, fit_on_slide

# The diffusion model's configuration, which this method still reads its encoder settings from (`histology_config`),
# through the models' public face: the two methods' packages never import each other.
from sr_spatial.model import ModelConfig

if TYPE_CHECKING:
    from sr_spatial.core._reference import PseudoSpots
    from sr_spatial.histology._apply import HistologyDetail
    from sr_spatial.histology._reference import ReferenceUnits
    from sr_spatial.pp._stmap import STMap

__all__ = ["HistologyMethod", "histology_config", "model_for_genes"]


@dataclass(frozen=True)
class HistologyBlocks(BlockMethod):
    detail: HistologyDetail

    def describe(self) -> str:
        return "Computing the histology maps"

    def maps(self, view, model, *, show_progress_bar):
        raw, std = self.detail.block_maps(view.block.region, view.nearest, view.smooth, view.owner(), view.mask)
        values = view.job.values
        residual_before = residual_sums(raw, view.footprint, values, spots=view.in_block)
        return project_to_spots(raw, view.footprint, values) * view.mask, std, residual_before


def histology_config(
    config, *, features, learned_encoder, train_steps: int | None, references: bool = False
) -> HistologyConfig:
    """The :class:`~sr_spatial.model.HistologyConfig` of a call: ``config`` with the call's options applied.

    ``config`` may also be a :class:`~sr_spatial.model.ModelConfig` (or a dict of its fields), whose encoder
    settings the histology method read before it had its own configuration; ``train_steps`` sets the learned
    encoders' steps.
    """
    if isinstance(config, dict) and not set(config) <= set(HistologyConfig.__dataclass_fields__):
        config = ModelConfig.from_dict(config)
    if isinstance(config, ModelConfig):
        config = HistologyConfig(
            encoder_width=config.histology_width,
            encoder_steps=config.encoder_steps,
            encoder_batch_size=config.encoder_batch_size,
            px_per_bin=config.px_per_bin,
        )
    return resolve_histology_config(
        config,
        features=features,
        learned_encoder=learned_encoder,
        encoder_steps=train_steps,
    ).for_references(references)


def _config_options(options) -> dict:
    """What :func:`histology_config` reads of a call's :class:`~sr_spatial.tl.MethodOptions`."""
    return {
        "features": options.features,
        "learned_encoder": options.learned_encoder,
        "train_steps": options.train_steps,
    }


def model_for_genes(model: HistologyModel, genes: list[str]) -> HistologyModel:
    """``model`` for some of its genes (any order), whose maps of them equal its own; whole with learned encoders.

    Each gene's ridge column, weights and spread are its own, so only the genes asked for are computed.
    """
    genes = [str(g) for g in genes]
    if not genes or not set(genes) <= set(model.genes):
        msg = (
            f"Pass some of the model's genes (`model.genes`); not among them: {sorted(set(genes) - set(model.genes))}."
        )
        raise ValueError(msg)
    if genes == model.genes or model.learned is not None:
        return model
    part = copy.copy(model)
    part.genes, part.predictor = genes, model.predictor.subset(np.array([model.genes.index(g) for g in genes]))
    return part


def _with_counting_noise(detail: HistologyDetail, st_map) -> tuple[HistologyDetail, int]:
    """``detail`` whose spread grows at spots shallower than typical, and how many spots are low-depth (warned)."""
    from sr_spatial._logging import logger
    from sr_spatial.core._uncertainty import LOW_DEPTH_SHARE, counting_variance, low_depth_spots

    depth = np.asarray(st_map.spots.counts.sum(axis=1)).ravel()
    low = low_depth_spots(depth)
    if low.any():
        logger.warning(
            "%d of %d spots have fewer than %d counts (%d %% of the median spot's %d; the fewest %d): their values "
            "rest on a few molecules, and their bins carry the largest uncertainty. Consider leaving them out of the "
            "table.",
            int(low.sum()),
            len(depth),
            int(np.ceil(LOW_DEPTH_SHARE * np.median(depth))),
            round(100 * LOW_DEPTH_SHARE),
            int(np.median(depth)),
            int(depth.min()),
        )
    return replace(detail, spot_variance=counting_variance(depth, st_map.values)), int(low.sum())


class HistologyMethod(Method):
    """Fit (or apply) the histology predictor; see :class:`~sr_spatial.model.HistologyModel`."""

    name = "histology"
    model_class = HistologyModel
    takes_learned_encoder = True
    #: The features resolved by :meth:`check` (a fresh method serves each call).
    extractor = None

    def check(self, call: Call) -> None:
        super().check(call)
        if call.model is not None:
            if call.options.features is not None or call.options.learned_encoder is not None:
                msg = (
                    "`features` and `learned_encoder` choose how a histology model is fitted; a fitted model "
                    "(`model=`) brings its own. Drop them, or fit a new model without `model=`."
                )
                raise ValueError(msg)
            return
        from sr_spatial.features import resolve_features

        config = histology_config(call.config, **_config_options(call.options))
        # An encoder without the H&E's pixel size fails here, before the slide is read; fit uses it as resolved.
        self.extractor = resolve_features(config.features, image_um_per_px=call.options.image_um_per_px)

    def fit(self, st_map, renderer, call: Call) -> Fitted:
        from sr_spatial.pp._stmap import render_whole

        st_map = render_whole(st_map, renderer)  # fitted and applied on the whole slide
        where = {
            "image_um_per_px": call.options.image_um_per_px,
            "device": resolve_device(call.device),
            "show_progress_bar": call.show_progress_bar,
        }
        if call.model is not None:
            model = call.model
            detail, record = model.apply(st_map, **where)
        else:
            config = histology_config(call.config, **_config_options(call.options))
            model, detail, record = fit_on_slide(
                st_map, config=config, scale=call.scale, seed=call.seed, extractor=self.extractor, **where
            )
        detail, record["low_depth_spots"] = _with_counting_noise(detail, st_map)
        features = model.config.features
        params = {
            "features": features if isinstance(features, str) else repr(features),
            "learned_encoder": model.uses_learned_encoder,
        }
        return Fitted(blocks=HistologyBlocks(detail), uns={"histology": record}, params=params)

    def train(self, request: TrainRequest) -> HistologyModel:
        from sr_spatial.features import resolve_features
        from sr_spatial.pp._stmap import build_st_map

        if request.checkpoint_dir is not None:
            msg = "`checkpoint_dir` keeps a diffusion model's training state; the histology method has none. Drop it."
            raise ValueError(msg)
        config = histology_config(
            request.config,
            features=request.features,
            learned_encoder=None,
            train_steps=request.train_steps,
            references=request.reference,
        )
        extractor = resolve_features(config.features, image_um_per_px=request.image_um_per_px)
        device = resolve_device(request.device)
        if request.reference:
            return _fit_on_references(request, config, extractor)
        if len(request.slides) != 1:
            msg = "Several slides are references: pass `reference=True` (and `target=`, the slide to apply it to)."
            raise ValueError(msg)
        st_map = build_st_map(request.slides[0], request.image_keys[0], **request.where(), scale=request.scale)
        return fit_on_slide(
            st_map,
            config=config,
            scale=request.scale,
            seed=request.seed,
            image_um_per_px=request.image_um_per_px,
            device=device,
            show_progress_bar=request.show_progress_bar,
            extractor=extractor,
        )[0]


def _reference_maps(request: TrainRequest, genes) -> tuple[list, list]:
    """The references' ST maps, in order, and the genes they share (the first reference's choice if none given)."""
    from sr_spatial.core._reference import about_reference, reference_map

    st_maps = []
    for index, (slide, image_key) in enumerate(zip(request.slides, request.image_keys, strict=True)):
        with about_reference(index, slide):
            st_maps.append(reference_map(
                slide, image_key, slide=request.slide, genes=genes, n_top_genes=request.n_top_genes,
                aggregate=request.aggregate, expression=False,
            ))  # fmt: skip
        genes = list(st_maps[-1].genes)  # the first reference's choice where none were given
    return st_maps, genes


def _read_px_per_bin(request: TrainRequest, st_maps: list, extractor) -> int | None:
    """The pixels per output bin every slide's H&E is read at: the coarsest among them (the target's finest)."""
    from sr_spatial.core._reference import finest_target_grid, read_px_per_bin

    # Every slide is read at the coarsest resolution among them (the target at its finest H&E), so the features
    # mean the same on all of them.
    target_grid = None
    if request.target is not None:
        target_grid = finest_target_grid(
            request.target, request.target_image_key, request.image_keys, slide=request.slide, scale=request.scale,
            spots=request.target_spots,
        )  # fmt: skip
    return read_px_per_bin(st_maps, extractor, target=target_grid)


def _reference_units(
    st_map: STMap,
    *,
    scale: int,
    geometry: PseudoSpots,
    features,
    max_px_per_bin: int | None,
    seed: int,
    show_progress_bar: bool,
) -> ReferenceUnits:
    """One reference's units: features on bins one unit wide (standardised over the slide), values, pseudo-spots."""
    from sr_spatial.core._reference import N_OFFSETS, pool_groups
    from sr_spatial.features import bin_features
    from sr_spatial.histology._apply import spot_features
    from sr_spatial.histology._reference import ReferenceUnits, at_own_depth, library_sizes, standardise

    read = {"max_px_per_bin": max_px_per_bin, "show_progress_bar": show_progress_bar}
    if hasattr(features, "point_features"):
        # Read around each unit's own centre: a unit off its bin's centre (a lattice a little rotated against the
        # image) would otherwise see the tissue beside it.
        per_unit = bin_features(st_map.spots, st_map.grid, features, points=st_map.centres, **read)
        unit_features = standardise(per_unit[:, :, None], np.ones((len(st_map.centres), 1), dtype=bool))[:, :, 0].T
    else:
        maps = standardise(bin_features(st_map.spots, st_map.grid, features, **read), st_map.mask)
        unit_features = spot_features(maps, st_map.footprint, st_map.grid.index_of(st_map.centres))
    return ReferenceUnits(
        features=unit_features,
        values=at_own_depth(st_map.values, library_sizes(st_map.spots.counts)),
        centres=st_map.centres,
        pitch=st_map.pitch,
        groupings=pool_groups(
            st_map.centres, pitch=st_map.pitch, scale=scale, geometry=geometry, n_offsets=N_OFFSETS, seed=seed
        ),
    )


def _learned_on_references(request: TrainRequest, st_maps: list, config: HistologyConfig):
    """The learned encoders trained on the references (``None`` if too few units), applied to any slide alike."""
    from sr_spatial._logging import logger
    from sr_spatial.histology._learned import EncoderSettings, fit_learned_detail, fit_learned_on_references

    settings = EncoderSettings.of(config)
    training = {
        "seed": request.seed,
        "device": resolve_device(request.device),
        "show_progress_bar": request.show_progress_bar,
    }
    if len(st_maps) > 1:
        learned = fit_learned_on_references(st_maps, settings, **training)
    else:  # one reference: cross-fitted on its folds of groups, as a single slide is
        learned = fit_learned_detail(st_maps[0], settings, scale=request.scale, **training)
        # Applied to other slides, each is standardised by its own statistics, as with several references.
        learned = None if learned is None else replace(learned, input_mean=None, input_std=None)
    if learned is None:
        logger.info("Too few units to train the learned encoders on; the morphology features work alone.")
    return learned


def _fit_on_references(request: TrainRequest, config: HistologyConfig, extractor) -> HistologyModel:
    """A :class:`~sr_spatial.model.HistologyModel` fitted on the references' true within-pseudo-spot deviations."""
    import time

    from sr_spatial._logging import log_phase, logger
    from sr_spatial.core._reference import genes_of_request, target_geometry
    from sr_spatial.core._shrinkage import PRIOR_SD
    from sr_spatial.histology._reference import fit_on_references

    # "auto" leaves them off: training one encoder per reference doubles the fit's time for a gain that did not
    # carry between her2st sections (benchmarks/results/her2st_reference.md).
    use_learned = config.learned_encoder is True
    start = time.perf_counter()
    geometry = target_geometry(request.target, request.slide)
    genes = genes_of_request(request)
    st_maps, genes = _reference_maps(request, genes)
    px_per_bin = _read_px_per_bin(request, st_maps, extractor)
    units = [
        _reference_units(
            st_map,
            scale=request.scale,
            geometry=geometry,
            features=extractor,
            max_px_per_bin=px_per_bin,
            seed=request.seed + index,
            show_progress_bar=request.show_progress_bar,
        )
        for index, st_map in enumerate(st_maps)
    ]
    seconds = time.perf_counter() - start
    log_phase(
        "features",
        seconds,
        "Read %d references (%d units) in %.1f s%s.",
        len(units),
        sum(len(u.values) for u in units),
        seconds,
        "" if px_per_bin is None else f", their H&E at {px_per_bin} pixels per output bin",
    )
    learned = _learned_on_references(request, st_maps, config) if use_learned else None
    del st_maps
    predictor = fit_on_references(
        units, scale=request.scale, seed=request.seed, learned=None if learned is None else learned.heldout,
        show_progress_bar=request.show_progress_bar,
    )  # fmt: skip
    logger.info(
        "Fitted on %d references' units pooled into %s pseudo-spots (radius %.2f pitches): within-spot detail for %d "
        "of %d genes (median weight %.2f).",
        len(units),
        geometry.lattice,
        geometry.radius_ratio,
        int((predictor.weight > 0.05).sum()),
        len(genes),
        float(np.median(predictor.weight)),
    )
    return HistologyModel(
        genes,
        predictor,
        config=config,
        scale=request.scale,
        seed=request.seed,
        features_repr=repr(extractor),
        learned=learned,
        uses_learned_encoder=learned is not None,
        reference={
            "n_references": len(units),
            "prior_sd": PRIOR_SD,
            "lattice": geometry.lattice,
            "px_per_bin": px_per_bin,
        },
    )
