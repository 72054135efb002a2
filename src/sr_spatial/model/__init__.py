"""The models: the histology predictor (``HistologyModel``) and the diffusion model (``DiffST``).

Each has its configuration (``HistologyConfig``, ``ModelConfig``) and saves and loads (:func:`load` reads either).
The diffusion model's network parts live in ``nn``, its fitted state and sampler in ``module``, training in ``train``.
"""

from sr_spatial.model._config import ABLATIONS, PRESETS, ModelConfig, resolve_config
from sr_spatial.model._device import resolve_device
from sr_spatial.model._histology import HistologyModel
from sr_spatial.model._histology_config import HISTOLOGY_PRESETS, HistologyConfig
from sr_spatial.model._load import load
from sr_spatial.model._model import DiffST
from sr_spatial.model._scene import Scene

__all__ = [
    "ABLATIONS",
    "HISTOLOGY_PRESETS",
    "PRESETS",
    "DiffST",
    "HistologyConfig",
    "HistologyModel",
    "ModelConfig",
    "Scene",
    "load",
    "resolve_config",
    "resolve_device",
]
