"""sr_spatial: histology-guided diffusion super-resolution of spatial transcriptomics on SpatialData."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sr-spatial")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from sr_spatial import datasets, features, model, pl, pp, tl
from sr_spatial._logging import settings

__all__ = ["__version__", "datasets", "features", "model", "pl", "pp", "settings", "tl"]
