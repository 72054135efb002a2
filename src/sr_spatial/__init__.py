"""sr_spatial: histology-guided diffusion super-resolution of spatial transcriptomics on SpatialData."""

import warnings

from sr_spatial._version import __version__

with warnings.catch_warnings():
    # spatialdata imports pooch, which imports tqdm.auto; in a Jupyter kernel without ipywidgets that warns
    # "IProgress not found" although no bar is shown. sr_spatial's own bars fall back to text bars without it
    # (`_logging.progress_bar`), so the warning would only confuse; it is hidden for this import alone.
    warnings.filterwarnings("ignore", message="IProgress not found")
    from sr_spatial import datasets, features, model, pl, pp, tl
    from sr_spatial._logging import hide_sharding_notice, settings

hide_sharding_notice()

__all__ = ["__version__", "datasets", "features", "model", "pl", "pp", "settings", "tl"]
