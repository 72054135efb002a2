"""Plotting."""

from sr_spatial.pl._superres import superres

__all__ = ["superres"]
