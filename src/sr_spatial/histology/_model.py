"""HistologyModel: the histology predictor of ``method="histology"`` as a model fitted once, saved, loaded, applied.

Fitting learns, from a slide's spots, a ridge from histology features to expression and per-gene weights of its
within-spot detail on held-out groups of spots (:mod:`sr_spatial.histology._regression`), optionally with learned
encoders (:mod:`sr_spatial.histology._learned`), and calibrates the spread (:mod:`sr_spatial.core._uncertainty`). The
fitted model holds nothing of the slide; applying it to a slide (the one it was fitted on or another) computes that
slide's features and caps the weights to what its measurement allows (:class:`HistologyDetail`).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from sr_spatial._logging import log_phase
from sr_spatial.core._saved import check_genes
from sr_spatial.core._shrinkage import log_guard
from sr_spatial.histology._apply import HistologyDetail, on_slide, spot_features
from sr_spatial.histology._config import HistologyConfig, resolve_histology_config
from sr_spatial.histology._io import load_histology, save_histology
from sr_spatial.histology._learned import (
    AUTO_MIN_SPOTS,
    EncoderSettings,
    LearnedDetail,
    fit_learned_detail,
    learned_maps,
    use_learned_encoder,
)
from sr_spatial.histology._reference import at_own_depth, bins_per_spot, guard, library_sizes, standardise
from sr_spatial.histology._regression import DetailModel, fit_detail_model
from sr_spatial.pp._stmap import render_whole

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import torch

    from sr_spatial.pp._stmap import STMap

logger = logging.getLogger("sr_spatial")

__all__ = ["HistologyModel", "fit_base", "fit_on_slide"]


class HistologyModel:
    """The histology predictor: measured spots plus the within-spot detail their H&E demonstrably predicts.

    Each bin takes its spot's measurement plus, per gene, a weighted sum of the within-spot deviations predicted
    by a ridge on histology features, by the neighbouring spots' cubic interpolation and (optionally) by learned
    encoders; the weights are fitted on held-out groups of spots, one level coarser than the output, and are 0
    where nothing predicts. Build it with :meth:`fit` (or :func:`sr_spatial.tl.train` with
    ``method="histology"``), apply it with :func:`sr_spatial.tl.superresolve` ``(model=...)``, keep it with
    :meth:`save` / :meth:`load`.

    Attributes
    ----------
    genes
        Genes it predicts, in order.
    config
        Its :class:`~sr_spatial.model.HistologyConfig`.
    scale
        The super-resolution factor it was fitted for.
    seed
        The seed of its fit.
    predictor
        The fitted ridge and per-gene weights and spread.
    learned
        The learned encoders (weights and input statistics), or ``None``.
    uses_learned_encoder
        Whether the fit decided to train learned encoders (they may still be absent on too few spots).
    reference
        For a model fitted on reference slides (:func:`sr_spatial.tl.train` with ``reference=True``): how many, and
        the prior of the guard that checks its detail on each target (:func:`~sr_spatial.histology._reference.guard`);
        ``None`` for a model fitted on a slide's own spots.
    """

    def __init__(
        self,
        genes: Sequence[str],
        predictor: DetailModel,
        *,
        config: HistologyConfig,
        scale: int,
        seed: int = 0,
        learned: LearnedDetail | None = None,
        uses_learned_encoder: bool = False,
        features_repr: str | None = None,
        reference: dict | None = None,
    ):
        self.genes = [str(g) for g in genes]
        self.predictor = predictor
        self.config = config
        self.scale = int(scale)
        self.seed = int(seed)
        self.learned = learned
        self.uses_learned_encoder = bool(uses_learned_encoder)
        self.features_repr = features_repr or str(config.to_dict()["features"])
        self.reference = None if reference is None else dict(reference)

    def __repr__(self) -> str:
        helped = int((self.predictor.weight > 0.05).sum())
        learned = f", {len(self.learned.encoders)} learned encoders" if self.learned is not None else ""
        source = "" if self.reference is None else f", fitted on {self.reference['n_references']} reference slides"
        return (
            f"HistologyModel({len(self.genes)} genes, scale={self.scale}, features={self.features_repr}, "
            f"detail for {helped} genes{learned}{source})"
        )

    # --- fit and apply -------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
        st_map: STMap,
        *,
        scale: int,
        config: str | HistologyConfig | dict = "base",
        seed: int = 0,
        image_um_per_px: float | None = None,
        device: str | torch.device = "cpu",
        show_progress_bar: bool = False,
    ) -> HistologyModel:
        """Fit the predictor on the spots of ``st_map`` (:func:`sr_spatial.pp.build_st_map`) for ``scale``.

        Parameters
        ----------
        st_map
            The slide, read at the output's ``scale``.
        scale
            Bins per spot pitch of the output.
        config
            A preset name (``"tiny"``, ``"base"``, ``"large"``), a :class:`~sr_spatial.model.HistologyConfig` or
            a dict.
        seed
            Seeds the folds of held-out groups and the learned encoders.
        image_um_per_px
            Micrometres per full-resolution H&E pixel, for image encoders as features.
        device
            Where the learned encoders train.
        show_progress_bar
            Show progress bars.

        Returns
        -------
        The fitted model.
        """
        return fit_on_slide(
            st_map,
            config=resolve_histology_config(config),  # fit_on_slide resolves "auto" features
            scale=scale,
            seed=seed,
            image_um_per_px=image_um_per_px,
            device=device,
            show_progress_bar=show_progress_bar,
        )[0]

    def apply(
        self,
        st_map: STMap,
        *,
        image_um_per_px: float | None = None,
        device: str | torch.device = "cpu",
        show_progress_bar: bool = False,
    ) -> tuple[HistologyDetail, dict]:
        """The predictor on the slide of ``st_map``: its features and the weights capped for its bins.

        ``st_map`` is rendered on its whole grid where it is not yet (:func:`~sr_spatial.pp._stmap.render_whole`).
        Returns the slide's :class:`HistologyDetail` and the record written to
        ``uns[key]["histology"]`` (see :func:`sr_spatial.tl.superresolve`).
        """
        check_genes(self.genes, st_map.genes)
        st_map = render_whole(st_map)
        start = time.perf_counter()
        read_at = None if self.reference is None else self.reference.get("px_per_bin")
        maps, extractor = _features(st_map, self.config, image_um_per_px, show_progress_bar, max_px_per_bin=read_at)
        own_px_per_bin = extractor.px_per_bin(st_map.grid.size)
        if read_at is not None and own_px_per_bin < read_at:
            logger.warning(
                "This slide's H&E gives %d pixels per output bin, coarser than the references were read at (%d): "
                "their features may not mean the same here. Train with `target=` this slide (and "
                "`target_image_key=`), which reads every slide as coarsely as the coarsest.",
                own_px_per_bin,
                read_at,
            )
        guarded = None
        if self.reference is not None:
            # Over the bins the spots pool, as the references' units were: glass in the margin would turn directions.
            maps = standardise(maps, st_map.footprint >= 0 if (st_map.footprint >= 0).any() else st_map.mask)
        per_spot = spot_features(maps, st_map.footprint, st_map.grid.index_of(st_map.centres))
        learned = None if self.learned is None else learned_maps(self.learned, st_map, device=device)
        if self.reference is not None:
            guarded = guard(
                self.predictor,
                per_spot,
                # In the units the references were fitted in: each slide at the depth of one output bin.
                at_own_depth(
                    st_map.values,
                    library_sizes(st_map.spots.counts),
                    units_per_measurement=bins_per_spot(st_map.footprint, len(st_map.values)),
                ),
                st_map.centres,
                pitch=st_map.pitch,
                scale=self.scale,
                prior_sd=self.reference["prior_sd"],
                learned_spots=None if learned is None else learned.spots,
            )
            log_guard(guarded)
        detail, record = self._on_slide(maps, per_spot, st_map, learned, extractor, guarded)
        seconds = time.perf_counter() - start
        log_phase("training", seconds, "Applied the histology predictor in %.1f s.", seconds)
        return detail, record

    def _on_slide(self, maps, per_spot, st_map, learned, extractor, guarded=None):
        """The slide's :class:`HistologyDetail` (weights capped for its bins, and guarded) and its ``uns`` record."""
        return on_slide(self.predictor, maps, per_spot, st_map, learned, extractor, guarded, self.reference)

    # --- persistence ---------------------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save the fitted model in a directory: ``config.json``, ``histology.npz`` and the learned encoders' weights.

        Parameters
        ----------
        path
            Directory to create (or an empty one).
        overwrite
            Replace the files of a model saved there before.

        Returns
        -------
        The directory.
        """
        return save_histology(self, path, overwrite=overwrite)

    @classmethod
    def load(cls, path: str | Path, *, genes: Sequence[str] | None = None) -> HistologyModel:
        """Load a model saved with :meth:`save`, checking its files, version and (with ``genes``) its genes.

        Returns
        -------
        The model.
        """
        model = cls(**load_histology(path))
        if genes is not None:
            check_genes(model.genes, genes)
        return model

    def check_genes(self, genes: Sequence[str]) -> None:
        """Raise a clear error unless ``genes`` are exactly the model's genes, in order."""
        check_genes(self.genes, genes)


def _features(
    st_map: STMap, config: HistologyConfig, image_um_per_px, show_progress_bar, extractor=None, max_px_per_bin=None
):
    """The slide's features per bin and their extractor (``extractor``, if already resolved from ``config``).

    They are read at most at ``max_px_per_bin`` pixels per bin (a reference model's resolution).
    """
    from sr_spatial.features import bin_features, resolve_features

    start = time.perf_counter()
    if extractor is None:
        extractor = resolve_features(config.features, image_um_per_px=image_um_per_px)
    maps = bin_features(
        st_map.spots, st_map.grid, extractor, max_px_per_bin=max_px_per_bin, show_progress_bar=show_progress_bar
    )
    seconds = time.perf_counter() - start
    log_phase("features", seconds, "Computed %d histology features per bin in %.1f s.", len(maps), seconds)
    return maps, extractor


def fit_base(
    st_map: STMap,
    *,
    features,
    scale: int,
    seed: int,
    image_um_per_px: float | None,
    show_progress_bar: bool,
    extractor=None,
) -> tuple[HistologyDetail, dict]:
    """The predictor a diffusion model with ``histology_base`` generates around, fitted on the slide.

    The histology predictor on ``features``, without a learned encoder, on the CPU (:func:`fit_on_slide`); returns
    its :class:`HistologyDetail` on the slide and its ``uns`` record. The tools hand it to the diffusion method
    (:data:`sr_spatial.diffusion._fit.BaseFitter`).
    """
    _, detail, record = fit_on_slide(
        st_map,
        config=HistologyConfig(features=features, learned_encoder=False),
        scale=scale,
        seed=seed,
        image_um_per_px=image_um_per_px,
        device="cpu",
        show_progress_bar=show_progress_bar,
        extractor=extractor,
    )
    return detail, record


def fit_on_slide(
    st_map: STMap,
    *,
    config: HistologyConfig,
    scale: int,
    seed: int,
    image_um_per_px: float | None,
    device: str | torch.device,
    show_progress_bar: bool,
    extractor=None,
) -> tuple[HistologyModel, HistologyDetail, dict]:
    """Fit a :class:`HistologyModel` on a slide and apply it there, computing the slide's features once.

    ``extractor`` is ``config.features`` already resolved (:func:`~sr_spatial.features.resolve_features`), so an
    image encoder checked before the slide was read is not loaded again. Returns the model, the slide's
    :class:`HistologyDetail` and its ``uns`` record.
    """
    config = config.for_references(False)
    st_map = render_whole(st_map)
    maps, extractor = _features(st_map, config, image_um_per_px, show_progress_bar, extractor)
    start = time.perf_counter()
    per_spot = spot_features(maps, st_map.footprint, st_map.grid.index_of(st_map.centres))
    n_spots = len(st_map.values)
    use_learned = use_learned_encoder(
        config.learned_encoder, n_spots=n_spots, grid_shape=st_map.grid.shape, px_per_bin=config.px_per_bin
    )
    if isinstance(config.learned_encoder, str) and use_learned:
        logger.info(
            "%d spots (at least %d): also cross-fitting the learned histology encoder; pass "
            "`learned_encoder=False` to skip it.",
            n_spots,
            AUTO_MIN_SPOTS,
        )
    elif isinstance(config.learned_encoder, str) and n_spots >= AUTO_MIN_SPOTS:
        logger.info(
            "The output grid (%d x %d bins) is too large for the learned histology encoder's whole-slide inputs; "
            "the morphology features work alone (`learned_encoder=True` forces it, at that memory cost).",
            *st_map.grid.shape,
        )
    learned = None
    if use_learned:
        learned = fit_learned_detail(
            st_map,
            EncoderSettings.of(config),
            scale=scale,
            seed=seed,
            device=device,
            show_progress_bar=show_progress_bar,
        )
        if learned is None:
            logger.info("Too few spots to cross-fit the learned encoder on; the morphology features work alone.")
    predictor = fit_detail_model(
        per_spot,
        st_map.values,
        st_map.centres,
        pitch=st_map.pitch,
        scale=scale,
        seed=seed,
        learned=None if learned is None else learned.heldout,
        show_progress_bar=show_progress_bar,
    )
    model = HistologyModel(
        st_map.genes,
        predictor,
        config=config,
        scale=scale,
        seed=seed,
        learned=learned,
        uses_learned_encoder=use_learned,
        features_repr=repr(extractor),
    )
    detail, record = model._on_slide(maps, per_spot, st_map, learned, extractor)
    seconds = time.perf_counter() - start
    log_phase("training", seconds, "Fitted the histology predictor in %.1f s.", seconds)
    return model, detail, record
