"""Model configurations, named by size."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

from sr_spatial.core._presets import check_keys, resolve_preset
from sr_spatial.diffusion.nn._registry import ENCODERS

__all__ = ["ABLATIONS", "PRESETS", "ModelConfig", "check_sampling_steps", "resolve_config"]


@dataclass(frozen=True)
class ModelConfig:
    """Hyper-parameters of :class:`~sr_spatial.model.DiffST`.

    Attributes
    ----------
    channels
        Width of the denoiser UNet's first level; deeper levels multiply it by ``channel_mult``.
    channel_mult
        One multiplier per UNet level; each level after the first halves the resolution.
    histology_encoder
        The histology encoder, by name (:data:`sr_spatial.diffusion.nn._registry.ENCODERS`): ``"cnn"``, a small
        convolutional net fitted to the slide's own spots.
    histology_base
        Generate the residual around the histology predictor of ``method="histology"`` (the measurement plus the
        within-spot detail of a ridge on morphology features, weighted per gene on held-out spots) instead of
        around the blend of the measurement and this model's own encoder: training scenes get the predictor's
        held-out map at their spots as base, the output the predictor's map fitted on the slide it is applied
        to, and the measurement channel of the condition carries that base. Off by default (see
        :doc:`/benchmarks`).
    base_features
        With ``histology_base``, the histology features of that predictor, by name: ``"morphology"`` (offline)
        or a timm model id (see :func:`sr_spatial.tl.superresolve`'s ``features``); kept with the model, so the
        predictor is refitted on the same features wherever it is applied.
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
    use_cmam
        Multi-modal disentangling network with cross-modal adaptive modulation (CMAM): expression and histology
        features split into shared and specific parts, which scale and shift every UNet resolution. Like the
        other two modules, off by default: none of them raised accuracy in ``benchmarks/results/ablation_*.md``,
        and together they make training about 2.5 times slower.
    cmam_channels
        Width of each disentangled part.
    disentangle_weight
        Weight of the disentangling losses (shared parts alike, specific parts orthogonal) beside the
        diffusion loss.
    use_cross_attention
        Dynamic cross-attention from the bins to cell-level and tissue-level histology tokens.
    attention_window
        Side, in bins, of the windows the attention runs in (bounds its memory); a multiple of 4.
    attention_heads
        Attention heads; must divide ``channels``.
    use_gene_graph
        Co-expression gene-correlation graph network (GCGN) modulating the gene channels.
    gene_graph_k
        Co-expressed neighbours kept per gene.
    gene_embedding_dim
        Width of the gene embeddings of the graph network.
    tile_bins
        Side, in bins, of the tiles sampled together; larger slides are cut into overlapping tiles.
    tile_overlap
        Bins shared by neighbouring tiles, blended linearly when stitching.
    precision
        ``"auto"`` (bf16 on CUDA where supported, else fp16; always fp32 on CPU and MPS), ``"fp32"``, ``"bf16"``
        or ``"fp16"``; reduced precision applies on CUDA only.
    compile
        Compile the network with :func:`torch.compile` (worth it on GPU for long runs; off by default).
    """

    channels: int = 24
    channel_mult: tuple[int, ...] = (1, 2)
    histology_encoder: str = "cnn"
    histology_base: bool = False
    base_features: str = "morphology"
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
    sampling_steps: int = 10
    n_pool_offsets: int = 4
    use_cmam: bool = False
    cmam_channels: int = 16
    disentangle_weight: float = 0.1
    use_cross_attention: bool = False
    attention_window: int = 8
    attention_heads: int = 2
    use_gene_graph: bool = False
    gene_graph_k: int = 8
    gene_embedding_dim: int = 16
    tile_bins: int = 96
    tile_overlap: int = 16
    precision: str = "auto"
    compile: bool = False

    def __post_init__(self):
        _check_field_types(self)
        if self.histology_encoder not in ENCODERS:
            msg = f"`histology_encoder` must be one of {sorted(ENCODERS)}, got {self.histology_encoder!r}."
            raise ValueError(msg)
        if not isinstance(self.base_features, str) or not self.base_features:
            msg = (
                f"`base_features` must name the features ('morphology' or a timm model id), got {self.base_features!r}."
            )
            raise ValueError(msg)
        if self.prediction not in ("v", "epsilon"):
            msg = f"`prediction` must be 'v' or 'epsilon', got {self.prediction!r}."
            raise ValueError(msg)
        if self.px_per_bin < 2 or self.px_per_bin & (self.px_per_bin - 1):
            msg = f"`px_per_bin` must be a power of two >= 2, got {self.px_per_bin}."
            raise ValueError(msg)
        multiple = 2 ** (len(self.channel_mult) - 1)
        if self.patch_bins % multiple:
            msg = "`patch_bins` must be divisible by 2 ** (len(channel_mult) - 1)."
            raise ValueError(msg)
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            msg = f"`precision` must be 'auto', 'fp32', 'bf16' or 'fp16', got {self.precision!r}."
            raise ValueError(msg)
        if self.attention_window % 4 or self.attention_window < 4:
            msg = f"`attention_window` must be a positive multiple of 4, got {self.attention_window}."
            raise ValueError(msg)
        if self.use_cross_attention and self.channels % self.attention_heads:
            msg = f"`attention_heads` ({self.attention_heads}) must divide `channels` ({self.channels})."
            raise ValueError(msg)
        if self.tile_bins % multiple or self.tile_bins <= 2 * self.tile_overlap or self.tile_overlap < 0:
            msg = (
                "`tile_bins` must be a multiple of 2 ** (len(channel_mult) - 1) and larger than twice "
                f"`tile_overlap`; got tile_bins={self.tile_bins}, tile_overlap={self.tile_overlap}."
            )
            raise ValueError(msg)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["channel_mult"] = list(self.channel_mult)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ModelConfig:
        check_keys(cls, d, what="model configuration")
        d = dict(d)
        if "channel_mult" in d:
            d["channel_mult"] = tuple(d["channel_mult"])
        return cls(**d)


#: Fields that may be 0 (every other number must be positive).
_MAY_BE_ZERO = {"tile_overlap", "disentangle_weight", "ema_decay"}


def _check_field_types(config: ModelConfig) -> None:
    """Refuse a field of the wrong type (``"10"`` steps, ``True`` channels) or a number out of its range."""
    import math
    import numbers

    for field in fields(config):
        value, kind = getattr(config, field.name), field.type
        name = f"`{field.name}`"
        if kind == "bool":
            ok = isinstance(value, bool)
        elif kind == "int":
            ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
        elif kind == "float":
            ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        elif kind == "str":
            ok = isinstance(value, str)
        else:  # channel_mult: positive integers
            ok = (
                isinstance(value, tuple | list)
                and len(value) > 0
                and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v > 0 for v in value)
            )
        if not ok:
            msg = f"Model configuration {name} must be of type {kind}, got {value!r}."
            raise TypeError(msg)
        if kind in ("int", "float") and (value < 0 or (value == 0 and field.name not in _MAY_BE_ZERO)):
            limit = "0 or more" if field.name in _MAY_BE_ZERO else "positive"
            msg = f"Model configuration {name} must be {limit}, got {value!r}."
            raise ValueError(msg)
    if not config.ema_decay < 1:
        msg = f"Model configuration `ema_decay` must lie in [0, 1), got {config.ema_decay!r}."
        raise ValueError(msg)


#: Named configurations, by size. ``"tiny"`` trains in seconds on a CPU (tests, CI); ``"base"`` is the default and
#: runs in minutes on a laptop CPU; ``"large"`` is meant for a GPU (wider, longer training, more sampling steps).
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
    "large": ModelConfig(
        channels=64,
        channel_mult=(1, 2, 2),
        histology_width=32,
        encoder_steps=2000,
        encoder_batch_size=64,
        train_steps=4000,
        batch_size=32,
        patch_bins=32,
        learning_rate=1e-3,
        ema_decay=0.999,
        sampling_steps=25,
        n_pool_offsets=8,
        cmam_channels=32,
        attention_heads=4,
        gene_embedding_dim=32,
        tile_bins=128,
    ),
}

#: Ablation variants as configuration overrides: the full model (all three of the paper's modules), each module
#: switched off, and the first version (no module, only the histology encoder, base blend and UNet). The
#: presets use the first version: as accurate as any variant measured, and the fastest.
_ALL_MODULES = {"use_cmam": True, "use_cross_attention": True, "use_gene_graph": True}
ABLATIONS: dict[str, dict] = {
    "full": _ALL_MODULES,
    "no_cmam": {**_ALL_MODULES, "use_cmam": False},
    "no_cross_attention": {**_ALL_MODULES, "use_cross_attention": False},
    "no_gene_graph": {**_ALL_MODULES, "use_gene_graph": False},
    "first_version": {"use_cmam": False, "use_cross_attention": False, "use_gene_graph": False},
}


def resolve_config(config: str | ModelConfig | dict | None, **overrides) -> ModelConfig:
    """A :class:`ModelConfig` from a preset name, a config, or a dict, with keyword overrides applied."""
    return resolve_preset(config, presets=PRESETS, cls=ModelConfig, alternatives="a ModelConfig", **overrides)


def check_sampling_steps(sampling_steps: int | None, config: ModelConfig) -> None:
    """Refuse more DDIM steps than the model has timesteps (they would be cut silently)."""
    if sampling_steps is not None and sampling_steps > config.timesteps:
        msg = (
            f"`sampling_steps={sampling_steps}` exceeds the model's {config.timesteps} diffusion timesteps; "
            f"pass at most {config.timesteps}, or None for the default ({config.sampling_steps})."
        )
        raise ValueError(msg)
