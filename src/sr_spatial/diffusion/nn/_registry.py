"""Histology encoders by the name a :class:`~sr_spatial.model.ModelConfig` gives them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sr_spatial.core._pixel_encoder import HistologyEncoder

if TYPE_CHECKING:
    from collections.abc import Callable

    from sr_spatial.core._image_encoder import Encoder

__all__ = ["ENCODERS", "build_encoder"]

#: Encoder constructors by name, each called as ``constructor(n_genes=..., width=...)``.
ENCODERS: dict[str, Callable[..., Encoder]] = {"cnn": HistologyEncoder}


def build_encoder(name: str, *, n_genes: int, width: int) -> Encoder:
    """The encoder called ``name``, estimating ``n_genes`` genes, with hidden ``width``."""
    if name not in ENCODERS:
        msg = f"Unknown histology encoder {name!r}; choose one of {sorted(ENCODERS)}."
        raise ValueError(msg)
    return ENCODERS[name](n_genes=n_genes, width=width)
