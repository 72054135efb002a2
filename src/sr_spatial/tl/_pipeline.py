"""The steps of :func:`~sr_spatial.tl.superresolve`: check the call, run the blocks, collect and write the output."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sr_spatial._adapter._write import check_output_names, write_superres
from sr_spatial._logging import HINT, log_phase, logger
from sr_spatial.core._uncertainty import normal_quantiles
from sr_spatial.pp._genes import units
from sr_spatial.tl import _checks
from sr_spatial.tl._blocks import MemorySink, ZarrSink, default_block_bins, iter_blocks, plan_blocks
from sr_spatial.tl._store import check_image_store

if TYPE_CHECKING:
    from spatialdata import SpatialData

    from sr_spatial.pp._stmap import STMap
    from sr_spatial.tl._blocks import BlockJob
    from sr_spatial.tl._methods import Fitted
    from sr_spatial.tl._options import MethodOptions, RunOptions, SlideKeys

__all__ = [
    "Output",
    "check_call",
    "match_model_genes",
    "open_sink",
    "record_params",
    "resolve_client",
    "resolve_scale",
    "run_blocks",
    "write_output",
]


def check_call(
    sdata: SpatialData,
    image_key: str,
    *,
    genes,
    n_top_genes,
    scale,
    seed,
    key_added,
    overwrite,
    slide: SlideKeys,
    options: MethodOptions,
    run: RunOptions,
) -> tuple[list[str] | None, str, Any]:
    """Refuse wrong arguments before any work; the genes asked for, the output's key and the dask client."""
    _checks.check_call(
        sdata, image_key, **vars(slide), image_um_per_px=options.image_um_per_px, n_samples=options.n_samples,
        quantiles=run.quantiles, features=options.features, overwrite=overwrite, inplace=run.inplace,
        show_progress_bar=run.show_progress_bar,
    )  # fmt: skip
    _checks.check_scale(scale)
    genes = _checks.normalise_genes(genes)
    _checks.check_arguments(
        n_top_genes=n_top_genes, seed=seed, train_steps=options.train_steps, sampling_steps=options.sampling_steps,
        device=run.device, key_added=key_added,
    )  # fmt: skip
    n_samples = options.n_samples
    if not isinstance(n_samples, int | np.integer) or isinstance(n_samples, bool) or n_samples < 1:
        msg = f"`n_samples` must be a positive integer, got {n_samples!r}."
        raise ValueError(msg)
    key = key_added or f"{image_key}_superres"
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", key):
        msg = f"`key_added` {key!r} is not a valid element name; use letters, digits, '_', '.' and '-' only."
        raise ValueError(msg)
    if run.inplace:
        check_output_names(
            sdata, key, overwrite=overwrite, image_key=image_key, table_key=slide.table_key, shapes_key=slide.shapes_key
        )
    if run.quantiles is not None:
        quantiles = [float(q) for q in np.atleast_1d(run.quantiles)]
        if not all(0.0 < q < 1.0 for q in quantiles):
            msg = f"`quantiles` must lie strictly between 0 and 1, e.g. (0.05, 0.95); got {quantiles}."
            raise ValueError(msg)
    block_bins = run.block_bins
    if block_bins is not None and (not isinstance(block_bins, int | np.integer) or block_bins < 16):
        msg = f"`block_bins` must be an integer of at least 16 (or None to choose it), got {block_bins!r}."
        raise ValueError(msg)
    client = resolve_client(run.client)
    if run.image_store is not None:
        check_image_store(run.image_store, key, overwrite=overwrite, slide_path=sdata.path)
    return genes, key, client


def record_params(
    *, image_key, slide: SlideKeys, options: MethodOptions, run: RunOptions, method, model, config, key, **call
) -> dict:
    """``uns[key]["params"]``: the call's arguments, as plain values (``None`` left out when written)."""
    return {
        "image_key": image_key,
        "table_key": slide.table_key,
        "shapes_key": slide.shapes_key,
        "genes": None if call["genes"] is None else list(call["genes"]),
        "n_top_genes": call["n_top_genes"],
        "scale": call["scale"],
        "method": method,
        "features": None,
        "image_um_per_px": options.image_um_per_px,
        "learned_encoder": None,
        "model": None if model is None else str(model) if isinstance(model, str | Path) else repr(model),
        "config": config if isinstance(config, str) else "custom",
        "train_steps": options.train_steps,
        "n_samples": options.n_samples,
        "sampling_steps": options.sampling_steps,
        "device": str(run.device),
        "coordinate_system": slide.coordinate_system,
        "stain": slide.stain,
        "key_added": key,
        "seed": call["seed"],
        "quantiles": None if run.quantiles is None else [float(q) for q in np.atleast_1d(run.quantiles)],
        "units": units(),
    }


def match_model_genes(model, genes, slide_genes, table_key: str) -> tuple[Any, list[str] | None]:
    """Fit a model to the slide by gene name, before any work: the model to apply, and the genes to keep.

    The slide's genes are taken by name in the model's order, so tables with more genes or another order work.
    ``genes`` may pick some of the model's genes: a histology model is cut down to them (each gene's predictor is
    its own, so only those are computed); a diffusion model draws all its genes jointly and the others are dropped
    from its output. A histology model some of whose genes the slide lacks is applied to the genes they share
    (said in a warning) unless ``genes`` asks for a missing one; a diffusion model needs every one of its genes.
    Returns the model and the genes to keep from its output (``None``: all it computes).
    """
    from sr_spatial.histology._method import model_for_genes
    from sr_spatial.model import HistologyModel

    genes = None if genes is None else list(genes)
    if genes is not None:
        foreign = [g for g in genes if g not in set(model.genes)]
        if foreign:
            msg = (
                f"The model was trained on other genes: {foreign[:10]} are not among its {len(model.genes)} genes. "
                "Pass `genes` from `model.genes` (or `genes=None` for all of them), or train a model on these genes."
            )
            raise ValueError(msg)
        if len(set(genes)) != len(genes):
            repeated = sorted({g for g in genes if genes.count(g) > 1})
            msg = f"`genes` lists {repeated[:10]} more than once; pass each gene once."
            raise ValueError(msg)
    present = set(slide_genes)
    absent = [g for g in (genes or model.genes) if g not in present]
    cuttable = isinstance(model, HistologyModel) and model.learned is None
    if absent and (genes is not None or not cuttable):
        hint = (
            "Pass `genes=` the model's genes the slide measures, e.g. "
            "`genes=[g for g in model.genes if g in sdata.tables[table_key].var_names]`, or train"
            if cuttable
            else "A diffusion model (or a histology model with learned encoders) reads all its genes together: train"
        )
        msg = (
            f"The model generates {len(model.genes)} genes, {len(absent)} of which are not in table {table_key!r}: "
            f"{absent[:10]}. {hint} a model on genes both slides measure, e.g. "
            "`sr.tl.train(reference, ..., target=sdata)` (which chooses among the genes every slide shares)."
        )
        raise KeyError(msg)
    if absent:
        genes = [g for g in model.genes if g in present]
        if not genes:
            msg = f"None of the model's {len(model.genes)} genes is in table {table_key!r}; train a model on its genes."
            raise KeyError(msg)
        logger.warning(
            "%d of the model's %d genes are not in table %r (%s); super-resolving the %d it shares with the slide.",
            len(absent),
            len(model.genes),
            table_key,
            ", ".join(absent[:5]) + (", ..." if len(absent) > 5 else ""),
            len(genes),
        )
    if genes is None or genes == model.genes:
        return model, None
    if cuttable:
        return model_for_genes(model, genes), None
    return model, genes


def resolve_scale(scale: int | None, model) -> int:
    """The output's scale: ``scale``, else the model's (4 without one); a model's other scale is refused."""
    if model is None:
        return 4 if scale is None else scale
    if scale is None:
        return model.scale
    if scale != model.scale:
        msg = (
            f"The model was trained for scale {model.scale} and `scale={scale}` was passed: its detail is learned for "
            f"bins {model.scale} times finer than the spots. Leave `scale` out (or pass `scale={model.scale}`), or "
            f"train a model at scale {scale}."
        )
        raise ValueError(msg)
    return scale


def resolve_client(client):
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


def open_sink(st_map: STMap, fitted: Fitted, *, halo: int, run: RunOptions, key: str):
    """Where the blocks write (memory or ``run.image_store``), and the block side."""
    n_genes, shape = len(st_map.genes), st_map.grid.shape
    block_bins = run.block_bins or default_block_bins(n_genes, fitted.blocks.n_draws, halo=halo)
    if run.image_store is None:
        return MemorySink(n_genes, shape), int(block_bins)
    return ZarrSink(run.image_store, n_genes, shape, chunk_bins=min(block_bins, 256), key=key), int(block_bins)


@dataclass
class Output:
    """The computed maps of a slide, gathered from its blocks."""

    mean: Any
    std: Any
    mask: np.ndarray
    bins: tuple[np.ndarray, np.ndarray]
    residual: tuple[np.ndarray, np.ndarray]
    residual_before: tuple[np.ndarray, np.ndarray] | None
    genes: list[str]

    def subset(self, genes: list[str]) -> Output:
        """Only ``genes`` (a model draws all its genes jointly; keep the ones asked for, in the order asked)."""
        idx = [self.genes.index(g) for g in genes]
        before = self.residual_before
        return Output(
            mean=self.mean[idx],
            std=self.std[idx],
            mask=self.mask,
            bins=(self.bins[0][:, idx], self.bins[1][:, idx]),
            residual=(self.residual[0][idx], self.residual[1][idx]),
            residual_before=None if before is None else (before[0][idx], before[1][idx]),
            genes=list(genes),
        )


def run_blocks(st_map: STMap, job: BlockJob, fitted: Fitted, *, block_bins, halo, sink, client, show_progress_bar):
    """Run every block into ``sink``; the gathered :class:`Output` of the slide."""
    grid = st_map.grid
    blocks = plan_blocks(grid.shape, block_bins=block_bins, halo=halo)
    what = fitted.blocks.describe()
    n_bins = grid.height * grid.width
    if len(blocks) > 1:
        logger.info(
            "%s on %d bins in %d blocks of up to %d x %d bins.", what, n_bins, len(blocks), block_bins, block_bins
        )
    else:
        logger.info("%s on %d bins.", what, n_bins)
    start = time.perf_counter()
    mask = np.zeros(grid.shape, dtype=bool)
    coords, means, stds = [], [], []
    residual = residual_before = None
    model = fitted.model
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
    seconds = time.perf_counter() - start
    log_phase("sampling", seconds, "Computed the maps in %.1f s.", seconds)
    coords = np.concatenate(coords)
    order = np.lexsort((coords[:, 1], coords[:, 0]))  # row-major, as np.nonzero(mask) orders the bins
    bins = (np.concatenate(means)[order], np.concatenate(stds)[order])
    mean, std = sink.arrays()
    return Output(mean, std, mask, bins, residual, residual_before, list(st_map.genes))


def _add(total, part):
    if part is None:
        return total
    return part if total is None else (total[0] + part[0], total[1] + part[1])


def _ratio(sums, *, per_gene=False):
    error, scale = sums
    if per_gene:
        return error / np.maximum(scale, 1e-12)
    return float(error.sum() / max(scale.sum(), 1e-12))


def _per_gene(record: dict, idx: list[int], n_genes: int) -> dict:
    """``record`` with its per-gene arrays (nested dicts too) kept at ``idx``."""
    out = {}
    for name, value in record.items():
        if isinstance(value, dict):
            value = _per_gene(value, idx, n_genes)
        elif isinstance(value, np.ndarray) and value.shape[:1] == (n_genes,):
            value = value[idx]
        out[name] = value
    return out


def write_output(
    sdata: SpatialData,
    st_map: STMap,
    output: Output,
    fitted: Fitted,
    *,
    key: str,
    params: dict,
    run: RunOptions,
    overwrite: bool,
    start: float,
) -> SpatialData:
    """Write the output elements into ``sdata`` (or a new SpatialData without ``run.inplace``); what was written to."""
    import spatialdata as sd

    extra = fitted.uns
    if output.genes != list(st_map.genes):
        extra = _per_gene(extra, [st_map.genes.index(g) for g in output.genes], len(st_map.genes))
    uns = {
        "params": {k: v for k, v in params.items() if v is not None},
        "genes": output.genes,
        "bin_size_px": float(st_map.grid.size),
        "spot_pitch_px": float(st_map.pitch),
        "n_spots": len(st_map.values),
        "coordinate_system": st_map.spots.coordinate_system,
        "spot_residual": _ratio(output.residual),
        "spot_residual_per_gene": _ratio(output.residual, per_gene=True),
        "runtime_s": time.perf_counter() - start,
    }
    if output.residual_before is not None:
        uns["spot_residual_before_projection"] = _ratio(output.residual_before)
    uns.update(extra)
    target = sdata if run.inplace else sd.SpatialData()
    writing = time.perf_counter()
    write_superres(
        target,
        key=key,
        spots=st_map.spots,
        grid=st_map.grid,
        genes=output.genes,
        mean=output.mean,
        std=output.std,
        mask=output.mask,
        uns=uns,
        overwrite=overwrite,
        bins=output.bins,
    )
    if run.quantiles is not None:
        table = target.tables[f"{key}_table"]
        quantiles = [float(q) for q in np.atleast_1d(run.quantiles)]
        for q, layer in zip(quantiles, normal_quantiles(*output.bins, quantiles), strict=True):
            table.layers[f"q{q:g}"] = layer.astype(np.float32)
    seconds = time.perf_counter() - writing
    log_phase("writing", seconds, "Built the output elements in %.1f s.", seconds, level=HINT)
    return target
