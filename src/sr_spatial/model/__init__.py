"""The diffusion model: histology encoder, UNet denoiser, schedule and sampler, training loop."""

from sr_spatial.model._config import PRESETS, ModelConfig
from sr_spatial.model._model import DiffST, resolve_device
from sr_spatial.model._scene import Scene

__all__ = ["PRESETS", "DiffST", "ModelConfig", "Scene", "resolve_device"]
