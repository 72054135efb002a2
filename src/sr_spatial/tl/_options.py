"""The options of :func:`~sr_spatial.tl.superresolve`, grouped by what they are about.

Where the data is (:class:`SlideKeys`), how the method fits and draws (:class:`MethodOptions`) and how the call
runs and writes (:class:`RunOptions`). Each group is a small frozen dataclass, or a dict of its fields; every
field may also be passed to ``superresolve`` by its own name (``table_key="counts"``, ``device="cpu"``), as in
earlier releases.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

__all__ = ["MethodOptions", "RunOptions", "SlideKeys", "group_options"]


@dataclass(frozen=True)
class SlideKeys:
    """Where the slide's data is in the SpatialData, besides the image.

    Attributes
    ----------
    table_key
        Table of raw counts that annotates the spots.
    shapes_key
        Spots (circles or square bins); default: the shapes the table annotates.
    coordinate_system
        Coordinate system shared by image and spots; default: the first they share.
    stain
        How the image is read: ``"brightfield"`` (H&E: tissue dark on light glass), ``"fluorescence"`` (tissue bright
        on a dark background, read inverted) or ``"auto"`` (decided from the tissue against the glass around it,
        with a warning when it cannot tell).
    """

    table_key: str = "table"
    shapes_key: str | None = None
    coordinate_system: str | None = None
    stain: str = "auto"


@dataclass(frozen=True)
class MethodOptions:
    """How the method fits its model and computes the maps; each applies to the methods named.

    Attributes
    ----------
    features
        ``"histology"``: the histology features (default: the configuration's, ``"morphology"``); see
        :class:`~sr_spatial.model.HistologyConfig`.
    image_um_per_px
        Micrometres per full-resolution H&E pixel; needed by image encoders as features.
    learned_encoder
        ``"histology"``: also cross-fit learned encoders (``True``, ``False``, ``"auto"``; default: the
        configuration's, ``"auto"``).
    train_steps
        Optimiser steps of what is trained here: the diffusion model's denoiser (its own encoder's steps scale in
        proportion) or each of the histology method's learned encoders. Default: the configuration's.
    n_samples
        ``"diffusion"``: draws whose spread is the uncertainty.
    sampling_steps
        ``"diffusion"``: DDIM steps; default: the model's configuration.
    reference
        Reference slides with finer truth (one SpatialData or a list): the method is first trained on them for
        this slide (:func:`sr_spatial.tl.train` with ``reference=True, target=sdata``), then applied.
    reference_image_key
        The references' image, one key for all or one per reference; default: the slide's ``image_key``.
    reference_aggregate
        The references' bins pooled into one unit along each axis (``aggregate`` of :func:`sr_spatial.tl.train`):
        3 for 8 µm Visium HD bins and a 25 µm output. Default 1: the bins are the units.
    """

    features: Any = None
    image_um_per_px: float | None = None
    learned_encoder: bool | Literal["auto"] | None = None
    train_steps: int | None = None
    n_samples: int = 8
    sampling_steps: int | None = None
    reference: Any = None
    reference_image_key: str | Sequence[str] | None = None
    reference_aggregate: int = 1


@dataclass(frozen=True)
class RunOptions:
    """Where the call computes and what it writes besides the four output elements.

    Attributes
    ----------
    device
        ``"auto"`` (CUDA, then MPS, then CPU), or a torch device.
    block_bins
        Side of the square blocks the output grid is computed in (each with a margin of context); default: as
        large as keeps a block's draws near 256 MiB.
    client
        A dask.distributed ``Client`` to compute blocks on, ``"auto"`` (dask's default client, if any) or
        ``None``.
    image_store
        A zarr store (folder) to write the two images into block by block; the images are then dask arrays
        over it.
    inplace
        Write into ``sdata`` (default) or return a new SpatialData with the output elements only.
    quantiles
        Also write these quantiles of each bin's predictive distribution as table layers (e.g. ``(0.05, 0.95)``).
    show_progress_bar
        Show progress bars.
    """

    device: Any = "auto"
    block_bins: int | None = None
    client: Any = "auto"
    image_store: str | Path | Any | None = None
    inplace: bool = True
    quantiles: Sequence[float] | None = None
    show_progress_bar: bool = True


_GROUPS = {"slide": SlideKeys, "options": MethodOptions, "run": RunOptions}


def _as_group(name: str, value, cls):
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    if isinstance(value, dict):
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            msg = f"`{name}` has no option {unknown}; its options are {sorted(known)}."
            raise TypeError(msg)
        return cls(**value)
    msg = f"`{name}` must be a {cls.__name__} or a dict of its fields, got {type(value).__name__}."
    raise TypeError(msg)


def group_options(
    function: str, *, slide=None, options=None, run=None, flat: dict[str, Any]
) -> tuple[SlideKeys, MethodOptions, RunOptions]:
    """The three option groups of a call, with options passed by their own names (``flat``) placed in theirs.

    An unknown name is refused with the closest known one; a name given both on its own and in its group is
    refused, so no value is silently dropped.
    """
    groups = {"slide": slide, "options": options, "run": run}
    resolved = {name: _as_group(name, groups[name], cls) for name, cls in _GROUPS.items()}
    owner = {f.name: name for name, cls in _GROUPS.items() for f in fields(cls)}
    placed: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
    for key, value in flat.items():
        if key not in owner:
            close = difflib.get_close_matches(key, [*owner, *_GROUPS], n=1)
            hint = f" Did you mean `{close[0]}`?" if close else ""
            msg = f"{function}() got an unexpected keyword argument {key!r}.{hint}"
            raise TypeError(msg)
        group = owner[key]
        given = groups[group]
        if given is not None and (key in given if isinstance(given, dict) else True):
            msg = f"`{key}` is given both on its own and in `{group}`; pass it once."
            raise TypeError(msg)
        placed[group][key] = value
    out = [replace(resolved[name], **placed[name]) if placed[name] else resolved[name] for name in _GROUPS]
    return out[0], out[1], out[2]
