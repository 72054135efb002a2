"""The diffusion model: network parts (``nn``), its fitted state and sampler (``module``), training (``train``)."""

from sr_spatial.model._config import ABLATIONS, PRESETS, ModelConfig
from sr_spatial.model._device import resolve_device
from sr_spatial.model._model import DiffST
from sr_spatial.model._scene import Scene

__all__ = ["ABLATIONS", "PRESETS", "DiffST", "ModelConfig", "Scene", "resolve_device"]
