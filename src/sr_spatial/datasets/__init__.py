"""Datasets: a synthetic demo slide with known high-resolution truth."""

from sr_spatial.datasets._demo import demo

__all__ = ["demo"]
