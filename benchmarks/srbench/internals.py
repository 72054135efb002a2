"""Everything the benchmarks take from sr_spatial beyond its public API, in one place, with the reason for each.

The rest of ``benchmarks/`` uses ``sr_spatial``'s public API (``sr.pp``, ``sr.tl``, ``sr.model``, ``sr.datasets``)
and imports private names only from here, so a change inside the package shows up in this one file. Besides
these imports, ``demo_accuracy.py`` calls the private method ``DiffST._inputs`` for its ablation row (the
denoiser's deterministic base map, which no public call returns).
"""

from __future__ import annotations

# Mean per pooled spot of items given by a group index (projection, ridge detail, within-spot metrics). The public
# sr.tl.project_to_spots works on a footprint image (bins on a grid), not on scattered items.
from sr_spatial._groups import group_means

# A preset with the ablation switches of sr_spatial.model.ABLATIONS applied (ablation.py); the public ModelConfig
# has no "preset name plus overrides" constructor.
from sr_spatial.model._config import resolve_config

# Cubic (Clough-Tocher) interpolation at scattered points, clipped at 0, nearest where undefined: how the package
# renders `smooth`, the "cubic" baseline. No public function interpolates at arbitrary points.
from sr_spatial.model._spread import smooth_at

# The full-resolution level of an image element, multiscale or not: the benchmarks read the written map and the
# H&E pixel by pixel, and nothing public returns that level for both kinds.
from sr_spatial.tl._evaluate import _single_scale as single_scale

# The masked SSIM sr.tl.evaluate reports, on the benchmarks' own lattice of scored items; evaluate itself only
# scores a map against a truth image stored in the same SpatialData.
from sr_spatial.tl._evaluate import _ssim as masked_ssim

# The box average of the truth image over the output bins that sr.tl.evaluate scores against, for maps evaluate
# does not take (the model's base map, the projected posterior mean per number of draws).
from sr_spatial.tl._evaluate import regrid_to

# The hexagonal lattice reference training uses, so hd_truth's Visium-like spots lie as the package's own do.
from sr_spatial.tl._reference import visium_lattice

# The model's input at the output resolution, to call DiffST.sample (sampling_curve.py) and DiffST._inputs
# (demo_accuracy.py) directly, which sr.tl.superresolve does not expose.
from sr_spatial.tl._train import output_scene

__all__ = [
    "group_means",
    "masked_ssim",
    "output_scene",
    "regrid_to",
    "resolve_config",
    "single_scale",
    "smooth_at",
    "visium_lattice",
]
