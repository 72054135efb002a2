"""What every saved model's folder shares: its ``config.json``, the checks of what it holds, the genes' order."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

__all__ = ["CONFIG_FILE", "check_genes", "check_saved_meta"]

CONFIG_FILE = "config.json"


def check_genes(model_genes: Sequence[str], genes: Sequence[str]) -> None:
    """Raise a clear error unless ``genes`` are exactly ``model_genes``, in order."""
    genes = [str(g) for g in genes]
    if genes == list(model_genes):
        return
    missing = [g for g in model_genes if g not in set(genes)]
    extra = [g for g in genes if g not in set(model_genes)]
    if not missing and not extra:
        msg = "The genes match the model's but in another order; pass them in the model's order (`model.genes`)."
    else:
        msg = (
            f"The model was trained on {len(model_genes)} genes that differ from the {len(genes)} requested: "
            f"missing from the data {missing[:10]}, not in the model {extra[:10]}. Pass `genes=model.genes` "
            "or train a model on these genes."
        )
    raise ValueError(msg)


def check_saved_meta(meta, path: Path, *, format_version: int) -> None:
    """Refuse a ``config.json`` that is incomplete, holds values of the wrong type or is in too new a format.

    ``format_version`` is the newest format this version of sr_spatial reads.
    """
    if not isinstance(meta, dict):
        msg = f"{path / CONFIG_FILE} does not hold a saved model's settings. Re-save or re-train the model."
        raise ValueError(msg)
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        msg = (
            f"{path / CONFIG_FILE} has `format_version` {version!r}, not an integer; the file was edited or written "
            "by another program. Re-save the model with `DiffST.save`, or re-train it."
        )
        raise ValueError(msg)
    if version > format_version:
        msg = (
            f"The model in {path} was saved by sr_spatial {meta.get('sr_spatial_version')} in a newer format; "
            "upgrade sr_spatial to load it."
        )
        raise ValueError(msg)
    missing = [key for key in ("config", "genes", "scale", "seed") if key not in meta]
    if missing:
        msg = f"{path / CONFIG_FILE} lacks {missing}; it is not a complete saved model. Re-save or re-train it."
        raise ValueError(msg)
    genes = meta["genes"]
    if not isinstance(genes, list) or not genes or not all(isinstance(g, str) for g in genes):
        msg = f"{path / CONFIG_FILE} has no list of gene names under 'genes'. Re-save or re-train the model."
        raise ValueError(msg)
