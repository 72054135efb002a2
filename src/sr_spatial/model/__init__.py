"""The models: the histology predictor (``HistologyModel``) and the diffusion model (``DiffST``).

Each has its configuration (``HistologyConfig``, ``ModelConfig``) and saves and loads (:func:`load` reads either).
This is the models' public face: each method's code lives in its own package (:mod:`sr_spatial.histology`,
:mod:`sr_spatial.diffusion`), what both share in :mod:`sr_spatial.core`.
"""

from sr_spatial.core._device import resolve_device
from sr_spatial.core._scene import Scene
from sr_spatial.diffusion._config import ABLATIONS, PRESETS, ModelConfig, resolve_config
from sr_spatial.diffusion._model import DiffST
from sr_spatial.histology._config import HISTOLOGY_PRESETS, HistologyConfig
from sr_spatial.histology._model import HistologyModel
from sr_spatial.model._load import load

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
