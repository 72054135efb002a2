"""Super-resolve a slide and write the result back into its SpatialData."""

from __future__ import annotations

import re
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from sr_spatial._adapter._read import table_genes
from sr_spatial._adapter._write import check_output_names, write_superres
from sr_spatial._docs import doc_params, doc_slide
from sr_spatial._logging import HINT, hide_sharding_notice, log_phase, logger
from sr_spatial.features import resolve_features
from sr_spatial.model import DiffST
from sr_spatial.model._calibration import finer_spread_factor, normal_quantiles
from sr_spatial.model._config import resolve_config
from sr_spatial.model._device import resolve_device
from sr_spatial.model._spread import finer_variance_ratio
from sr_spatial.pp._stmap import spot_map
from sr_spatial.tl import _checks
from sr_spatial.tl._blocks import (
    BlockJob,
    MemorySink,
    ZarrSink,
    block_halo,
    default_block_bins,
    iter_blocks,
    plan_blocks,
)
from sr_spatial.tl._histology import fit_histology_detail, histology_predictor
from sr_spatial.tl._learned import AUTO_MIN_SPOTS, use_learned_encoder
from sr_spatial.tl._store import check_image_store
from sr_spatial.tl._train import _check_scale, config_for_steps, train_on_map

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
    import zarr
    from distributed import Client
    from spatialdata import SpatialData

    from sr_spatial.features import HistologyFeatures
    from sr_spatial.model import ModelConfig
    from sr_spatial.pp._stmap import STMap

__all__ = ["superresolve"]

Method = Literal["histology", "diffusion", "bicubic", "nearest"]
METHODS = ("histology", "diffusion", "bicubic", "nearest")


def _resolve_model(model, device) -> DiffST | None:
    if model is None:
        return None
    if isinstance(model, str | Path):
        loaded = DiffST.load(model, device=device)
        if not loaded.is_trained:
            msg = f"The model saved in {str(model)!r} is not trained; train it with `sr_spatial.tl.train` and save it."
            raise ValueError(msg)
        return loaded
    if isinstance(model, DiffST):
        if not model.is_trained:
            msg = "The model passed is not trained; train it with `sr_spatial.tl.train` or pass `model=None`."
            raise ValueError(msg)
        model.check_finite()
        _checks.move_to_device(model, device)
        return model
    msg = f"`model` must be None, a DiffST or a path to a saved model, got {type(model).__name__}."
    raise TypeError(msg)


def _match_model_genes(model: DiffST, genes, slide_genes, table_key: str) -> list[str] | None:
    """Check a loaded model fits the slide by gene name; the genes to keep if only some of the model's are asked for.

    The slide's genes are taken by name in the model's order, so tables with more genes or another order work.
    """
    absent = [g for g in model.genes if g not in set(slide_genes)]
    if absent:
        msg = (
            f"The model generates {len(model.genes)} genes, {len(absent)} of which are not in table {table_key!r}: "
            f"{absent[:10]}. Train a model on genes both slides measure, e.g. "
            "`sr.tl.train(reference, ..., genes=[g for g in reference_genes if g in slide_genes])`."
        )
        raise KeyError(msg)
    if genes is None:
        return None
    genes = [str(g) for g in genes]
    foreign = [g for g in genes if g not in set(model.genes)]
    if foreign:
        msg = (
            f"The model was trained on other genes: {foreign[:10]} are not among its {len(model.genes)} genes. "
            "Pass `genes` from `model.genes` (or `genes=None` for all of them), or train a model on these genes."
        )
        raise ValueError(msg)
    return None if genes == model.genes else genes


def _resolve_client(client):
    """The dask client to run blocks on: the one given, dask's default client for ``"auto"``, or none."""
    if client is None:
        return None
    if isinstance(client, str):
        if client != "auto":
            msg = f"`client` must be a dask.distributed Client, 'auto' or None, got {client!r}."
            raise ValueError(msg)
        try:
            from distributed import default_client
        except ImportError:
            return None
        try:
            return default_client()
        except ValueError:
            return None
    if not hasattr(client, "submit") or not hasattr(client, "scatter"):
        msg = f"`client` must be a dask.distributed Client, 'auto' or None, got {type(client).__name__}."
        raise TypeError(msg)
    return client


def _run_blocks(st_map: STMap, job: BlockJob, model, *, block_bins, halo, sink, client, show_progress_bar):
    """Run every block into ``sink``; the tissue mask, the table's values and the residual sums of the slide."""
    grid = st_map.grid
    blocks = plan_blocks(grid.shape, block_bins=block_bins, halo=halo)
    what = f"Sampling {job.n_samples} draws" if job.method == "diffusion" else f"Computing the {job.method} maps"
    n_bins = grid.height * grid.width
    if len(blocks) > 1:
        logger.info(
            "%s on %d bins in %d blocks of up to %d x %d bins.", what, n_bins, len(blocks), block_bins, block_bins
        )
    else:
        logger.info("%s on %d bins.", what, n_bins)
    mask = np.zeros(grid.shape, dtype=bool)
    coords, means, stds = [], [], []
    residual = residual_before = None
    for result in iter_blocks(job, blocks, model, client=client, show_progress_bar=show_progress_bar):
        _checks.check_finite(result, st_map.genes)
        sink.write(result)
        rows, cols = result.block.region
        keep = result.owned & result.mask
        mask[rows, cols] |= keep
        local = np.nonzero(keep)
        coords.append(np.column_stack([local[0] + rows.start, local[1] + cols.start]))
        means.append(result.mean[:, keep].T)
        stds.append(result.std[:, keep].T)
        residual = _add(residual, result.residual)
        residual_before = _add(residual_before, result.residual_before)
    coords = np.concatenate(coords)
    order = np.lexsort((coords[:, 1], coords[:, 0]))  # row-major, as np.nonzero(mask) orders the bins
    bins = (np.concatenate(means)[order], np.concatenate(stds)[order])
    return mask, bins, residual, residual_before


def _add(total, part):
    if part is None:
        return total
    return part if total is None else (total[0] + part[0], total[1] + part[1])


def _ratio(sums, *, per_gene=False):
    error, scale = sums
    if per_gene:
        return error / np.maximum(scale, 1e-12)
    return float(error.sum() / max(scale.sum(), 1e-12))


@doc_params(doc_slide=doc_slide)
def superresolve(
    sdata: SpatialData,
    image_key: str,
    *,
    table_key: str = "table",
    shapes_key: str | None = None,
    genes: Sequence[str] | None = None,
    n_top_genes: int = 50,
    scale: int = 4,
    method: Method | None = None,
    features: str | HistologyFeatures | torch.nn.Module = "morphology",
    image_um_per_px: float | None = None,
    learned_encoder: bool | Literal["auto"] = "auto",
    model: DiffST | str | Path | None = None,
    config: str | ModelConfig | dict = "base",
    train_steps: int | None = None,
    n_samples: int = 8,
    sampling_steps: int | None = None,
    device: str | torch.device = "auto",
    block_bins: int | None = None,
    image_store: str | Path | zarr.abc.store.Store | None = None,
    client: Client | Literal["auto"] | None = "auto",
    coordinate_system: str | None = None,
    stain: Literal["auto", "brightfield", "fluorescence"] = "auto",
    key_added: str | None = None,
    overwrite: bool = False,
    inplace: bool = True,
    seed: int = 0,
    quantiles: Sequence[float] | None = None,
    show_progress_bar: bool = True,
) -> SpatialData | None:
    """Super-resolve spot expression with a histology-guided diffusion model.

    Reads the spots, their raw counts and the H&E from ``sdata``, trains a :class:`~sr_spatial.model.DiffST` on
    the slide by scale transfer (or uses ``model``), draws ``n_samples`` maps on bins ``scale`` times finer
    than the spot pitch, projects every draw so its bins average exactly to each measured spot, and writes
    the posterior mean and standard deviation back. Expression is log-normalised
    (:func:`sr_spatial.pp.normalize`). If anything fails, ``sdata`` is left as it was.

    Parameters
    ----------
    {doc_slide}
    genes
        Genes to super-resolve (a name or a list of names); default: a loaded model's genes, else the
        ``n_top_genes`` most highly variable. With a model, genes are matched by name: the table may hold more
        genes or another order, every model gene must be in it (else a :class:`KeyError` lists the missing ones),
        and ``genes`` may pick some of the model's genes.
    method
        ``"histology"`` (default without ``model``): each bin takes its spot's measurement plus the within-spot
        detail a ridge on histology ``features`` predicts, weighted per gene by how well it predicts held-out
        spots (weight 0, i.e. the measurement itself, where the H&E does not help); the spread is calibrated
        on held-out spots. ``"diffusion"`` (default with ``model``): the diffusion model's draws, whose spread
        is the uncertainty. The baselines ``"bicubic"`` (cubic interpolation of the spots) and ``"nearest"``
        (each bin takes its nearest spot) are written in the same layout for comparison. On real sections
        ``"histology"`` is never below ``"nearest"`` and ``"diffusion"`` is; on the synthetic demo, whose
        expression is drawn from its H&E, ``"diffusion"`` scores highest (:doc:`/benchmarks`).
    features
        For ``"histology"``: ``"morphology"`` (stain, nuclei and texture statistics at several scales,
        offline; :class:`~sr_spatial.features.MorphologyFeatures`), a timm model id (e.g.
        ``"hf-hub:MahmoodLab/uni"``, downloaded with its pretrained weights), a torch module or callable
        mapping image patches to embeddings, or any :class:`~sr_spatial.features.HistologyFeatures`. Features
        are cached in memory, so a second call on the same slide and grid does not recompute them.
    image_um_per_px
        Micrometres per full-resolution H&E pixel; needed by image encoders, which read patches at their own
        magnification.
    learned_encoder
        For ``"histology"``: also train small convolutional encoders on this slide's spots (two, each on half
        of the spots, so every spot is predicted by one that never saw it) and add their within-spot detail as
        a third predictor, weighted per gene on held-out spots like the ridge's. It tells cell types apart where
        the morphology features only average what a bin holds: on the demo r 0.361 -> 0.402, on a synthetic
        Visium-size slide 0.449 -> 0.466, on her2st level (:doc:`/benchmarks`), and costs the encoder's training
        (``config.encoder_steps`` twice; about 30 s on a small slide, 70 s on a whole Visium slide, on 2 CPU
        cores). ``"auto"`` (default) turns it on for slides of at least 1,000 spots, where there are labels
        enough to learn from and the training is a small share of the run, unless the output grid is so large
        (a Visium HD slide) that the encoders' whole-slide inputs would not fit in about a GiB; ``True`` or
        ``False`` decide it.
    model
        A trained :class:`~sr_spatial.model.DiffST` or the directory of a saved one; default: train on this
        slide (:func:`sr_spatial.tl.train`).
    config
        Model size when training: ``"tiny"`` (seconds, for tests), ``"base"``; or a
        :class:`~sr_spatial.model.ModelConfig`.
    train_steps
        Optimiser steps of the denoiser when training; default from ``config``. The histology encoder's steps
        scale in proportion (``config.encoder_steps * train_steps / config.train_steps``).
    n_samples
        Diffusion draws; their spread is the uncertainty. The default 8 is where the posterior mean's accuracy
        levels off on the demo (``benchmarks/results/sampling_curve.md``).
    sampling_steps
        DDIM steps; default from the model's configuration.
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
    key_added
        Name of the outputs; default ``f"{image_key}_superres"``.
    overwrite
        Replace outputs of an earlier call with the same ``key_added``; elements sr_spatial did not write (the
        H&E, the counts) are never replaced.
    inplace
        Write into ``sdata``; otherwise return a new SpatialData holding only the outputs.
    seed
        Seeds training and sampling; the same seed gives the same result on the same device.
    quantiles
        Also write these quantiles of each bin's predictive distribution (normal, with the reported mean and
        standard deviation, clipped at 0) as table layers, e.g. ``(0.05, 0.95)`` for a 90 % interval.
    show_progress_bar
        Show tqdm bars for training and sampling.

    Returns
    -------
    ``None`` if ``inplace``, else a SpatialData with the elements below. Written (``key = key_added``):

    - ``sdata.images[key]``: ``(c=genes, y, x)`` posterior-mean log-normalised expression per bin, NaN outside
      the tissue (drawn transparent over the H&E), transformed to overlay ``image_key``.
    - ``sdata.images[f"{key}_std"]``: calibrated standard deviation per bin (diffusion: the spread of the
      projected draws times a per-gene factor fitted at training; never below 0.05), 0 for the baselines; NaN
      outside the tissue.
    - ``sdata.shapes[f"{key}_bins"]``: one square per bin in the tissue.
    - ``sdata.tables[f"{key}_table"]``: one observation per bin, annotating the bins; ``X`` (mean), ``layers["std"]``,
      ``obs[["array_row", "array_col"]]``, ``obsm["spatial"]`` (full-resolution pixels), ``uns["spatial"]``
      (for :func:`squidpy.pl.spatial_scatter`) and ``uns[key]`` with ``"params"`` (this call), the bin size
      and spot pitch in image pixels, and the spot-consistency residual before and after projection; with
      ``method="histology"`` (or a model trained with ``histology_base``, whose base it describes) also
      ``uns[key]["histology"]``: the features used and, per gene, the detail
      ``weight`` (0: the measurement itself), the ``interpolation_weight`` of the neighbouring spots' cubic
      interpolation, the ``detail_cap`` already applied to ``weight`` (below 1 where the detail swells from
      spots to bins), the histology detail's held-out correlation ``heldout_r``, the typical calibrated ``std``
      and its ``coverage_scale``, and with ``learned_encoder`` the learned encoder's ``learned_weight`` (after
      its ``learned_detail_cap``); with ``method="diffusion"``, ``uns[key]["coverage_scale"]``: per gene, the
      factor on the projected draws' spread fitted on held-out bins at training so that the reported ``std``
      is calibrated, ``uns[key]["finer_ratio"]``, how much more the measurement varies at the output's bins
      than at the spots it was calibrated on, and ``uns[key]["finer_spread_factor"]``: per gene, the factor
      (at least 1) that carries the calibrated spread to those bins (1 for a model trained on a reference).
    - ``layers[f"q{q}"]`` of that table for each of ``quantiles`` (e.g. ``"q0.05"``), if asked for.

    With ``image_store``, the two images are dask arrays over its arrays ``<key>/<n>/mean`` and ``.../std``.
    The table's ``uns["sr_spatial"]`` records the elements written, which a later ``overwrite=True`` may replace.
    """
    import spatialdata as sd

    start = time.perf_counter()
    _checks.check_call(
        sdata, image_key, table_key=table_key, shapes_key=shapes_key, coordinate_system=coordinate_system,
        stain=stain, image_um_per_px=image_um_per_px, n_samples=n_samples, quantiles=quantiles,
        features=features if method in (None, "histology") else None, overwrite=overwrite, inplace=inplace,
        show_progress_bar=show_progress_bar,
    )  # fmt: skip
    _check_scale(scale)
    genes = _checks.normalise_genes(genes)
    _checks.check_arguments(
        n_top_genes=n_top_genes, seed=seed, train_steps=train_steps, sampling_steps=sampling_steps, device=device,
        key_added=key_added,
    )  # fmt: skip
    if method is None:
        method = "histology" if model is None else "diffusion"
    if method not in METHODS:
        msg = f"Unknown method {method!r}; choose one of {list(METHODS)}."
        raise ValueError(msg)
    auto_learned = isinstance(learned_encoder, str) and learned_encoder == "auto"
    if not (auto_learned or isinstance(learned_encoder, bool | np.bool_)):
        msg = f"`learned_encoder` must be True, False or 'auto', got {learned_encoder!r}."
        raise TypeError(msg)
    if not auto_learned and learned_encoder and method != "histology":
        msg = (
            f"`learned_encoder=True` adds a predictor to method='histology'; method={method!r} does not use it "
            "(the diffusion model learns its own encoder). Drop `learned_encoder`, or use method='histology'."
        )
        raise ValueError(msg)
    if not isinstance(n_samples, int | np.integer) or n_samples < 1:
        msg = f"`n_samples` must be a positive integer, got {n_samples!r}."
        raise ValueError(msg)
    key = key_added or f"{image_key}_superres"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
        msg = f"`key_added` {key!r} is not a valid element name; use letters, digits, '_', '.' and '-' only."
        raise ValueError(msg)
    if inplace:
        check_output_names(
            sdata, key, overwrite=overwrite, image_key=image_key, table_key=table_key, shapes_key=shapes_key
        )
    params = {
        "image_key": image_key,
        "table_key": table_key,
        "shapes_key": shapes_key,
        "genes": None if genes is None else list(genes),
        "n_top_genes": n_top_genes,
        "scale": scale,
        "method": method,
        "features": (features if isinstance(features, str) else repr(features)) if method == "histology" else None,
        "image_um_per_px": image_um_per_px,
        # Resolved once the number of spots is known (``"auto"``).
        "learned_encoder": None,
        "model": str(model) if isinstance(model, str | Path) else (None if model is None else repr(model)),
        "config": config if isinstance(config, str) else "custom",
        "train_steps": train_steps,
        "n_samples": n_samples,
        "sampling_steps": sampling_steps,
        "device": str(device),
        "coordinate_system": coordinate_system,
        "stain": stain,
        "key_added": key,
        "seed": seed,
        "quantiles": None if quantiles is None else [float(q) for q in np.atleast_1d(quantiles)],
    }

    if quantiles is not None:
        quantiles = [float(q) for q in np.atleast_1d(quantiles)]
        if not all(0.0 < q < 1.0 for q in quantiles):
            msg = f"`quantiles` must lie strictly between 0 and 1, e.g. (0.05, 0.95); got {quantiles}."
            raise ValueError(msg)
    if block_bins is not None and (not isinstance(block_bins, int | np.integer) or block_bins < 16):
        msg = f"`block_bins` must be an integer of at least 16 (or None to choose it), got {block_bins!r}."
        raise ValueError(msg)
    client = _resolve_client(client)
    if image_store is not None:
        check_image_store(image_store, key, overwrite=overwrite, slide_path=sdata.path)

    loaded = _resolve_model(model, device) if method == "diffusion" else None
    requested = None
    if loaded is not None:
        requested = _match_model_genes(loaded, genes, table_genes(sdata, table_key), table_key)
        genes = loaded.genes
    # Resolve the configuration up front: a wrong name should fail before the slide is read.
    model_config = loaded.config if loaded is not None else resolve_config(config)
    _checks.check_sampling_steps(sampling_steps, model_config)
    if method == "diffusion" and model_config.histology_base:
        # The predictor's features must be computable here (an encoder needs the pixel size) before any work.
        resolve_features(model_config.base_features, image_um_per_px=image_um_per_px)
    train_here = method == "diffusion" and loaded is None
    where = {"table_key": table_key, "shapes_key": shapes_key, "coordinate_system": coordinate_system}
    if train_here:
        _checks.check_training_scale(sdata, image_key, scale=scale, **where)
    st_map = spot_map(
        sdata,
        image_key,
        table_key=table_key,
        shapes_key=shapes_key,
        genes=genes,
        n_top_genes=n_top_genes,
        scale=scale,
        coordinate_system=coordinate_system,
        # Training reads the whole slide anyway; inference renders block by block.
        render=train_here,
        stain=stain,
    )
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
    learned = use_learned_encoder(
        learned_encoder,
        method=method,
        n_spots=len(st_map.values),
        grid_shape=st_map.grid.shape,
        px_per_bin=model_config.px_per_bin,
    )
    if method == "histology":
        params["learned_encoder"] = learned
        if auto_learned and learned:
            logger.info(
                "%d spots (at least %d): also cross-fitting the learned histology encoder; pass "
                "`learned_encoder=False` to skip it.",
                len(st_map.values),
                AUTO_MIN_SPOTS,
            )
        elif auto_learned and len(st_map.values) >= AUTO_MIN_SPOTS:
            logger.info(
                "The output grid (%d x %d bins) is too large for the learned histology encoder's whole-slide "
                "inputs; the morphology features work alone (`learned_encoder=True` forces it, at that memory "
                "cost).",
                *st_map.grid.shape,
            )
    if train_here:
        loaded = train_on_map(
            st_map,
            scale=scale,
            config=model_config,
            train_steps=train_steps,
            device=device,
            seed=seed,
            show_progress_bar=show_progress_bar,
            image_um_per_px=image_um_per_px,
        )
    elif loaded is not None:
        loaded.check_genes(st_map.genes)
        if loaded.scale != scale:
            logger.warning("The model was trained for scale %d and is applied at scale %d.", loaded.scale, scale)

    job = BlockJob.from_map(
        st_map,
        method=method,
        n_samples=n_samples,
        sampling_steps=sampling_steps,
        seed=seed,
        px_per_bin=model_config.px_per_bin,
    )
    histology_record = None
    if method == "histology":
        detail, histology_record = fit_histology_detail(
            st_map,
            job.renderer.render(st_map.grid),
            job.renderer.owner(st_map.grid),
            features=features,
            image_um_per_px=image_um_per_px,
            scale=scale,
            seed=seed,
            show_progress_bar=show_progress_bar,
            learned_encoder=config_for_steps(model_config, train_steps) if learned else None,
            device=resolve_device(device),
        )
        job = replace(job, histology=detail)
    elif loaded is not None and loaded.config.histology_base:
        # The model generates the residual around the histology predictor: fitted here, on this slide's spots.
        detail, histology_record = histology_predictor(
            st_map,
            scale=scale,
            seed=seed,
            show_progress_bar=show_progress_bar,
            features=loaded.config.base_features,
            image_um_per_px=image_um_per_px,
            rendered=job.renderer.render(st_map.grid),
            owner=job.renderer.owner(st_map.grid),
        )
        job = replace(job, histology=detail)
    finer_ratio = None
    if loaded is not None:
        # The draws' spread was calibrated on spots around pseudo-spots; the output's bins vary more.
        finer_ratio = finer_variance_ratio(st_map.values, st_map.centres, pitch=st_map.pitch, scale=max(scale, 2))
        spread_factor = finer_spread_factor(loaded.network.spread_error_ratio.cpu().numpy(), finer_ratio)
        job = replace(job, spread_factor=spread_factor.astype(np.float32))
    context = model_config.tile_overlap if method == "diffusion" else 0
    halo = block_halo(st_map, context=context)
    n_genes, shape = len(st_map.genes), st_map.grid.shape
    if block_bins is None:
        block_bins = default_block_bins(n_genes, n_samples if method == "diffusion" else 1, halo=halo)
    if image_store is None:
        sink = MemorySink(n_genes, shape)
    else:
        sink = ZarrSink(image_store, n_genes, shape, chunk_bins=min(block_bins, 256), key=key)
    try:
        sampling = time.perf_counter()
        mask, bins, residual, residual_before = _run_blocks(
            st_map,
            job,
            loaded,
            block_bins=int(block_bins),
            halo=halo,
            sink=sink,
            client=client,
            show_progress_bar=show_progress_bar,
        )
        seconds = time.perf_counter() - sampling
        log_phase("sampling", seconds, "Computed the maps in %.1f s.", seconds)
        mean, std = sink.arrays()
        genes_out = list(st_map.genes)
        if requested is not None:
            # The model draws all its genes jointly; keep the ones asked for, in the order asked.
            idx = [st_map.genes.index(g) for g in requested]
            mean, std = mean[idx], std[idx]
            bins = (bins[0][:, idx], bins[1][:, idx])
            residual = (residual[0][idx], residual[1][idx])
            if residual_before is not None:
                residual_before = (residual_before[0][idx], residual_before[1][idx])
            genes_out = list(requested)

        uns = {
            "params": {k: v for k, v in params.items() if v is not None},
            "genes": genes_out,
            "bin_size_px": float(st_map.grid.size),
            "spot_pitch_px": float(st_map.pitch),
            "n_spots": len(st_map.values),
            "coordinate_system": st_map.spots.coordinate_system,
            "spot_residual": _ratio(residual),
            "spot_residual_per_gene": _ratio(residual, per_gene=True),
            "runtime_s": time.perf_counter() - start,
        }
        if residual_before is not None:
            uns["spot_residual_before_projection"] = _ratio(residual_before)
        if histology_record is not None:
            if requested is not None:
                histology_record = {
                    k: v[idx] if isinstance(v, np.ndarray) else v for k, v in histology_record.items()
                }
            uns["histology"] = histology_record
        if loaded is not None:
            # Per gene, the factor bringing the draws' spread to a calibrated standard deviation (training time).
            spread_scale = loaded.network.spread_scale.cpu().numpy().astype(np.float32)
            uns["coverage_scale"] = spread_scale[idx] if requested is not None else spread_scale
            uns["finer_ratio"] = float(finer_ratio)
            uns["finer_spread_factor"] = job.spread_factor[idx] if requested is not None else job.spread_factor

        target = sdata if inplace else sd.SpatialData()
        writing = time.perf_counter()
        write_superres(
            target,
            key=key,
            spots=st_map.spots,
            grid=st_map.grid,
            genes=genes_out,
            mean=mean,
            std=std,
            mask=mask,
            uns=uns,
            overwrite=overwrite,
            bins=bins,
        )
        if quantiles:
            table = target.tables[f"{key}_table"]
            for q, layer in zip(quantiles, normal_quantiles(bins[0], bins[1], quantiles), strict=True):
                table.layers[f"q{q:g}"] = layer.astype(np.float32)
        seconds = time.perf_counter() - writing
        log_phase("writing", seconds, "Built the output elements in %.1f s.", seconds, level=HINT)
        # The result is usually written next (`sdata.write`): keep anndata's sharding notices out of it.
        hide_sharding_notice()
    except BaseException:
        sink.discard()
        raise
    sink.finish(replaced=inplace)
    logger.info(
        "Super-resolved %d genes onto %d bins in %.1f s; wrote images %r, %r, shapes %r and table %r.",
        len(genes_out),
        int(mask.sum()),
        time.perf_counter() - start,
        key,
        f"{key}_std",
        f"{key}_bins",
        f"{key}_table",
    )
    return None if inplace else target
