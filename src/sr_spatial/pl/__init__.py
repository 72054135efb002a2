"""Plotting."""

from sr_spatial.pl._benchmark import benchmark
from sr_spatial.pl._calibration import calibration
from sr_spatial.pl._superres import superres

__all__ = ["benchmark", "calibration", "superres"]
