"""Comparing maps on different grids: box averages of the source over each target pixel."""

from __future__ import annotations

import numpy as np
from spatialdata import SpatialData
from spatialdata.models import Image2DModel
from spatialdata.transformations import Scale, Sequence, Translation, set_transformation

from sr_spatial.tl._evaluate import regrid_to


def test_regrid_averages_the_source_over_each_target_pixel():
    rng = np.random.default_rng(0)
    fine = rng.random((2, 12, 16))
    source = Image2DModel.parse(fine, dims=("c", "y", "x"), c_coords=["a", "b"])
    target = Image2DModel.parse(np.zeros((1, 3, 3)), dims=("c", "y", "x"), c_coords=["a"])
    # A target pixel is 4 x 4 source pixels; the target starts 2 source pixels to the right.
    to_fine = Sequence([Scale([4.0, 4.0], axes=("y", "x")), Translation([2.0], axes=("x",))])
    set_transformation(target, to_fine, "global")
    sdata = SpatialData(images={"fine": source, "coarse": target})
    out = regrid_to(sdata, "fine", "coarse", channels=["b", "a"])
    assert out.shape == (2, 3, 3)
    for row in range(3):
        for col in range(3):
            block = fine[:, 4 * row : 4 * row + 4, 2 + 4 * col : 6 + 4 * col]
            np.testing.assert_allclose(out[:, row, col], block.mean(axis=(1, 2))[::-1], rtol=1e-6)
