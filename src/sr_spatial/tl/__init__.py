"""Tools: training, super-resolution and evaluation."""

from sr_spatial.core._consistency import project_to_spots, spot_residual
from sr_spatial.tl._evaluate import evaluate, full_resolution, masked_ssim, regrid_to
from sr_spatial.tl._options import MethodOptions, RunOptions, SlideKeys
from sr_spatial.tl._superresolve import superresolve
from sr_spatial.tl._train import output_scene, train

__all__ = [
    "MethodOptions",
    "RunOptions",
    "SlideKeys",
    "evaluate",
    "full_resolution",
    "masked_ssim",
    "output_scene",
    "project_to_spots",
    "regrid_to",
    "spot_residual",
    "superresolve",
    "train",
]
