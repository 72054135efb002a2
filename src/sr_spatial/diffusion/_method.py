"""``method="diffusion"``: the Diff-ST diffusion model's draws, projected onto the spots.

Their spread is the uncertainty. Trains a :class:`~sr_spatial.model.DiffST` on the slide by scale transfer, or
applies a trained one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING

import numpy as np

from sr_spatial._adapter._read import read_histology
from sr_spatial._logging import logger
from sr_spatial.core._consistency import project_to_spots, residual_sums
from sr_spatial.core._method import BlockMethod, Call, Fitted, Method, TrainRequest
from sr_spatial.core._scene import Scene
from sr_spatial.core._shrinkage import log_guard
from sr_spatial.core._uncertainty import MIN_SD, finer_spread_factor, finer_variance_ratio
from sr_spatial.diffusion._config import check_sampling_steps, resolve_config
from sr_spatial.diffusion._fit import check_training_scale, train_diffusion, train_on_map
from sr_spatial.diffusion._model import DiffST
from sr_spatial.diffusion._reference import train_on_references

if TYPE_CHECKING:
    from sr_spatial.diffusion._fit import BaseFitter, BasePredictor

__all__ = ["DiffusionMethod"]


@dataclass(frozen=True)
class DiffusionBlocks(BlockMethod):
    """Sampling one block: the draws and their mean projected onto the spots, the spread calibrated."""

    n_samples: int
    sampling_steps: int | None
    seed: int
    px_per_bin: int
    spread_factor: np.ndarray
    histology: BasePredictor | None = None
    #: Per gene, the share of the generated detail kept (a reference-trained model's guard); ``None``: all of it.
    detail_factor: np.ndarray | None = None

    @property
    def n_draws(self) -> int:
        return self.n_samples

    def describe(self) -> str:
        return f"Sampling {self.n_samples} draws"

    def maps(self, view, model, *, show_progress_bar):
        values = view.job.values
        owner = view.owner()
        nearest, smooth, mask, footprint = view.nearest, view.smooth, view.mask, view.footprint
        # A model trained around the histology predictor gets that predictor's map of the block as its base.
        base = None
        if self.histology is not None:
            base = self.histology.block_maps(view.block.region, nearest, smooth, owner, mask)[0]
        scene = Scene(
            nearest=nearest,
            smooth=smooth,
            mask=mask,
            histology=read_histology(view.job.spots, view.grid, px_per_bin=self.px_per_bin),
            px_per_bin=self.px_per_bin,
            owner=owner,
            base=base,
        )
        block = view.block
        samples, raw_mean = model.sample(
            scene,
            n_samples=self.n_samples,
            steps=self.sampling_steps,
            seed=self.seed,
            offset=(block.pad_top, block.pad_left),
            return_mean=True,
            show_progress_bar=show_progress_bar,
        )
        if self.detail_factor is not None:
            # Shrunk toward the measurement where the target's own spots contradict the references (the guard).
            raw_mean = nearest + self.detail_factor[:, None, None] * (raw_mean - nearest)
        residual_before = residual_sums(raw_mean, footprint, values, spots=view.in_block)
        # The model's posterior mean (its residual shrunk toward the base where it predicts little), projected
        # like each draw; the spread of the projected draws is the uncertainty.
        mean = project_to_spots(raw_mean, footprint, values)
        # The projected draws' spread, calibrated on held-out bins at training (see fit_spread_scale), carried
        # from the spots it was calibrated on to the output's finer bins (finer_spread_factor).
        scale = model.network.spread_scale.cpu().numpy()[:, None, None] * self.spread_factor[:, None, None]
        # Projected in place: the raw draws are not needed again, and a block's draws are its largest array.
        spread = project_to_spots(samples, footprint, values, out=samples).std(axis=0) * scale
        std = (np.maximum(spread, MIN_SD) * mask).astype(np.float32)
        return mean, std, residual_before


class DiffusionMethod(Method):
    """Train (or apply) the diffusion model; see :class:`~sr_spatial.model.DiffST`."""

    name = "diffusion"
    model_class = DiffST
    samples = True
    #: The histology base's features resolved by :meth:`check`, for a model with ``histology_base``.
    base_extractor = None
    #: Fits the predictor a model with ``histology_base`` generates around; the tools' registry gives the histology
    #: method's, so the two methods' packages never import each other.
    fit_base: BaseFitter | None = None

    def _config(self, call: Call):
        return call.model.config if call.model is not None else resolve_config(call.config)

    def check(self, call: Call) -> None:
        super().check(call)
        from sr_spatial.features import resolve_features

        config = self._config(call)
        check_sampling_steps(call.options.sampling_steps, config)
        if config.histology_base:
            # The predictor's features must be computable here (an encoder needs the pixel size) before any work;
            # fit uses them as resolved.
            self.base_extractor = resolve_features(config.base_features, image_um_per_px=call.options.image_um_per_px)
        if call.model is None:
            where = {k: v for k, v in asdict(call.slide).items() if k != "stain"}  # spots only: no pixel is read
            check_training_scale(call.sdata, call.image_key, scale=call.scale, **where)

    def fit(self, st_map, renderer, call: Call) -> Fitted:
        from sr_spatial.pp._stmap import render_whole

        options = call.options
        model = call.model
        if model is None or model.config.histology_base:
            # Training and the histology base read the whole slide, rendered once; applying a model alone renders
            # block by block.
            st_map = render_whole(st_map, renderer)
        if model is None:
            model = train_on_map(
                st_map,
                scale=call.scale,
                config=self._config(call),
                train_steps=options.train_steps,
                device=call.device,
                seed=call.seed,
                show_progress_bar=call.show_progress_bar,
                image_um_per_px=options.image_um_per_px,
                fit_base=self.fit_base,
            )
        else:
            model.check_genes(st_map.genes)
            if model.scale != call.scale:
                logger.warning(
                    "The model was trained for scale %d and is applied at scale %d.", model.scale, call.scale
                )
        uns, histology = {}, None
        if model.config.histology_base:
            # The model generates the residual around the histology predictor: fitted here, on this slide's spots.
            histology, uns["histology"] = self.fit_base(
                st_map,
                features=model.config.base_features,
                scale=call.scale,
                seed=call.seed,
                image_um_per_px=options.image_um_per_px,
                show_progress_bar=call.show_progress_bar,
                extractor=self.base_extractor,
            )
        # The draws' spread was calibrated on spots around pseudo-spots; the output's bins vary more.
        finer_ratio = finer_variance_ratio(st_map.values, st_map.centres, pitch=st_map.pitch, scale=max(call.scale, 2))
        spread_factor = finer_spread_factor(model.network.spread_error_ratio.cpu().numpy(), finer_ratio)
        blocks = DiffusionBlocks(
            n_samples=int(options.n_samples),
            sampling_steps=options.sampling_steps,
            seed=call.seed,
            px_per_bin=model.config.px_per_bin,
            spread_factor=spread_factor.astype(np.float32),
            histology=histology,
        )
        if model.trained_on_references:
            guarded = diffusion_guard(model, st_map, call)
            blocks = replace(
                blocks,
                detail_factor=guarded["factor"].astype(np.float32),
                spread_factor=(blocks.spread_factor * guarded["spread_factor"]).astype(np.float32),
            )
            uns["guard"] = {name: value.astype(np.float32) for name, value in guarded.items()}
            log_guard(guarded)
        # Per gene, the factor bringing the draws' spread to a calibrated standard deviation (training time).
        uns["coverage_scale"] = model.network.spread_scale.cpu().numpy().astype(np.float32)
        uns["finer_ratio"] = float(finer_ratio)
        uns["finer_spread_factor"] = spread_factor.astype(np.float32)
        return Fitted(blocks=blocks, model=model, context=model.config.tile_overlap, uns=uns)

    def train(self, request: TrainRequest) -> DiffST:
        if request.reference:
            return train_on_references(request)
        if len(request.slides) != 1:
            msg = "Several slides are references: pass `reference=True` (and `target=`, the slide to apply it to)."
            raise ValueError(msg)
        return train_diffusion(
            request.slides[0],
            request.image_keys[0],
            **request.where(),
            scale=request.scale,
            config=request.config,
            train_steps=request.train_steps,
            device=request.device,
            features=request.features,
            image_um_per_px=request.image_um_per_px,
            seed=request.seed,
            checkpoint_dir=request.checkpoint_dir,
            show_progress_bar=request.show_progress_bar,
            fit_base=self.fit_base,
        )


def diffusion_guard(model: DiffST, st_map, call: Call, *, n_samples: int = 2) -> dict[str, np.ndarray]:
    """Per gene, how far the target's own spots confirm a reference-trained model's detail (factor in [0, 1]).

    The target's spots are pooled ``scale``-fold as in scale transfer (one pooling); the model generates the spots
    from the pseudo-spots, and the deviations of its mean from each pseudo-spot are regressed on the measured ones
    (:func:`~sr_spatial.core._shrinkage.guard_slopes`). The same draws check the spread: ``spread_factor``
    (:func:`_target_spread_factor`) rescales it to how the target's spots scatter.
    """
    from sr_spatial.core._groups import deviation_from_group, lattice_groups
    from sr_spatial.core._shrinkage import guard_slopes
    from sr_spatial.diffusion._fit import scale_transfer_scenes

    scale = max(int(call.scale), 2)
    try:
        scene = scale_transfer_scenes(st_map, scale=scale, px_per_bin=model.config.px_per_bin, n_offsets=1, seed=0)[0]
    except ValueError:  # too few spots to pool: nothing to check on, the references are trusted
        ones = np.ones(len(model.genes))
        return {
            "factor": ones,
            "slope": ones,
            "slope_se": np.full_like(ones, np.inf),
            "n_groups": 0 * ones,
            "spread_factor": ones,
        }
    draws, mean = model.sample(
        scene, n_samples=n_samples, seed=call.seed, return_mean=True, show_progress_bar=call.show_progress_bar
    )
    from sr_spatial.pp._lattice import make_grid

    grid = make_grid(st_map.centres, bin_size=st_map.pitch, pitch=st_map.pitch)
    rows, cols = grid.index_of(st_map.centres).T
    predicted = mean[:, rows, cols].T.astype(np.float64)
    group = lattice_groups(st_map.centres, side=scale * st_map.pitch)
    groups = int(group.max()) + 1
    multi = np.bincount(group, minlength=groups)[group] >= 2
    detail = deviation_from_group(predicted, group, groups)[multi]
    measured = deviation_from_group(st_map.values.astype(np.float64), group, groups)[multi]
    n_groups = int((np.bincount(group, minlength=groups) >= 2).sum())
    guarded = guard_slopes(detail, measured, n_groups=n_groups)
    guarded["spread_factor"] = _target_spread_factor(
        model, draws[:, :, rows, cols], group, multi, measured - guarded["factor"] * detail
    )
    return guarded


def _target_spread_factor(model: DiffST, draws, group, multi, residual) -> np.ndarray:
    """Per gene (one value for the slide), how far the target's spots scatter beyond the spread the model predicts.

    ``draws`` are the model's draws at the target's spots ``(n_samples, n_genes, n_spots)``, generated from the spots
    pooled one level coarser; ``residual`` the measured deviations from those pools around the guarded detail at
    the spots of ``multi``. Each draw is taken relative to its pool, as the output's draws are projected onto the
    measurement, and scaled by the calibration fitted on the references. The ratio of the residuals' mean square to
    the calibrated draws' variance, its median over genes, is the square of the factor where it is above 1: a target
    noisier than the references (a shallower slide) widens the spread. It never narrows it: at this coarser level the
    draws scatter more than at the output's (on her2st C2 a two-sided factor cut the 90 % interval's coverage from
    0.98 to 0.78), so a ratio below 1 does not carry to the output.
    """
    from sr_spatial.core._groups import deviation_from_group

    n_genes = draws.shape[1]
    if draws.shape[0] < 2 or not multi.any():
        return np.ones(n_genes)
    groups = int(group.max()) + 1
    relative = np.stack([deviation_from_group(d.T.astype(np.float64), group, groups)[multi] for d in draws])
    spread_scale = model.network.spread_scale.cpu().numpy().astype(np.float64)
    expected = relative.var(axis=0, ddof=1).mean(axis=0) * spread_scale**2
    observed = np.mean(residual**2, axis=0)
    usable = expected > 1e-12
    if not usable.any():
        return np.ones(n_genes)
    return np.full(n_genes, np.sqrt(max(1.0, float(np.median(observed[usable] / expected[usable])))))
