"""Model configurations, named by size."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

__all__ = ["PRESETS", "ModelConfig", "resolve_config"]


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of :class:`~sr_spatial.model.DiffST`.

    Attributes
    ----------
    channels
        Width of the denoiser UNet's first level; deeper levels multiply it by ``channel_mult``.
    channel_mult
        One multiplier per UNet level; each level after the first halves the resolution.
    histology_width
        Width of the histology encoder's convolutions at image resolution.
    encoder_steps
        Optimiser steps of the histology encoder, fitted to the spots before the denoiser is trained.
    encoder_batch_size
        Spots per encoder step.
    px_per_bin
        H&E pixels per output bin (a power of two); the image is resampled to this.
    timesteps
        Diffusion steps of the noise schedule (cosine).
    prediction
        What the denoiser predicts: ``"v"`` (velocity, stable with few sampling steps) or ``"epsilon"`` (noise).
    train_steps
        Optimiser steps.
    batch_size
        Training crops per step.
    patch_bins
        Side of a training crop, in bins (a multiple of ``2 ** (len(channel_mult) - 1)``).
    learning_rate
        AdamW learning rate (cosine decay to 10 %).
    ema_decay
        Decay of the exponential moving average of the weights used for sampling.
    sampling_steps
        DDIM steps used by default.
    n_pool_offsets
        Shifted pseudo-spot lattices used for scale-transfer training (more pairs from one slide).
    """

    channels: int = 24
    channel_mult: tuple[int, ...] = (1, 2)
    histology_width: int = 16
    encoder_steps: int = 600
    encoder_batch_size: int = 32
    px_per_bin: int = 8
    timesteps: int = 1000
    prediction: str = "v"
    train_steps: int = 600
    batch_size: int = 8
    patch_bins: int = 16
    learning_rate: float = 2e-3
    ema_decay: float = 0.995
    sampling_steps: int = 25
    n_pool_offsets: int = 4

    def __post_init__(self):
        if self.prediction not in ("v", "epsilon"):
            msg = f"`prediction` must be 'v' or 'epsilon', got {self.prediction!r}."
            raise ValueError(msg)
        if self.px_per_bin < 2 or self.px_per_bin & (self.px_per_bin - 1):
            msg = f"`px_per_bin` must be a power of two >= 2, got {self.px_per_bin}."
            raise ValueError(msg)
        if self.patch_bins % (2 ** (len(self.channel_mult) - 1)):
            msg = "`patch_bins` must be divisible by 2 ** (len(channel_mult) - 1)."
            raise ValueError(msg)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            msg = f"Unknown model configuration keys {sorted(unknown)}; known keys: {sorted(known)}."
            raise ValueError(msg)
        d = dict(d)
        if "channel_mult" in d:
            d["channel_mult"] = tuple(d["channel_mult"])
        return cls(**d)


#: Named configurations. ``"tiny"`` trains in seconds on a CPU (tests, CI); ``"base"`` is the default.
PRESETS: dict[str, ModelConfig] = {
    "tiny": ModelConfig(
        channels=16,
        histology_width=16,
        encoder_steps=300,
        px_per_bin=8,
        train_steps=300,
        batch_size=4,
        patch_bins=16,
        learning_rate=3e-3,
        ema_decay=0.98,
        sampling_steps=10,
        n_pool_offsets=2,
    ),
    "base": ModelConfig(),
}


def resolve_config(config: str | ModelConfig | dict | None, **overrides) -> ModelConfig:
    """A :class:`ModelConfig` from a preset name, a config, or a dict, with keyword overrides applied."""
    if config is None:
        config = "base"
    if isinstance(config, str):
        if config not in PRESETS:
            msg = f"Unknown model configuration {config!r}; choose one of {sorted(PRESETS)} or pass a ModelConfig."
            raise ValueError(msg)
        config = PRESETS[config]
    elif isinstance(config, dict):
        config = ModelConfig.from_dict(config)
    elif not isinstance(config, ModelConfig):
        msg = f"`config` must be a preset name, a ModelConfig or a dict, got {type(config).__name__}."
        raise TypeError(msg)
    overrides = {k: v for k, v in overrides.items() if v is not None}
    return replace(config, **overrides) if overrides else config
