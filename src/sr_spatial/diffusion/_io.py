"""Saving a model to a directory and loading it back: weights, configuration, genes and package version.

``config.json`` holds a checksum of the weights and the gene list, verified on load: a reordered gene list would
otherwise load and mislabel every channel.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch

from sr_spatial.core._saved import CONFIG_FILE, check_genes, check_saved_meta
from sr_spatial.diffusion._config import ABLATIONS

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sr_spatial.diffusion.module._parts import ModelParts

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "check_genes",
    "check_saved_meta",
    "load_model",
    "non_finite_weights",
    "refuse_non_finite",
    "save_model",
    "weights_checksum",
]

logger = logging.getLogger("sr_spatial")

WEIGHTS_FILE = "model.pt"
FORMAT_VERSION = 2

Model = TypeVar("Model", bound="ModelParts")


def weights_checksum(state: dict[str, torch.Tensor], genes: Sequence[str]) -> str:
    """SHA-256 of the gene list (in channel order) and every tensor of ``state`` (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256(json.dumps(list(genes)).encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def non_finite_weights(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` holding NaN or infinite values."""
    return [name for name, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]


def refuse_non_finite(state: dict[str, torch.Tensor]) -> None:
    """Raise if any weight or statistic of ``state`` is NaN or infinite, e.g. after a diverged training run."""
    bad = non_finite_weights(state)
    if bad:
        msg = (
            f"The model holds NaN or infinite weights ({bad[:3]}), e.g. from a training run that diverged. "
            "Retrain it with a smaller `learning_rate` in `config`, or load an intact copy."
        )
        raise ValueError(msg)


def save_model(model: ModelParts, path: str | Path, *, scale: int, version: str, overwrite: bool) -> Path:
    """Write ``model`` to the directory ``path``; see :meth:`~sr_spatial.model.DiffST.save`."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        msg = f"{path} is a file; a model is saved as a directory. Pass a new directory, e.g. 'my_model'."
        raise NotADirectoryError(msg)
    present = [name for name in (WEIGHTS_FILE, CONFIG_FILE) if (path / name).exists()]
    if present and not overwrite:
        ours = (path / WEIGHTS_FILE).is_file() and _is_saved_config(path / CONFIG_FILE)
        what = "a saved model" if ours else f"{' and '.join(present)} that sr_spatial did not write"
        msg = (
            f"{path} already holds {what}; nothing was written. Pass another directory, or `overwrite=True` to "
            f"replace {', '.join(present)}."
        )
        raise FileExistsError(msg)
    state = {k: v.detach().cpu() for k, v in model.network.state_dict().items()}
    meta = {
        "format_version": FORMAT_VERSION,
        "sr_spatial_version": version,
        "config": model.config.to_dict(),
        "genes": model.genes,
        "scale": scale,
        "seed": model.seed,
        "is_trained": model.is_trained,
        "trained_on_references": bool(getattr(model, "trained_on_references", False)),
        "checksum": weights_checksum(state, model.genes),
    }
    try:
        path.mkdir(parents=True, exist_ok=True)
        # Each file is written next to its place and moved there at once: an interrupted save leaves no half file.
        partial = path / f".{WEIGHTS_FILE}.partial"
        torch.save(state, partial)
        os.replace(partial, path / WEIGHTS_FILE)
        partial = path / f".{CONFIG_FILE}.partial"
        partial.write_text(json.dumps(meta, indent=2))
        os.replace(partial, path / CONFIG_FILE)
    except OSError as err:
        msg = f"Cannot save the model in {path} ({err.strerror or err}). Pass a directory you can write to."
        raise OSError(msg) from err
    return path


def _is_saved_config(config_file: Path) -> bool:
    """Whether ``config_file`` is the ``config.json`` of a model :func:`save_model` wrote."""
    try:
        meta = json.loads(config_file.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and "format_version" in meta and "genes" in meta


def load_model(
    build: Callable[..., Model],
    path: str | Path,
    *,
    device: str | torch.device,
    genes: Sequence[str] | None,
) -> Model:
    """A model saved by :func:`save_model`, built with ``build(genes, config=, scale=, device=, seed=)``."""
    path = Path(path)
    config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
    if not config_file.is_file() or not weights_file.is_file():
        msg = (
            f"{path} is not a saved sr_spatial model (needs {CONFIG_FILE} and {WEIGHTS_FILE}). "
            "Save one with `DiffST.save` or train with `sr_spatial.tl.train`."
        )
        raise FileNotFoundError(msg)
    try:
        meta = json.loads(config_file.read_text())
        state = torch.load(weights_file, map_location="cpu", weights_only=True)
    except Exception as err:
        msg = f"Could not read the model in {path} ({type(err).__name__}: {err}). Re-save or re-train it."
        raise ValueError(msg) from err
    check_saved_meta(meta, path, format_version=FORMAT_VERSION)
    config = meta["config"]
    if meta.get("format_version", 1) < 2:
        # Models saved before the paper's modules existed are the first version: all modules off.
        config = {**ABLATIONS["first_version"], **config}
    _check_saved_weights(state, meta, path)
    model = build(meta["genes"], config=config, scale=meta["scale"], device=device, seed=meta["seed"])
    # Models saved before the residual's weight was fitted keep the mean of their draws.
    state.setdefault("residual_weight", torch.ones(len(meta["genes"])))
    # Models saved before the spread was calibrated report it as drawn.
    state.setdefault("spread_scale", torch.ones(len(meta["genes"])))
    # Models saved before the spread was carried to finer bins: its full extrapolation (error ratio 1).
    state.setdefault("spread_error_ratio", torch.ones(len(meta["genes"])))
    try:
        model.network.load_state_dict(state)
    except RuntimeError as err:
        msg = f"The weights in {path} do not fit its configuration ({err}). Re-save or re-train the model."
        raise ValueError(msg) from err
    model.network.to(model.device).eval()
    model.is_trained = bool(meta.get("is_trained", True))
    model.trained_on_references = bool(meta.get("trained_on_references", False))
    if genes is not None:
        check_genes(model.genes, genes)
    return model


def _check_saved_weights(state: dict, meta: dict, path: Path) -> None:
    """Verify the checksum of the weights and gene list, and that every weight is finite."""
    expected = meta.get("checksum")
    if expected is None:
        logger.warning("The model in %s was saved without a checksum (before sr_spatial 0.2); not verified.", path)
    elif weights_checksum(state, meta["genes"]) != expected:
        msg = (
            f"The model in {path} does not match its checksum: {WEIGHTS_FILE} or the gene list in {CONFIG_FILE} "
            "changed after saving (e.g. genes reordered), so its channels would be mislabelled. Re-save the model "
            "from its DiffST with `model.save(path, overwrite=True)`, or re-train it."
        )
        raise ValueError(msg)
    bad = non_finite_weights(state)
    if bad:
        msg = (
            f"The model in {path} holds NaN or infinite weights ({bad[:3]}), e.g. saved from a training run that "
            "diverged. Retrain it with a smaller `learning_rate` in `config`."
        )
        raise ValueError(msg)
