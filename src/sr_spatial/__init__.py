"""sr_spatial: histology-guided diffusion super-resolution of spatial transcriptomics on SpatialData."""

import warnings
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("sr-spatial")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

with warnings.catch_warnings():
    # spatialdata imports pooch, which imports tqdm.auto; in a Jupyter kernel without ipywidgets that warns
    # "IProgress not found" although no bar is shown. sr_spatial's own bars fall back to text bars without it
    # (`_logging.progress_bar`), so the warning would only confuse; it is hidden for this import alone.
    warnings.filterwarnings("ignore", message="IProgress not found")
    from sr_spatial import datasets, model, pl, pp, tl
    from sr_spatial._logging import settings

# anndata announces, for every array of every table written to zarr v3, that it will shard arrays by default in a
# later release; `SpatialData.write` offers no option to choose, so writing a result printed dozens of these. The
# notice concerns anndata's future default, not the data written: this one message is hidden.
warnings.filterwarnings("ignore", message="zarr v3 autosharding will be the default", category=UserWarning)

__all__ = ["__version__", "datasets", "model", "pl", "pp", "settings", "tl"]
