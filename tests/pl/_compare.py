"""Image comparison of figures against committed PNGs, with a tolerance (as squidpy's ``PlotTester``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.testing.compare import compare_images

EXPECTED = Path(__file__).parent / "_images"
#: RMS difference (0-255 grey levels) allowed, for font rasterisation that differs across FreeType builds.
TOLERANCE = 8
DPI = 60


def assert_matches(fig, name: str, tmp_path: Path, *, tol: float = TOLERANCE) -> None:
    """Save ``fig`` and compare it with ``_images/{name}.png``; ``SR_SPATIAL_UPDATE_IMAGES=1`` (re)writes that file."""
    actual = tmp_path / f"{name}.png"
    fig.savefig(actual, dpi=DPI)
    plt.close(fig)
    expected = EXPECTED / f"{name}.png"
    if os.environ.get("SR_SPATIAL_UPDATE_IMAGES") == "1":
        shutil.copyfile(actual, expected)
    assert expected.is_file(), f"No expected image {expected}; create it with SR_SPATIAL_UPDATE_IMAGES=1."
    result = compare_images(str(expected), str(actual), tol=tol)
    assert result is None, result
