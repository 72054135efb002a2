"""Tools: training, super-resolution and evaluation."""

from sr_spatial._consistency import project_to_spots, spot_residual
from sr_spatial.tl._evaluate import evaluate
from sr_spatial.tl._superresolve import superresolve
from sr_spatial.tl._train import train

__all__ = ["evaluate", "project_to_spots", "spot_residual", "superresolve", "train"]
