"""Histology features per bin: the seam between the H&E and the models that predict expression from it."""

from sr_spatial.features._base import HistologyFeatures
from sr_spatial.features._encoder import EncoderFeatures, load_timm_encoder
from sr_spatial.features._extract import bin_features, resolve_features
from sr_spatial.features._morphology import MorphologyFeatures
from sr_spatial.features._nuclei import NucleiFeatures

__all__ = [
    "EncoderFeatures",
    "HistologyFeatures",
    "MorphologyFeatures",
    "NucleiFeatures",
    "bin_features",
    "load_timm_encoder",
    "resolve_features",
]
