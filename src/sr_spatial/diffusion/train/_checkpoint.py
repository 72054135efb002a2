"""Training checkpoints: written atomically, and read back only by the run they belong to."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sr_spatial.core._scene import Scene
    from sr_spatial.diffusion._config import ModelConfig

__all__ = [
    "ENCODER_CHECKPOINT",
    "TRAINING_CHECKPOINT",
    "check_checkpoint_dir",
    "fingerprint",
    "load_checkpoint",
    "save_checkpoint",
]

#: The fitted encoder, statistics and blend, written once before the denoiser trains.
ENCODER_CHECKPOINT = "encoder.pt"
#: The denoiser's whole training state, rewritten as it trains.
TRAINING_CHECKPOINT = "training.pt"


def fingerprint(
    scenes: Sequence[Scene], reference: Scene, *, config: ModelConfig, genes: list[str], seed: int, steps: int
) -> str:
    """What a checkpoint must match: settings, genes and (a digest of) the training data."""
    digest = hashlib.sha256()
    for scene in [reference, *scenes]:
        for array in (scene.nearest, scene.target, scene.spot_values):
            if array is not None:
                digest.update(np.ascontiguousarray(array).tobytes())
    settings = {"config": config.to_dict(), "genes": genes, "seed": seed, "steps": steps}
    return json.dumps(settings, sort_keys=True) + digest.hexdigest()


def save_checkpoint(path: Path, fingerprint: str, **state) -> None:
    """Write ``state`` to ``path`` atomically, so an interruption while writing leaves the previous one intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    torch.save({"fingerprint": fingerprint, **state}, partial)
    os.replace(partial, path)


def load_checkpoint(path: Path, fingerprint: str) -> dict:
    """Read a checkpoint of :func:`save_checkpoint` (``weights_only``) and check it belongs to this run."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        msg = f"Could not read the checkpoint {path} ({type(err).__name__}: {err}); delete it to start afresh."
        raise ValueError(msg) from err
    if state.get("fingerprint") != fingerprint:
        msg = (
            f"The checkpoint {path} belongs to a run with other genes, configuration, seed or steps; "
            "use another `checkpoint_dir` or delete it to start afresh."
        )
        raise ValueError(msg)
    return state


def check_checkpoint_dir(checkpoint_dir) -> None:
    """Refuse a ``checkpoint_dir`` that is a file or cannot be created or written, before any training."""
    if not isinstance(checkpoint_dir, str | os.PathLike):
        msg = f"`checkpoint_dir` must be a folder path or None, got {type(checkpoint_dir).__name__}."
        raise TypeError(msg)
    path = Path(checkpoint_dir)
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is not None and not existing.is_dir():
        msg = (
            f"`checkpoint_dir` {str(path)!r} is not a folder ({str(existing)!r} is a file). Pass a folder to keep "
            "the training state in, e.g. 'checkpoints'."
        )
        raise ValueError(msg)
    if existing is not None and not os.access(existing, os.W_OK | os.X_OK):
        msg = (
            f"`checkpoint_dir` {str(path)!r} cannot be written ({str(existing)!r} is read-only). Pass a folder you "
            "can write to."
        )
        raise ValueError(msg)
