"""Saving and loading a :class:`~sr_spatial.model.HistologyModel`: ``config.json`` beside its arrays.

``config.json`` (with ``"kind": "histology"``, so :func:`sr_spatial.model.load` knows the folder) holds the
configuration, the genes and a checksum over the genes and every array; ``histology.npz`` the fitted arrays;
``encoders.pt`` the learned encoders' weights, where the model has them.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sr_spatial.core._saved import CONFIG_FILE, check_saved_meta
from sr_spatial.histology._config import HistologyConfig
from sr_spatial.histology._learned import LearnedDetail
from sr_spatial.histology._regression import DetailModel, Ridge

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["ARRAYS_FILE", "ENCODERS_FILE", "FORMAT_VERSION", "KIND", "load_histology", "save_histology"]

#: Saved arrays of the fitted predictor, besides ``config.json``.
ARRAYS_FILE = "histology.npz"
#: Saved weights of the learned encoders, where the model has them.
ENCODERS_FILE = "encoders.pt"
#: Written in ``config.json`` so a folder says which kind of model it holds.
KIND = "histology"
FORMAT_VERSION = 1
_PER_GENE = (
    "weight",
    "interpolation_weight",
    "learned_weight",
    "heldout_r",
    "residual_sd",
    "spread",
    "coverage_scale",
    "typical_sd",
    "group_detail_variance",
    "group_learned_variance",
)


def save_histology(model: Any, path: str | Path, *, overwrite: bool) -> Path:
    """Write ``model`` to the directory ``path``; see :meth:`~sr_spatial.model.HistologyModel.save`."""
    import torch

    from sr_spatial._version import __version__

    if model.config.features_name is None:
        msg = (
            f"This model's features are an object ({model.features_repr}), which cannot be saved; fit it with "
            "features given by name ('morphology' or a timm model id) to keep it."
        )
        raise TypeError(msg)
    path = Path(path)
    present = [name for name in (CONFIG_FILE, ARRAYS_FILE, ENCODERS_FILE) if (path / name).exists()]
    if present and not overwrite:
        msg = f"{path} already holds {present}; pass `overwrite=True` to replace the model saved there."
        raise FileExistsError(msg)
    if present and _saved_kind(path) != KIND:
        msg = f"{path / CONFIG_FILE} was not written by `HistologyModel.save`; it is left alone. Choose another folder."
        raise FileExistsError(msg)
    arrays = _arrays(model)
    meta = {
        "kind": KIND,
        "format_version": FORMAT_VERSION,
        "sr_spatial_version": __version__,
        "config": model.config.to_dict(),
        "genes": model.genes,
        "scale": model.scale,
        "seed": model.seed,
        "n_groups": model.predictor.n_groups,
        "finer_ratio": model.predictor.finer_ratio,
        "uses_learned_encoder": model.uses_learned_encoder,
        "features_repr": model.features_repr,
        "reference": model.reference,
        "learned_width": None if model.learned is None else model.learned.width,
        "learned_px_per_bin": None if model.learned is None else model.learned.px_per_bin,
        "checksum": _checksum(arrays, model.genes),
    }
    path.mkdir(parents=True, exist_ok=True)
    np.savez(path / ARRAYS_FILE, **arrays)
    if model.learned is not None:
        torch.save(list(model.learned.encoders), path / ENCODERS_FILE)
    (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
    return path


def load_histology(path: str | Path) -> dict:
    """The constructor arguments of the model saved in ``path``; see :meth:`~sr_spatial.model.HistologyModel.load`."""
    import torch

    path = Path(path)
    config_file, arrays_file = path / CONFIG_FILE, path / ARRAYS_FILE
    if not config_file.is_file() or not arrays_file.is_file():
        msg = (
            f"{path} is not a saved histology model (needs {CONFIG_FILE} and {ARRAYS_FILE}). Save one with "
            "`HistologyModel.save`, or fit one with `sr_spatial.tl.train(..., method='histology')`."
        )
        raise FileNotFoundError(msg)
    try:
        meta = json.loads(config_file.read_text())
        with np.load(arrays_file) as stored:
            arrays = {name: stored[name] for name in stored.files}
    except Exception as err:
        msg = f"Could not read the histology model in {path} ({type(err).__name__}: {err}). Re-save or re-fit it."
        raise ValueError(msg) from err
    check_saved_meta(meta, path, format_version=FORMAT_VERSION)
    if _checksum(arrays, meta["genes"]) != meta.get("checksum"):
        msg = (
            f"The model in {path} does not match its checksum: {ARRAYS_FILE} or the gene list in {CONFIG_FILE} "
            "changed after saving, so its genes would be mislabelled. Re-save or re-fit the model."
        )
        raise ValueError(msg)
    learned = None
    if "input_mean" in arrays:
        encoders = tuple(torch.load(path / ENCODERS_FILE, map_location="cpu", weights_only=True))
        learned = LearnedDetail(
            heldout=np.zeros((0, len(meta["genes"]))),
            spots=np.zeros((0, len(meta["genes"]))),
            maps=np.zeros((len(meta["genes"]), 0, 0), dtype=np.float32),
            encoders=encoders,
            input_mean=arrays["input_mean"] if arrays["input_mean"].size else None,
            input_std=arrays["input_std"] if arrays["input_std"].size else None,
            width=int(meta["learned_width"]),
            px_per_bin=int(meta["learned_px_per_bin"]),
        )
    return {
        "genes": meta["genes"],
        "predictor": _predictor(arrays, n_groups=int(meta["n_groups"]), finer_ratio=float(meta["finer_ratio"])),
        "config": HistologyConfig.from_dict(meta["config"]),
        "scale": int(meta["scale"]),
        "seed": int(meta["seed"]),
        "learned": learned,
        "uses_learned_encoder": bool(meta.get("uses_learned_encoder", False)),
        "features_repr": meta.get("features_repr"),
        "reference": meta.get("reference"),
    }


def _saved_kind(path: Path) -> str | None:
    try:
        meta = json.loads((path / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta.get("kind") if isinstance(meta, dict) else None


def _arrays(model: Any) -> dict[str, np.ndarray]:
    """Every fitted array, by name, as :meth:`save` writes them."""
    ridge = model.predictor.ridge
    arrays = {
        "ridge_coef": ridge.coef,
        "ridge_intercept": ridge.intercept,
        "ridge_mean": ridge.mean,
        "ridge_scale": ridge.scale,
    }
    for name in _PER_GENE:
        value = getattr(model.predictor, name)
        if value is not None:
            arrays[name] = np.asarray(value)
    if model.learned is not None:
        # Empty for encoders learned on references: each slide is standardised by its own statistics.
        no_statistics = np.zeros(0, dtype=np.float64)
        arrays["input_mean"] = no_statistics if model.learned.input_mean is None else model.learned.input_mean
        arrays["input_std"] = no_statistics if model.learned.input_std is None else model.learned.input_std
    return arrays


def _predictor(arrays: dict[str, np.ndarray], *, n_groups: int, finer_ratio: float) -> DetailModel:
    ridge = Ridge(
        coef=arrays["ridge_coef"],
        intercept=arrays["ridge_intercept"],
        mean=arrays["ridge_mean"],
        scale=arrays["ridge_scale"],
    )
    return DetailModel(
        ridge=ridge,
        n_groups=n_groups,
        finer_ratio=finer_ratio,
        **{name: arrays.get(name) for name in _PER_GENE},
    )


def _checksum(arrays: dict[str, np.ndarray], genes: Sequence[str]) -> str:
    digest = hashlib.sha256("\n".join(genes).encode())
    for name in sorted(arrays):
        digest.update(name.encode())
        digest.update(np.ascontiguousarray(arrays[name]).tobytes())
    return digest.hexdigest()
