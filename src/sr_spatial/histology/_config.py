"""The histology predictor's configuration, apart from the diffusion model's, named by size like it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from sr_spatial.core._presets import check_keys, resolve_preset

__all__ = ["HISTOLOGY_PRESETS", "HistologyConfig", "resolve_histology_config"]


@dataclass(frozen=True)
class HistologyConfig:
    """Settings of :class:`~sr_spatial.model.HistologyModel`.

    Attributes
    ----------
    features
        The histology features of every bin: ``"morphology"`` (stain, nuclei and texture statistics, offline), a
        timm model id (e.g. ``"hf-hub:MahmoodLab/uni"``), or a :class:`~sr_spatial.features.HistologyFeatures` or
        torch module (such a model cannot be saved: name the features to keep it).
    learned_encoder
        Also cross-fit small convolutional encoders on the spots and weigh their detail like the features':
        ``True``, ``False`` or ``"auto"`` (on slides of at least 1,000 spots whose output grid is not too large
        for the encoders' whole-slide inputs).
    encoder_width
        Channels of the learned encoders' convolutions.
    encoder_steps
        Optimiser steps of each learned encoder.
    encoder_batch_size
        Spots per optimiser step of the learned encoders.
    px_per_bin
        H&E pixels per output bin side the learned encoders read (a power of two).
    """

    features: Any = "morphology"
    learned_encoder: bool | str = "auto"
    encoder_width: int = 16
    encoder_steps: int = 600
    encoder_batch_size: int = 32
    px_per_bin: int = 8

    def __post_init__(self):
        learned = self.learned_encoder
        if not (learned == "auto" if isinstance(learned, str) else isinstance(learned, bool)):
            msg = f"`learned_encoder` must be True, False or 'auto', got {learned!r}."
            raise TypeError(msg)
        for name in ("encoder_width", "encoder_steps", "encoder_batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                msg = f"`{name}` must be a positive integer, got {value!r}."
                raise ValueError(msg)
        if self.px_per_bin < 2 or self.px_per_bin & (self.px_per_bin - 1):
            msg = f"`px_per_bin` must be a power of two >= 2, got {self.px_per_bin}."
            raise ValueError(msg)

    @property
    def features_name(self) -> str | None:
        """The features by name, or ``None`` where they were given as an object."""
        return self.features if isinstance(self.features, str) else None

    def to_dict(self) -> dict:
        """The configuration as plain values (features given as an object become their ``repr``)."""
        d = asdict(self)
        d["features"] = self.features_name or repr(self.features)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> HistologyConfig:
        check_keys(cls, d, what="histology configuration")
        return cls(**d)


#: Named configurations, by size, matching the diffusion model's presets of the same name: ``"tiny"`` trains the
#: learned encoders in seconds (tests), ``"base"`` is the default, ``"large"`` is meant for a GPU.
HISTOLOGY_PRESETS: dict[str, HistologyConfig] = {
    "tiny": HistologyConfig(encoder_steps=300),
    "base": HistologyConfig(),
    "large": HistologyConfig(encoder_width=32, encoder_steps=2000, encoder_batch_size=64),
}


def resolve_histology_config(config: str | HistologyConfig | dict | None, **overrides) -> HistologyConfig:
    """A :class:`HistologyConfig` from a preset name, a config or a dict, with keyword overrides applied."""
    return resolve_preset(
        config,
        presets=HISTOLOGY_PRESETS,
        cls=HistologyConfig,
        alternatives="a HistologyConfig (method='histology') or a ModelConfig (method='diffusion')",
        **overrides,
    )
