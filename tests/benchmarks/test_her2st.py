"""The her2st reader and protocol 2c pieces that need no model (the model runs in the benchmark itself)."""

from __future__ import annotations

import numpy as np
import pytest
from srbench import her2st as _her2st

pytestmark = pytest.mark.realdata
SECTION = "C2"


@pytest.fixture(scope="module")
def section():
    if not (_her2st.data_root() / "her2st" / SECTION).is_dir():
        pytest.skip("her2st data not found (../shared/data or $SR_SPATIAL_DATA)")
    return _her2st.load_section(SECTION)


def test_reader_geometry(section):
    # 200 µm lattice pitch over ~290-320 px per step in he.jpg: a pixel of ~0.6-0.7 µm.
    assert 0.55 < section.um_per_px < 0.8
    assert section.counts.shape == (len(section.spot_ids), len(section.genes))
    assert section.genes.is_unique
    assert section.image.shape[0] == 3


def test_spatialdata_is_what_the_package_reads(section):
    import sr_spatial as sr

    sdata = _her2st.to_spatialdata(section)
    st_map = sr.pp.build_st_map(sdata, "he", genes=section.genes[:3].tolist(), scale=2)
    # Spots are placed through the Scale of the downscaled image: ~200 µm pitch in its pixels. The package's
    # pitch is the median nearest-neighbour distance, a little below the lattice pitch for jittered spot centres.
    pitch_um = st_map.pitch * section.downscale * section.um_per_px
    assert 180.0 < pitch_um <= 201.0
    assert len(st_map.centres) == len(section.spot_ids)


def test_pooling_sums_counts_into_2x2_blocks(section):
    pseudo = _her2st.pool_2x2(section)
    np.testing.assert_allclose(pseudo.counts.sum(axis=0), section.counts.sum(axis=0), rtol=1e-5)
    assert np.bincount(pseudo.group).max() <= 4
    # Every pooled spot's centre lies inside its pseudo-spot's disk (spot centres jitter around the lattice).
    distance = np.linalg.norm(section.centres - pseudo.centres[pseudo.group], axis=1)
    assert distance.max() < pseudo.radius_px


def test_protocol_scores_without_the_model(section):
    frame = _her2st.run_her2st(section, methods=("nearest", "cubic_proj", "ridge_proj", "sr_spatial_grid_nearest"))
    means = frame.groupby("method").mean(numeric_only=True)
    assert set(means.index) == {"nearest", "cubic_proj", "ridge_proj", "sr_spatial_grid_nearest"}
    # Nearest and the projected variants reproduce the pooled measurement exactly.
    assert means.loc[["nearest", "cubic_proj", "ridge_proj"], "spot_residual"].max() < 1e-6
    assert np.isnan(means.loc["nearest", "pearson_within"])
    # The package's own nearest map on the scale-2 grid gives each measured spot its pseudo-spot.
    assert means.loc["sr_spatial_grid_nearest", "pearson"] == pytest.approx(means.loc["nearest", "pearson"], abs=0.03)
    assert (means["pearson"] > 0.2).all()
