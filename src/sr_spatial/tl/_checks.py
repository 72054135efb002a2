"""Argument checks run at the top of :func:`~sr_spatial.tl.superresolve` and :func:`~sr_spatial.tl.train`.

Everything here is cheap and runs before the slide is read or a model is trained, so a wrong argument fails in
a second with a message that says what to pass instead, and leaves the SpatialData and the disk as they were.
"""

from __future__ import annotations

import numbers
import os
from typing import TYPE_CHECKING

import numpy as np

from sr_spatial._adapter._read import resolve_table_key

if TYPE_CHECKING:
    from sr_spatial.model import DiffST
    from sr_spatial.tl._blocks import BlockResult

__all__ = [
    "check_arguments",
    "check_call",
    "check_finite",
    "check_scale",
    "slides_and_keys",
    "move_to_device",
    "normalise_genes",
]


def _is_integer(value) -> bool:
    # bool is an int subclass, but `seed=True` or `train_steps=False` are mistakes, not numbers.
    return isinstance(value, numbers.Integral) and not isinstance(value, bool | np.bool_)


def normalise_genes(genes) -> list[str] | None:
    """``genes`` as a list of names: a single name is one gene (not its letters); an empty list is refused."""
    if genes is None:
        return None
    if isinstance(genes, str | bytes):
        return [genes.decode() if isinstance(genes, bytes) else genes]
    try:
        names = list(genes)
    except TypeError:
        msg = f"`genes` must be a gene name or a list of gene names, got {type(genes).__name__}."
        raise TypeError(msg) from None
    if not names:
        msg = "`genes` is empty; pass at least one gene name, or `genes=None` for the default genes."
        raise ValueError(msg)
    not_names = [g for g in names if not isinstance(g, str | np.str_)]
    if not_names:
        msg = f"`genes` must hold gene names (strings), got {not_names[:5]}. Pass e.g. `genes=['ERBB2', 'CD8A']`."
        raise TypeError(msg)
    names = [str(g) for g in names]
    repeated = sorted({g for g in names if names.count(g) > 1})
    if repeated:
        msg = f"`genes` lists a gene more than once ({repeated[:5]}); pass each gene once."
        raise ValueError(msg)
    return names


def slides_and_keys(sdata, image_key) -> tuple[tuple, tuple[str, ...]]:
    """One slide or several (references), and one image key for all or one per slide."""
    # A single slide of another type is refused by `check_call`, which says what to pass for it.
    slides = tuple(sdata) if isinstance(sdata, list | tuple) else (sdata,)
    if not slides:
        msg = "`sdata` is an empty list; pass a SpatialData, or a list of them as references."
        raise ValueError(msg)
    keys = (image_key,) * len(slides) if isinstance(image_key, str) else tuple(image_key)
    if len(keys) != len(slides) or not all(isinstance(k, str) for k in keys):
        msg = f"`image_key` must be one image name, or one per slide ({len(slides)}); got {image_key!r}."
        raise ValueError(msg)
    return slides, keys


def check_scale(scale) -> None:
    """Refuse a ``scale`` that is not an integer of at least 2 (bins per spot pitch)."""
    if not _is_integer(scale) or scale < 2:
        msg = f"`scale` must be an integer of at least 2 (bins per spot pitch), got {scale!r}."
        raise ValueError(msg)


def check_aggregate(aggregate, *, reference: bool) -> None:
    """Refuse an ``aggregate`` that is not a positive integer, or one above 1 without references."""
    if not _is_integer(aggregate) or aggregate < 1:
        msg = (
            f"`aggregate` must be a positive integer (the references' bins pooled per unit along each axis), got "
            f"{aggregate!r}."
        )
        raise ValueError(msg)
    if aggregate > 1 and not reference:
        msg = "`aggregate` pools a reference's bins into units; pass `reference=True` too, or drop `aggregate`."
        raise ValueError(msg)


def _positive_integer(name: str, value, *, allow_none: bool, hint: str) -> None:
    if value is None and allow_none:
        return
    if not _is_integer(value) or value < 1:
        msg = f"`{name}` must be a positive integer{' or None' if allow_none else ''}, got {value!r}. {hint}"
        raise ValueError(msg)


def check_arguments(
    *,
    n_top_genes,
    seed,
    train_steps,
    device,
    sampling_steps=None,
    key_added: str | None = None,
) -> None:
    """Refuse arguments of the wrong type or range before any work, including a device this machine lacks."""
    from sr_spatial.diffusion._model import resolve_device

    _positive_integer("n_top_genes", n_top_genes, allow_none=False, hint="Pass how many genes to take, e.g. 50.")
    default = "or None for the model configuration's default."
    _positive_integer("train_steps", train_steps, allow_none=True, hint=f"Pass the optimiser steps, {default}")
    _positive_integer("sampling_steps", sampling_steps, allow_none=True, hint=f"Pass the DDIM steps, {default}")
    if not _is_integer(seed) or seed < 0:
        msg = f"`seed` must be a non-negative integer, got {seed!r}. Pass e.g. `seed=0`."
        raise ValueError(msg)
    if key_added is not None:
        from sr_spatial._validate import check_name

        check_name(key_added)
    resolve_device(device)


#: What each kind of element is called in messages.
_KINDS = {
    "images": "an image",
    "labels": "a labels element",
    "points": "a points element",
    "shapes": "a shapes element",
    "tables": "a table",
}


def _kind_of(sdata, name) -> str | None:
    for kind in _KINDS:
        if name in getattr(sdata, kind, {}):
            return kind
    return None


def _check_element(sdata, name, *, kind: str, argument: str, hint: str = "") -> None:
    """Refuse ``name`` unless it is a string naming an element of ``kind``; say what it names instead."""
    if not isinstance(name, str):
        msg = f"`{argument}` must be the name of {_KINDS[kind]} of the SpatialData (a string), got {name!r}."
        raise TypeError(msg)
    found = _kind_of(sdata, name)
    if found is not None and found != kind:
        available = sorted(getattr(sdata, kind).keys())
        msg = (
            f"`{argument}={name!r}` names an element of `sdata.{found}`, not of `sdata.{kind}`. {hint}"
            f"Available {kind}: {available}."
        )
        raise ValueError(msg)


def check_call(
    sdata,
    image_key,
    *,
    table_key,
    shapes_key=None,
    coordinate_system=None,
    stain="auto",
    image_um_per_px=None,
    checkpoint_dir=None,
    n_samples=None,
    quantiles=None,
    features=None,
    **flags,
) -> None:
    """Refuse, before any work, what :func:`superresolve` or :func:`train` cannot read, with what to pass instead.

    A slide that is not a SpatialData, keys that name the wrong kind of element, a table without counts in
    ``X``, and arguments of the wrong type or range; ``flags`` must be booleans. Every check is cheap (no pixel,
    no count is read) and raises sr_spatial's own message saying what to pass.
    """
    from spatialdata import SpatialData

    if not isinstance(sdata, SpatialData):
        if type(sdata).__name__ == "AnnData":
            hint = (
                "An AnnData holds the counts but not the H&E and the spots' shapes; read the slide with "
                "`spatialdata_io` (e.g. `spatialdata_io.visium(path)`), which gives all three."
            )
        elif isinstance(sdata, str | os.PathLike):
            hint = f"To read a slide saved as zarr, pass `spatialdata.read_zarr({str(sdata)!r})`."
        else:
            hint = "Read the slide with `spatialdata_io` (e.g. `spatialdata_io.visium(path)`)."
        msg = f"`sdata` must be a SpatialData, got {type(sdata).__name__}. {hint}"
        raise TypeError(msg)
    for name, value in flags.items():
        if not isinstance(value, bool | np.bool_):
            msg = f"`{name}` must be True or False, got {value!r}."
            raise TypeError(msg)
    _check_element(sdata, image_key, kind="images", argument="image_key")
    _check_element(sdata, table_key, kind="tables", argument="table_key")
    table_key = resolve_table_key(sdata, table_key)
    if shapes_key is not None:
        hint = (
            "Transcripts (points) are counted into square spots first with `sr.pp.bin_transcripts(sdata, "
            f"{shapes_key!r}, bin_size=...)`. "
            if _kind_of(sdata, shapes_key) == "points"
            else ""
        )
        _check_element(sdata, shapes_key, kind="shapes", argument="shapes_key", hint=hint)
    if coordinate_system is not None and not isinstance(coordinate_system, str):
        msg = f"`coordinate_system` must be a name (a string) or None, got {coordinate_system!r}."
        raise TypeError(msg)
    if table_key in sdata.tables:
        from sr_spatial._validate import check_table_x

        check_table_x(sdata.tables[table_key], table_key)
    from sr_spatial._validate import check_stain

    check_stain(stain)
    if image_um_per_px is not None and (
        not isinstance(image_um_per_px, numbers.Real)
        or isinstance(image_um_per_px, bool | np.bool_)
        or not np.isfinite(image_um_per_px)
        or image_um_per_px <= 0
    ):
        msg = f"`image_um_per_px` must be a positive number of micrometres per pixel, got {image_um_per_px!r}."
        raise ValueError(msg)
    if n_samples is not None and (not _is_integer(n_samples) or n_samples < 1):
        msg = f"`n_samples` must be a positive integer, got {n_samples!r}."
        raise ValueError(msg)
    if quantiles is not None:
        values = np.atleast_1d(np.asarray(quantiles, dtype=object)).ravel().tolist()
        if not values or not all(isinstance(q, numbers.Real) and not isinstance(q, bool | np.bool_) for q in values):
            msg = f"`quantiles` must be numbers strictly between 0 and 1, e.g. (0.05, 0.95); got {quantiles!r}."
            raise ValueError(msg)
    if isinstance(features, str) and features != "morphology":
        import importlib.util

        if importlib.util.find_spec("timm") is None:
            msg = (
                f"`features={features!r}` is not 'morphology', so it names a timm image encoder, which needs timm: "
                "`pip install 'sr-spatial[encoders]'`. Pass `features='morphology'` for the offline features."
            )
            raise ImportError(msg)
    if checkpoint_dir is not None:
        from sr_spatial.diffusion.train._checkpoint import check_checkpoint_dir

        check_checkpoint_dir(checkpoint_dir)
        if getattr(sdata, "path", None) is not None:
            from sr_spatial._paths import check_apart

            check_apart(
                {"`checkpoint_dir`": checkpoint_dir, "the slide's zarr store": sdata.path},
                inputs=("the slide's zarr store",),
            )


def move_to_device(model: DiffST, device) -> None:
    """Put an in-memory model on the device asked for (raising where it is missing); ``"auto"`` leaves it be."""
    from sr_spatial.diffusion._model import resolve_device

    if isinstance(device, str) and device == "auto":
        return
    target = resolve_device(device)
    if model.device != target:
        model.device = target
        model.network.to(target)


def check_finite(result: BlockResult, genes: list[str]) -> None:
    """Refuse a block whose maps hold NaN or infinite values, before anything of it is written."""
    bad = ~(np.isfinite(result.mean) & np.isfinite(result.std))
    bad &= result.owned[None]
    if not bad.any():
        return
    per_gene = bad.reshape(len(bad), -1).any(axis=1)
    names = [g for g, b in zip(genes, per_gene, strict=True) if b]
    msg = (
        f"The model gave NaN or infinite values for {int(bad.any(axis=0).sum())} bins of {len(names)} genes "
        f"(e.g. {names[:5]}); nothing was written. The model is broken: if it was trained here, training "
        "diverged (retrain with a smaller `learning_rate` in `config` or another `seed`); if it was loaded, "
        "retrain it or load an intact copy."
    )
    raise ValueError(msg)
