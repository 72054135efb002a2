"""Protocols 2a (downsampled Visium) and 2b (fine bins into Visium-like spots): pooling and scoring, no model."""

from __future__ import annotations

import numpy as np
import pytest
from _readers import HIRES_SCALEF
from scipy.spatial import cKDTree
from srbench import downsampled_visium, hd_truth
from srbench import protocol as _protocol

SEED = 0
NO_MODEL = ("nearest", "cubic", "cubic_proj", "sr_spatial_grid_nearest")


@pytest.fixture(scope="module")
def visium_slide():
    # Not load_slide: that would read a real slide where $SR_SPATIAL_VISIUM or ../shared/data/visium exists.
    return downsampled_visium.demo_slide(seed=SEED)


@pytest.fixture(scope="module")
def binned_slide():
    return hd_truth.synthetic_bins(seed=SEED)


def test_hex_pooling_tiles_the_lattice_into_a_twice_coarser_one(visium_slide):
    pool = downsampled_visium.pool_hex(visium_slide)
    np.testing.assert_allclose(pool.counts.sum(axis=0), visium_slide.counts.sum(axis=0), rtol=1e-5)
    sizes = np.bincount(pool.group)
    assert sizes.max() == 4 and (sizes >= 1).all()
    # Full groups are a spot and three of its neighbours: every member within one pitch of every other.
    pitch = np.median(cKDTree(visium_slide.centres).query(visium_slide.centres, k=2)[0][:, 1])
    for members in (np.flatnonzero(pool.group == g) for g in np.flatnonzero(sizes == 4)[:20]):
        xy = visium_slide.centres[members]
        assert np.linalg.norm(xy[:, None] - xy[None], axis=-1).max() < 1.8 * pitch
    distance = np.linalg.norm(visium_slide.centres - pool.centres[pool.group], axis=1)
    assert distance.max() < pool.radius_px
    coarse = np.median(cKDTree(pool.centres).query(pool.centres, k=2)[0][:, 1])
    assert coarse == pytest.approx(2 * pitch, rel=0.02)


def test_downsampled_visium_scores_without_the_model(visium_slide):
    task = downsampled_visium.build_task(visium_slide, n_genes=50)
    frame = _protocol.run_methods(task, methods=NO_MODEL, seed=SEED)
    means = frame.groupby("method").mean(numeric_only=True)
    assert set(means.index) == set(NO_MODEL)
    assert means.loc[["nearest", "cubic_proj"], "spot_residual"].max() < 1e-6
    assert means.loc["cubic", "spot_residual"] > 1e-3
    # The package's own nearest map at scale 2 is a square grid of 100 µm bins over a hexagonal lattice: most of a
    # spot's disk lies on its pseudo-spot's bins, some on a neighbour's, so it stays close to `nearest` but below.
    grid, nearest = means.loc["sr_spatial_grid_nearest"], means.loc["nearest"]
    assert nearest["pearson"] - 0.05 < grid["pearson"] < nearest["pearson"]
    assert 1e-3 < grid["spot_residual"] < 0.1
    assert (means["pearson"] > 0.3).all()


def test_visium_like_spots_sum_the_bins_in_their_disks(binned_slide):
    spots = hd_truth.aggregate_visium(binned_slide)
    assert spots.pitch_px * binned_slide.um_per_px == pytest.approx(100.0)
    assert 2 * spots.radius_px * binned_slide.um_per_px == pytest.approx(55.0)
    inside = spots.bin_spot >= 0
    np.testing.assert_allclose(spots.counts.sum(), binned_slide.counts[inside].sum(), rtol=1e-5)
    # Every counted bin lies in its spot's disk, and a disk holds about its area's worth of bins.
    distance = np.linalg.norm(binned_slide.centres[inside] - spots.centres[spots.bin_spot[inside]], axis=1)
    assert distance.max() <= spots.radius_px
    full = np.pi * (27.5 / binned_slide.bin_um) ** 2
    assert np.median(np.bincount(spots.bin_spot[inside])) == pytest.approx(full, rel=0.15)


def test_hd_truth_scores_on_the_output_grid_without_the_model(binned_slide):
    task = hd_truth.build_task(binned_slide, scale=4, n_genes=50)
    assert task["out_um"] == pytest.approx(25.0)
    frame = _protocol.run_methods(task, methods=NO_MODEL, seed=SEED)
    means = frame.groupby("method").mean(numeric_only=True)
    # The scored items are the bins superresolve writes: its nearest map read there is the nearest spot.
    np.testing.assert_allclose(
        frame[frame["method"] == "sr_spatial_grid_nearest"]["pearson"].to_numpy(),
        frame[frame["method"] == "nearest"]["pearson"].to_numpy(),
        atol=1e-6,
    )
    assert means.loc["cubic_proj", "spot_residual"] < 1e-6
    assert (means["pearson"] > 0.2).all()


def test_reads_a_visium_slide_as_spatialdata_io_builds_it(visium_sdata):
    slide = downsampled_visium.read_visium(visium_sdata, name="tiny")
    table = visium_sdata.tables["table"]
    assert slide.counts.shape == (table.n_obs, table.n_vars)
    assert slide.image.shape[0] == 3 and slide.image.dtype == np.uint8
    # The hires image's Scale maps its pixels onto the spots' full-resolution coordinates.
    assert slide.downscale > 1
    height, width = slide.image.shape[1:]
    assert (slide.centres.max(axis=0) <= np.array([width, height]) * slide.downscale).all()
    pool = downsampled_visium.pool_hex(slide)
    assert np.bincount(pool.group).max() == 4


@pytest.mark.parametrize(("source", "um_per_px"), [("visium_hd", 2.5 / HIRES_SCALEF), ("xenium", 2.5)])
def test_reads_fine_bins_from_10x_outputs(source, um_per_px, visium_hd_sdata, xenium_sdata):
    import sr_spatial as sr

    if source == "visium_hd":
        sdata = visium_hd_sdata
        hires = next(k for k in sdata.images if k.endswith("_hires_image"))
        slide = hd_truth.read_bins(sdata, table_key="square_008um", image_key=hires, bin_um=8.0, name=source)
    else:
        sdata = sr.pp.bin_transcripts(xenium_sdata, bin_size=8.0, key_added="bins", inplace=False)
        slide = hd_truth.read_bins(sdata, table_key="bins_table", image_key="he_image", bin_um=8.0, name=source)
    # The bins land inside the H&E, whose pixel size follows from the tiny slides' 2.5 µm tissue pixels: the hires
    # PNG of Visium HD is downscaled by its scale factor, Xenium's H&E is the tissue image (tests/_readers.py).
    height, width = slide.image.shape[1:]
    assert (slide.centres >= 0).all() and (slide.centres <= np.array([width, height])).all()
    assert slide.um_per_px == pytest.approx(um_per_px, rel=0.02)
    spots = hd_truth.aggregate_visium(slide)
    assert len(spots.centres) >= 3


def test_large_images_are_read_at_the_coarsest_level_that_resolves_a_bin():
    from spatialdata.models import Image2DModel

    rgb = np.zeros((3, 64, 64), dtype=np.uint8)
    image = Image2DModel.parse(rgb, dims=("c", "y", "x"), scale_factors=[2, 2])
    level, factor = hd_truth._pyramid_level(image, bin_px=20.0)
    assert factor == 4.0 and level.sizes["x"] == 16  # a 20-pixel bin is 5 pixels wide there
    level, factor = hd_truth._pyramid_level(image, bin_px=6.0)
    assert factor == 1.0 and level.sizes["x"] == 64
