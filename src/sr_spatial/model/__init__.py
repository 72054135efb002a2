"""The diffusion model: encoders, CMAM, dynamic cross-attention, gene graph, UNet, sampler, training loop."""

from sr_spatial.model._config import ABLATIONS, PRESETS, ModelConfig
from sr_spatial.model._model import DiffST, resolve_device
from sr_spatial.model._scene import Scene

__all__ = ["ABLATIONS", "PRESETS", "DiffST", "ModelConfig", "Scene", "resolve_device"]
