"""superresolve on what spatialdata-io's readers build from 10x outputs: Visium, Visium HD bins, Xenium + H&E.

Copies use `spatialdata.deepcopy`: `copy.deepcopy` drops the attributes (transformations, feature key) of points.
"""

from __future__ import annotations

import numpy as np
import pytest
from spatialdata import deepcopy

import sr_spatial as sr
from sr_spatial._adapter._read import read_histology, read_spots
from sr_spatial.pp import build_st_map

SCALE = 4


def _info(sdata, key):
    table = sdata.tables[f"{key}_table"]
    return table, table.uns[key]


def test_visium_reader_output_through_full_and_hires_images(visium_sdata, reader_tissue):
    sdata = deepcopy(visium_sdata)
    sr.tl.superresolve(sdata, "tiny_full_image", method="nearest", key_added="full", show_progress_bar=False)
    sr.tl.superresolve(sdata, "tiny_hires_image", method="nearest", key_added="hires", show_progress_bar=False)
    full, info_full = _info(sdata, "full")
    hires, info_hires = _info(sdata, "hires")
    # The off-tissue barcode of tissue_positions.csv is not in the filtered matrix; every other spot is used.
    assert info_full["n_spots"] == len(reader_tissue.spot_ids) == info_hires["n_spots"]
    assert info_full["coordinate_system"] == "tiny"
    pitch_px = 100.0 / reader_tissue.microns_per_pixel
    # Space Ranger stores whole pixels, so the measured pitch is 100 µm to within rounding.
    assert info_full["spot_pitch_px"] == pytest.approx(pitch_px, abs=1.0)
    assert info_full["bin_size_px"] == pytest.approx(info_full["spot_pitch_px"] / SCALE, rel=1e-9)
    # The hires PNG is half the size: the reader's Scale is composed in, so the bins are the same tissue.
    assert info_hires["bin_size_px"] == pytest.approx(info_full["bin_size_px"] / 2, rel=1e-6)
    np.testing.assert_allclose(np.sort(hires.X.sum(axis=1)), np.sort(full.X.sum(axis=1)), rtol=1e-5)


def test_visium_space_ranger_1_positions_file(reader_tissue, tmp_path):
    from _readers import write_visium
    from spatialdata_io import visium

    sdata = visium(write_visium(tmp_path / "sr1", reader_tissue, positions_file="tissue_positions_list.csv"))
    spots = read_spots(sdata, "tiny_hires_image")
    assert len(spots.obs_names) == len(reader_tissue.spot_ids)
    # Positions round-trip through the CSV in whole full-resolution pixels, then the hires scale factor 0.5.
    order = [reader_tissue.spot_ids.index(s) for s in spots.obs_names]
    np.testing.assert_allclose(spots.centres, reader_tissue.spot_px[order] / 2, atol=0.5)


def test_visium_hd_bins_as_the_measurement(visium_hd_sdata, reader_tissue):
    """A Visium HD bin level is a measurement of square spots: its bins are refined ``scale``-fold."""
    sdata = deepcopy(visium_hd_sdata)
    image = "tinyhd_full_image"
    st_map = build_st_map(sdata, image, table_key="square_016um", scale=SCALE)
    bin_px = 16.0 / reader_tissue.microns_per_pixel
    assert st_map.spots.shapes_key == "tinyhd_square_016um"
    assert st_map.pitch == pytest.approx(bin_px, rel=1e-6)
    # Squares count as the disk of the same area: every output bin inside a square belongs to it.
    np.testing.assert_allclose(st_map.radius, bin_px / np.sqrt(np.pi), rtol=1e-6)
    sr.tl.superresolve(
        sdata, image, table_key="square_016um", method="nearest", key_added="hd", show_progress_bar=False
    )
    table, info = _info(sdata, "hd")
    assert info["n_spots"] == sdata.tables["square_016um"].n_obs
    assert info["bin_size_px"] == pytest.approx(bin_px / SCALE, rel=1e-6)
    # Each 16 µm bin holds SCALE x SCALE output bins that all carry its value (nearest-spot baseline).
    values = np.asarray(sdata.images["hd"].values)
    grid_centres = st_map.grid.centres()
    inner = st_map.grid.index_of(st_map.centres + 0.3 * bin_px)
    got = values[:, inner[:, 0], inner[:, 1]].T
    np.testing.assert_allclose(got, st_map.values, atol=1e-6)
    assert grid_centres.shape[:2] == values.shape[1:]
    # Both bin levels read; the 8 µm level has about four times the bins.
    fine = build_st_map(sdata, image, table_key="square_008um", genes=st_map.genes, scale=2)
    assert fine.pitch == pytest.approx(bin_px / 2, rel=1e-6)
    assert 3 < len(fine.values) / len(st_map.values) < 5


def test_xenium_transcripts_binned_on_the_aligned_he(xenium_sdata, reader_tissue):
    """Bins of transcripts (µm) land on the H&E through the points' Scale and the alignment file's Affine."""
    sdata = deepcopy(xenium_sdata)
    bin_um = 25.0
    sr.pp.bin_transcripts(sdata, bin_size=bin_um)
    spots = read_spots(sdata, "he_image", table_key="transcripts_bins_table")
    assert spots.shapes_key == "transcripts_bins"
    assert spots.coordinate_system == "global"
    mpp = reader_tissue.microns_per_pixel
    # H&E pixel of a bin centre: (µm + region origin) / mpp - crop origin of the H&E (see tests/_readers.py).
    table = sdata.tables["transcripts_bins_table"]
    um = table.obsm["spatial"][table.obs_names.get_indexer(spots.obs_names)]
    origin, offset = np.array([250.0, 250.0]), np.array([12.0, 7.0])
    he_origin = np.round(origin / mpp - offset)
    np.testing.assert_allclose(spots.centres, (um + origin) / mpp - he_origin, atol=1e-4)
    np.testing.assert_allclose(spots.radius, bin_um / mpp / np.sqrt(np.pi), rtol=1e-5)
    # The H&E under the bins is the tissue's own image at those places.
    st_map = build_st_map(sdata, "he_image", table_key="transcripts_bins_table", scale=SCALE)
    he = read_histology(st_map.spots, st_map.grid, px_per_bin=2)
    x0, y0 = (st_map.grid.x0 + he_origin[0]), (st_map.grid.y0 + he_origin[1])
    step = st_map.grid.size / 2
    ys = (y0 + (np.arange(he.shape[1]) + 0.5) * step).astype(int)
    xs = (x0 + (np.arange(he.shape[2]) + 0.5) * step).astype(int)
    source = reader_tissue.image[:, ys][:, :, xs] / 255.0
    assert np.corrcoef(he[0].ravel(), source[0].ravel())[0, 1] > 0.9

    # The reader's own table counts segmented cells (labels), which are not a measurement on a lattice.
    with pytest.raises(ValueError, match=r"annotates labels \['cell_labels'\].*sr\.pp\.bin_transcripts"):
        sr.tl.superresolve(sdata, "he_image", method="nearest", show_progress_bar=False)
    sr.tl.superresolve(
        sdata,
        "he_image",
        table_key="transcripts_bins_table",
        method="bicubic",
        key_added="xen",
        show_progress_bar=False,
    )
    _, info = _info(sdata, "xen")
    assert info["spot_pitch_px"] == pytest.approx(bin_um / mpp, rel=1e-6)
    assert info["bin_size_px"] == pytest.approx(bin_um / mpp / SCALE, rel=1e-6)
