"""Super-resolve a slide and write the result back into its SpatialData: one short pipeline over the methods.

Check the call, read the slide, fit or load the method (:mod:`sr_spatial.tl._methods`), run the blocks, write
(:mod:`sr_spatial.tl._pipeline`). The module is long only for the function's documentation.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from sr_spatial._adapter._read import read_spots, resolve_table_key, table_genes
from sr_spatial._logging import hide_sharding_notice, log_phase, logger
from sr_spatial.pp._stmap import map_of_spots
from sr_spatial.tl._blocks import BlockJob, block_halo
from sr_spatial.tl._methods import Call, resolve_method, resolve_model
from sr_spatial.tl._options import group_options
from sr_spatial.tl._pipeline import (
    check_call,
    match_model_genes,
    open_sink,
    record_params,
    resolve_scale,
    run_blocks,
    write_output,
)
from sr_spatial.tl._train import train_on_references

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from spatialdata import SpatialData

    from sr_spatial._adapter._elements import SpotData
    from sr_spatial.model import DiffST, HistologyConfig, HistologyModel, ModelConfig
    from sr_spatial.tl._options import MethodOptions, RunOptions, SlideKeys

__all__ = ["superresolve"]


def _read_spots(sdata: SpatialData, image_key: str, *, where) -> SpotData:
    """The slide's spots, counts and H&E, read once per call."""
    return read_spots(
        sdata,
        image_key,
        table_key=where.table_key,
        shapes_key=where.shapes_key,
        coordinate_system=where.coordinate_system,
        stain=where.stain,
    )


def _read_slide(
    sdata: SpatialData,
    image_key: str,
    *,
    where,
    genes,
    n_top_genes: int,
    scale: int,
    start: float,
    spots: SpotData | None = None,
):
    """The slide's spots on the output grid (not rendered), logged with the time since ``start``.

    ``spots`` are the slide's spots where the call has read them already (to train on references for them).
    """
    if spots is None:
        spots = _read_spots(sdata, image_key, where=where)
    st_map = map_of_spots(spots, genes=genes, n_top_genes=n_top_genes, scale=scale, render=False)
    seconds = time.perf_counter() - start
    log_phase(
        "reading",
        seconds,
        "Read %d spots x %d genes in %.1f s; the output grid has %d x %d bins.",
        len(st_map.values),
        len(st_map.genes),
        seconds,
        *st_map.grid.shape,
    )
    return st_map


def _log_written(output, *, key: str, start: float) -> None:
    """The closing log line: what was super-resolved, in how long, and the elements written."""
    logger.info(
        "Super-resolved %d genes onto %d bins in %.1f s; wrote images %r, %r, shapes %r and table %r.",
        len(output.genes),
        int(output.mask.sum()),
        time.perf_counter() - start,
        key,
        f"{key}_std",
        f"{key}_bins",
        f"{key}_table",
    )


def superresolve(
    sdata: SpatialData,
    image_key: str,
    *,
    genes: Sequence[str] | None = None,
    n_top_genes: int = 50,
    scale: int | None = None,
    method: str | None = None,
    model: HistologyModel | DiffST | str | Path | None = None,
    config: str | HistologyConfig | ModelConfig | dict = "base",
    key_added: str | None = None,
    overwrite: bool = False,
    seed: int = 0,
    slide: SlideKeys | dict | None = None,
    options: MethodOptions | dict | None = None,
    run: RunOptions | dict | None = None,
    **kwargs: Any,
) -> SpatialData | None:
    """Super-resolve spot expression guided by the H&E, and write it back into ``sdata``.

    Reads the spots, their raw counts and the H&E from ``sdata``, fits the method on the slide (or applies the
    fitted ``model``), computes maps on bins ``scale`` times finer than the spot pitch, block by block, projects
    them so the bins average exactly to each measured spot, and writes the mean and a calibrated standard
    deviation back. Expression is log-normalised (:func:`sr_spatial.pp.normalize`). If anything fails, ``sdata``
    is left as it was.

    Parameters
    ----------
    sdata
        The slide, e.g. from :func:`spatialdata_io.visium`.
    image_key
        H&E image element; the grid of bins lives in its full-resolution pixel space.
    genes
        Genes to super-resolve (a name or a list of names); default: a loaded model's genes, else the
        ``n_top_genes`` variable genes detected in most spots (:func:`sr_spatial.pp.select_genes`). Where a study
        has its genes (ERBB2 on a HER2+ section), pass them. With a model, genes are matched by name (the table may
        hold more genes or another order) and ``genes`` may pick some of the model's genes; only those are
        computed by a histology model. A histology model some of whose genes the table lacks is applied to the genes
        they share, with a warning; a diffusion model needs all its genes (else a :class:`KeyError` lists the
        missing ones before any work).
    n_top_genes
        Without ``genes`` or a model: how many genes to take (:func:`sr_spatial.pp.select_genes`).
    scale
        Bins per spot pitch along each axis (4 turns Visium's 100 µm pitch into 25 µm bins); default: a model's own
        scale, else 4. A model is applied only at the scale it was trained for.
    method
        ``"histology"`` (default without ``model``, or with a :class:`~sr_spatial.model.HistologyModel`): each bin takes
        its spot's measurement plus the within-spot detail a ridge on histology ``features`` predicts, weighted per gene
        by how well it predicts held-out spots (weight 0, i.e. the measurement itself, where the H&E does not help); the
        spread is calibrated on held-out spots. ``"diffusion"`` (default with a :class:`~sr_spatial.model.DiffST`): the
        diffusion model's draws, whose spread is the uncertainty. The baselines ``"bicubic"`` (cubic interpolation of
        the spots) and ``"nearest"`` (each bin takes its nearest spot) are written in the same layout for comparison. On
        real sections ``"histology"`` is never below ``"nearest"`` and ``"diffusion"`` is; on the synthetic demo, whose
        expression is drawn from its H&E, ``"diffusion"`` scores highest (:doc:`/benchmarks`).
    model
        A fitted :class:`~sr_spatial.model.HistologyModel` or trained :class:`~sr_spatial.model.DiffST`, or the
        folder of a saved one (:func:`sr_spatial.model.load`); the method follows from it, and a ``method`` that
        cannot use it is refused. Default: fit the method on this slide (see :func:`sr_spatial.tl.train`).
    config
        The method's configuration when fitting here: a preset ``"tiny"`` (seconds, for tests), ``"base"`` or
        ``"large"``, or a :class:`~sr_spatial.model.HistologyConfig` (``"histology"``) /
        :class:`~sr_spatial.model.ModelConfig` (``"diffusion"``).
    key_added
        Name of the outputs; default ``f"{image_key}_superres"``.
    overwrite
        Replace outputs of an earlier call with the same ``key_added``; elements sr_spatial did not write (the
        H&E, the counts) are never replaced.
    seed
        Seeds training and sampling; the same seed gives the same result on the same device.
    slide
        Where the data is besides the image, and how to read it: a :class:`~sr_spatial.tl.SlideKeys` or a dict of its
        fields (``table_key``, ``shapes_key``, ``coordinate_system``, ``stain``).
    options
        How the method fits and computes: a :class:`~sr_spatial.tl.MethodOptions` or a dict of its fields
        (``features``, ``image_um_per_px``, ``learned_encoder``, ``train_steps``, ``n_samples``,
        ``sampling_steps``, ``reference``, ``reference_image_key``, ``reference_aggregate``).
    run
        How the call runs and writes: a :class:`~sr_spatial.tl.RunOptions` or a dict of its fields (``device``,
        ``block_bins``, ``client``, ``image_store``, ``inplace``, ``quantiles``, ``show_progress_bar``).
    **kwargs
        Any field of ``slide``, ``options`` or ``run`` by its own name, e.g. ``table_key="counts"`` or
        ``show_progress_bar=False``; described below.

    Other Parameters
    ----------------
    table_key
        Table of raw counts that annotates the spots (default ``"table"``).
    shapes_key
        Spots (circles or square bins); default: the shapes the table annotates.
    coordinate_system
        Coordinate system shared by image and spots; default: the first they share.
    stain
        How the image is read: ``"brightfield"`` (H&E), ``"fluorescence"`` (read inverted) or ``"auto"`` (default:
        decided from the tissue against the glass around it, with a warning when it cannot tell).
    features
        For ``"histology"``: ``"morphology"`` (the configuration's default) (stain, nuclei and texture statistics at
        several scales, offline; :class:`~sr_spatial.features.MorphologyFeatures`), a timm model id (e.g.
        ``"hf-hub:MahmoodLab/uni"``, downloaded with its pretrained weights), a torch module or callable mapping image
        patches to embeddings, or any :class:`~sr_spatial.features.HistologyFeatures`. Features are cached in memory, so
        a second call on the same slide and grid does not recompute them.
    image_um_per_px
        Micrometres per full-resolution H&E pixel; needed by image encoders, which read patches at their own
        magnification.
    learned_encoder
        For ``"histology"``: also train small convolutional encoders on this slide's spots (two, each on half of the
        spots, so every spot is predicted by one that never saw it) and add their within-spot detail as a third
        predictor, weighted per gene on held-out spots like the ridge's. It tells cell types apart where the morphology
        features only average what a bin holds: on the demo r 0.361 -> 0.402, on a synthetic Visium-size slide 0.449 ->
        0.466, on her2st level (:doc:`/benchmarks`), and costs the encoder's training (the configuration's
        ``encoder_steps`` twice; about 30 s on a small slide, 70 s on a whole Visium slide, on 2 CPU cores). ``"auto"``
        (default) turns it on for slides of at least 1,000 spots, where there are labels enough to learn from and the
        training is a small share of the run, unless the output grid is so large (a Visium HD slide) that the encoders'
        whole-slide inputs would not fit in about a GiB; ``True`` or ``False`` decide it.
    train_steps
        Optimiser steps when fitting here: the diffusion model's denoiser (its histology encoder's steps scale in
        proportion, ``config.encoder_steps * train_steps / config.train_steps``), or each learned encoder of
        ``"histology"``. Default from ``config``.
    n_samples
        Diffusion draws; their spread is the uncertainty. The default 8 is where the posterior mean's accuracy
        levels off on the demo (``benchmarks/results/sampling_curve.md``).
    sampling_steps
        DDIM steps; default from the model's configuration.
    reference
        Reference slides with finer truth (a SpatialData or a list): the method is first trained on them for this
        slide, as ``sr.tl.train(reference, image_key=..., reference=True, target=sdata, method=method, ...)`` does,
        then applied. Not with ``model=``.
    reference_image_key
        The references' image, one key or one per reference; default: ``image_key``.
    reference_aggregate
        The references' bins pooled into one unit along each axis, counts summed (``aggregate`` of
        :func:`sr_spatial.tl.train`): 3 for 8 µm Visium HD bins and a 25 µm output (``scale=4`` on Visium).
        Default 1: the bins are the units.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), or a torch device.
    block_bins
        The output grid is computed in square blocks of at most this many bins a side (each with a margin of
        context), reading only the part of the H&E under each block, so memory is bounded on large slides.
        Default: as large as keeps the draws of a block near 256 MiB (at most 256 bins); a typical Visium
        slide at scale 4 is one block. Smaller blocks use less memory and take longer
        (``benchmarks/results/memory.md``).
    image_store
        A zarr store (a folder path, or a writable :mod:`zarr` store) that the super-resolved images are
        written into block by block; the images in ``sdata`` then read lazily from it as dask arrays, so they
        are never held in memory whole. Default: in memory. The images go into the group ``<key_added>/<n>`` of
        the store, so calls with other keys share it; a folder or store holding data sr_spatial did not write
        (above all the slide's own zarr store) is refused, and one holding images of ``key_added`` is replaced
        only with ``overwrite=True``.
    client
        A :class:`dask.distributed.Client` to run the blocks on, one model copy per worker (on the worker's
        GPU where it has one); ``"auto"`` uses dask's default client if one is running; ``None`` runs here.
        The result equals that of the single-process path up to floating-point rounding.
    inplace
        Write into ``sdata``; otherwise return a new SpatialData holding only the outputs.
    quantiles
        Also write these quantiles of each bin's predictive distribution (normal, with the reported mean and
        standard deviation, clipped at 0) as table layers, e.g. ``(0.05, 0.95)`` for a 90 % interval.
    show_progress_bar
        Show tqdm bars for training and sampling.


    Returns
    -------
    ``None`` if ``inplace``, else a SpatialData with the elements below. Written (``key = key_added``):

    - ``sdata.images[key]``: ``(c=genes, y, x)`` posterior-mean expression per bin in log1p counts per 10,000
      (``params["units"]``; ``np.expm1`` of a spot's bins averages to the spot's counts per 10,000), NaN outside
      the tissue (drawn transparent over the H&E), transformed to overlay ``image_key``.
    - ``sdata.images[f"{key}_std"]``: calibrated standard deviation per bin (diffusion: the spread of the
      projected draws times a per-gene factor fitted at training; never below 0.05), 0 for the baselines; NaN
      outside the tissue. In the same log units; with ``"histology"`` it grows at spots shallower than the
      slide's median spot by their extra counting noise, and ``uns[key]["histology"]["low_depth_spots"]`` counts
      the spots below 10 % of the median depth (warned about).
    - ``sdata.shapes[f"{key}_bins"]``: one square per bin in the tissue.
    - ``sdata.tables[f"{key}_table"]``: one observation per bin, annotating the bins; ``X`` (mean), ``layers["std"]``,
      ``obs[["array_row", "array_col"]]``, ``obsm["spatial"]`` (full-resolution pixels), ``uns["spatial"]`` (for
      :func:`squidpy.pl.spatial_scatter`) and ``uns[key]`` with ``"params"`` (this call), the bin size and spot pitch in
      image pixels, and the spot-consistency residual before and after projection; with ``method="histology"`` (or a
      model trained with ``histology_base``, whose base it describes) also ``uns[key]["histology"]``: the features used
      and, per gene, the detail ``weight`` (0: the measurement itself), the ``interpolation_weight`` of the neighbouring
      spots' cubic interpolation, the ``detail_cap`` already applied to ``weight`` (below 1 where the detail swells from
      spots to bins), the histology detail's held-out correlation ``heldout_r``, the typical calibrated ``std`` and its
      ``coverage_scale``, and with learned encoders the learned encoder's ``learned_weight`` (after its
      ``learned_detail_cap``), and ``params["learned_encoder"]`` says whether they were used; with
      ``method="diffusion"``, ``uns[key]["coverage_scale"]``: per gene, the factor on the projected draws' spread fitted
      on held-out bins at training so that the reported ``std`` is calibrated, ``uns[key]["finer_ratio"]``, how much
      more the measurement varies at the output's bins than at the spots it was calibrated on, and
      ``uns[key]["finer_spread_factor"]``: per gene, the factor (at least 1) that carries the calibrated spread to those
      bins (1 for a model trained on a reference).
    - ``layers[f"q{q}"]`` of that table for each of ``quantiles`` (e.g. ``"q0.05"``), if asked for.

    With ``image_store``, the two images are dask arrays over its arrays ``<key>/<n>/mean`` and ``.../std``.
    The table's ``uns["sr_spatial"]`` records the elements written, which a later ``overwrite=True`` may replace.
    """
    start = time.perf_counter()
    asked_slide, opts, run = group_options("superresolve", slide=slide, options=options, run=run, flat=kwargs)
    # The slide's only table where the default names none; references keep the keys as asked (each their own).
    where = replace(asked_slide, table_key=resolve_table_key(sdata, asked_slide.table_key))
    asked_scale = scale
    genes, key, client = check_call(
        sdata, image_key, genes=genes, n_top_genes=n_top_genes, scale=4 if scale is None else scale, seed=seed,
        key_added=key_added, overwrite=overwrite, slide=where, options=opts, run=run,
    )  # fmt: skip
    scale = 4 if scale is None else scale
    asked = genes
    read_from = start
    spots = None
    if opts.reference is None and opts.reference_aggregate != 1:
        msg = "`reference_aggregate` pools the references' bins into units; pass `reference=` too, or drop it."
        raise ValueError(msg)
    if opts.reference is not None:
        if model is not None:
            msg = "Pass either `model=` or `reference=` (which trains the model for this slide), not both."
            raise ValueError(msg)
        # Read once: the training takes the slide's grid from these spots, which are then super-resolved.
        spots = _read_spots(sdata, image_key, where=where)
        model = train_on_references(
            sdata, image_key, method=resolve_method(method, None).name, genes=genes, n_top_genes=n_top_genes,
            scale=scale, seed=seed, config=config, slide=asked_slide, options=opts, run=run, spots=spots,
        )  # fmt: skip
        opts = replace(opts, features=None, learned_encoder=None)  # spent on the model just trained
        read_from = time.perf_counter()  # "Read ... in N s" times the reading, not the training before it
    fitted_model = resolve_model(model, device=run.device)
    chosen = resolve_method(method, fitted_model)
    requested = None
    if fitted_model is not None:
        scale = resolve_scale(asked_scale if opts.reference is None else scale, fitted_model)
        fitted_model, requested = match_model_genes(
            fitted_model, genes, table_genes(sdata, where.table_key), where.table_key
        )
        genes = fitted_model.genes
    call = Call(
        sdata=sdata,
        image_key=image_key,
        slide=where,
        options=opts,
        scale=scale,
        seed=seed,
        device=run.device,
        config=config,
        model=fitted_model,
        show_progress_bar=run.show_progress_bar,
    )
    chosen.check(call)
    params = record_params(
        image_key=image_key, slide=where, options=opts, run=run, method=chosen.name, model=model, config=config,
        key=key, genes=asked, n_top_genes=n_top_genes, scale=scale, seed=seed,
    )  # fmt: skip

    st_map = _read_slide(sdata, image_key, where=where, genes=genes, n_top_genes=n_top_genes, scale=scale,
                         start=read_from, spots=spots)  # fmt: skip

    job = BlockJob.from_map(st_map)
    fitted = chosen.fit(st_map, job.renderer, call)
    params.update(fitted.params)
    job.method = fitted.blocks
    halo = block_halo(st_map, context=fitted.context)
    sink, block_bins = open_sink(st_map, fitted, halo=halo, run=run, key=key)
    try:
        output = run_blocks(st_map, job, fitted, block_bins=block_bins, halo=halo, sink=sink, client=client,
                            show_progress_bar=run.show_progress_bar)  # fmt: skip
        if requested is not None:
            output = output.subset(requested)
        target = write_output(
            sdata, st_map, output, fitted, key=key, params=params, run=run, overwrite=overwrite, start=start
        )
        # The result is usually written next (`sdata.write`): keep anndata's sharding notices out of it.
        hide_sharding_notice()
    except BaseException:
        sink.discard()
        raise
    sink.finish(replaced=run.inplace)
    _log_written(output, key=key, start=start)
    return None if run.inplace else target
