"""Fit a method's model on a slide, to keep it or apply it elsewhere (:func:`train`)."""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import replace
from typing import TYPE_CHECKING, Literal

from sr_spatial._docs import doc_params, doc_slide
from sr_spatial.core._method import TrainRequest
from sr_spatial.core._reference import about_reference
from sr_spatial.diffusion._fit import output_scene
from sr_spatial.tl import _checks
from sr_spatial.tl._methods import resolve_method
from sr_spatial.tl._options import SlideKeys

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    import torch
    from spatialdata import SpatialData

    from sr_spatial.model import DiffST, HistologyConfig, HistologyModel, ModelConfig

__all__ = ["output_scene", "train", "train_on_references", "train_request"]


@doc_params(doc_slide=doc_slide)
def train(
    sdata: SpatialData | Sequence[SpatialData],
    image_key: str | Sequence[str],
    *,
    method: str = "histology",
    target: SpatialData | None = None,
    target_image_key: str | None = None,
    table_key: str = "table",
    shapes_key: str | None = None,
    genes: Sequence[str] | None = None,
    n_top_genes: int = 50,
    scale: int = 4,
    config: str | ModelConfig | HistologyConfig | dict = "base",
    train_steps: int | None = None,
    device: str | torch.device = "auto",
    coordinate_system: str | None = None,
    stain: Literal["auto", "brightfield", "fluorescence"] = "auto",
    reference: bool = False,
    aggregate: int = 1,
    features: str | None = None,
    image_um_per_px: float | None = None,
    seed: int = 0,
    checkpoint_dir: str | Path | None = None,
    show_progress_bar: bool = True,
) -> DiffST | HistologyModel:
    """Fit a method's model on a slide, by scale transfer or on a high-resolution reference.

    ``method="histology"`` (default, as everywhere in sr_spatial) fits a :class:`~sr_spatial.model.HistologyModel`
    (the predictor :func:`sr_spatial.tl.superresolve` fits by default); ``method="diffusion"`` trains a
    :class:`~sr_spatial.model.DiffST`. Either can be saved, inspected and applied to this or another slide with
    ``superresolve(..., model=...)``.
    By default the slide's spots are pooled ``scale``-fold into pseudo-spots; the model learns to recover the
    measured spots from the pseudo-spots and the H&E, and is later applied to the measured spots to go
    ``scale``-fold finer (:func:`sr_spatial.tl.superresolve`). With ``reference=True`` the table holds
    high-resolution bins (a Visium HD level such as ``"square_016um"``, or Xenium transcripts binned with
    :func:`sr_spatial.pp.bin_transcripts`) and the model learns true pairs: Visium-like spots pooled from the
    bins (55 µm-wide disks on a hexagonal lattice ``scale`` bins apart, as Visium measures) to the bins
    themselves; apply it to Visium slides with ``superresolve(..., model=...)``. ``sdata`` is not changed.

    Parameters
    ----------
    {doc_slide}
    method
        ``"histology"`` (default) or ``"diffusion"``; the baselines have nothing to train.
    target
        With ``reference=True``: the slide the model will be applied to. The references' units are pooled into
        pseudo-spots of its geometry (lattice, spot radius over pitch, read off its shapes), and its genes must be
        among theirs. Default: Visium's geometry.
    target_image_key
        The target's H&E; default its only image, or the references' key where it has an image of that name.
        ``method="histology"`` reads every slide's H&E at the coarsest resolution among them (references and
        target), so features of a finely scanned reference mean what they mean on a coarser target.
    genes
        Genes to model (a name or a list of names); default: the ``n_top_genes`` variable genes detected in most
        spots (:func:`sr_spatial.pp.select_genes`); with references, chosen among the genes every slide (and the
        target) measures, ranked on the target.
    config
        The method's configuration: a preset (``"tiny"``, ``"base"``, ``"large"``), a
        :class:`~sr_spatial.model.HistologyConfig` (``"histology"``), a :class:`~sr_spatial.model.ModelConfig`
        (``"diffusion"``) or a dict.
    train_steps
        Optimiser steps of the denoiser; default from ``config``. The histology encoder's steps scale in
        proportion (``config.encoder_steps * train_steps / config.train_steps``), so a shorter run is shorter
        throughout.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), or a torch device.
    reference
        Treat the slides' spots or bins as finer truth (references) instead of the measurement to refine: a Visium
        HD level, binned Xenium transcripts, or legacy-ST or Visium spots at the output's scale. Choose ``scale`` as
        the target's spot pitch over the references' unit pitch (6 for 16 µm bins and Visium's 100 µm pitch), so
        that the model sees the histology at the resolution it will be applied at. Several references (one image
        key each) are pooled together; see ``target``.
    aggregate
        With ``reference=True``: pool each square of ``aggregate`` x ``aggregate`` of the references' bins into one
        unit (counts summed) before training, so bins finer than the output's bins are brought to their size and a
        Visium HD slide trains at whichever level it was binned: ``aggregate=3`` turns 8 µm bins into 24 µm units
        for a 25 µm output (a Visium target at ``scale=4``). ``scale`` is then the target's pitch over the units'
        (``aggregate`` times the bins' pitch). Units at the tissue's edge holding under half of their bins are left
        out. Default 1: the bins are the units.
    features
        Only for a configuration with ``histology_base=True``: the histology features of the predictor the model
        generates around, by name, ``"morphology"`` (default) or a timm model id as for
        :func:`sr_spatial.tl.superresolve`; stored as the configuration's ``base_features`` and used again
        wherever the model is applied. Models without a histology base read the H&E only through their own
        learned encoder, so they refuse ``features``.
    image_um_per_px
        Micrometres per full-resolution H&E pixel; needed when ``features`` is an image encoder.
    seed
        Seeds initialisation, pooling offsets and training.
    checkpoint_dir
        A directory to keep the training state in; an interrupted run called again with the same directory and
        arguments goes on from its last checkpoint (every 100 steps) to the same model as an uninterrupted run.
    show_progress_bar
        Show a tqdm bar.

    Returns
    -------
    The trained model; keep it with its ``save`` (:meth:`~sr_spatial.model.DiffST.save`,
    :meth:`~sr_spatial.model.HistologyModel.save`).
    """
    arguments = dict(locals())
    method = arguments.pop("method")
    return resolve_method(method, None).train(train_request(**arguments))


def train_request(
    sdata, image_key, *, target, target_image_key, table_key, shapes_key, genes, n_top_genes, scale, config,
    train_steps, device, coordinate_system, stain, reference, aggregate, features, image_um_per_px, seed,
    checkpoint_dir, show_progress_bar,
) -> TrainRequest:  # fmt: skip
    """:func:`train`'s arguments, every one, checked before any work: the :class:`TrainRequest` a method trains on."""
    slides, image_keys = _checks.slides_and_keys(sdata, image_key)
    where = SlideKeys(table_key=table_key, shapes_key=shapes_key, coordinate_system=coordinate_system, stain=stain)
    for index, (slide, key) in enumerate(zip(slides, image_keys, strict=True)):
        with about_reference(index, slide) if len(slides) > 1 else nullcontext():
            _checks.check_call(
                slide, key, **vars(where), image_um_per_px=image_um_per_px, checkpoint_dir=checkpoint_dir,
                reference=reference, show_progress_bar=show_progress_bar,
            )  # fmt: skip
    _checks.check_scale(scale)
    genes = _checks.normalise_genes(genes)
    _checks.check_arguments(n_top_genes=n_top_genes, seed=seed, train_steps=train_steps, device=device)
    _checks.check_aggregate(aggregate, reference=reference)
    if target is not None and not reference:
        msg = "`target` is the slide a model trained on references will be applied to; pass `reference=True` too."
        raise ValueError(msg)
    if target_image_key is not None and (target is None or target_image_key not in target.images):
        available = [] if target is None else sorted(target.images.keys())
        msg = f"`target_image_key={target_image_key!r}` must name an image of `target`; its images: {available}."
        raise KeyError(msg)
    request = TrainRequest(
        slides=slides,
        image_keys=image_keys,
        target=target,
        target_image_key=target_image_key,
        aggregate=aggregate,
        slide=where,
        genes=genes,
        n_top_genes=n_top_genes,
        scale=scale,
        config=config,
        train_steps=train_steps,
        device=device,
        reference=reference,
        features=features,
        image_um_per_px=image_um_per_px,
        seed=seed,
        checkpoint_dir=checkpoint_dir,
        show_progress_bar=show_progress_bar,
    )
    return request


def train_on_references(
    sdata: SpatialData, image_key: str, *, method, genes, n_top_genes, scale, seed, config, slide, options, run, spots
):
    """The model ``superresolve(..., reference=...)`` applies: ``method`` trained on the references for ``sdata``.

    ``spots`` are ``sdata``'s spots as the call reads them: the training takes the target's grid from them rather than
    reading the slide again.
    """
    references = options.reference if isinstance(options.reference, list | tuple) else [options.reference]
    keys = options.reference_image_key or image_key
    request = train_request(
        list(references), keys, target=sdata, target_image_key=image_key, reference=True, genes=genes,
        n_top_genes=n_top_genes,
        scale=scale, config=config, train_steps=options.train_steps, device=run.device, features=options.features,
        image_um_per_px=options.image_um_per_px, seed=seed, show_progress_bar=run.show_progress_bar,
        table_key=slide.table_key, stain=slide.stain,
        shapes_key=None, coordinate_system=None,  # the references' own shapes and coordinate systems
        aggregate=options.reference_aggregate, checkpoint_dir=None,
    )  # fmt: skip
    return resolve_method(method, None).train(replace(request, target_spots=spots))
