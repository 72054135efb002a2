"""Training on a high-resolution reference (Visium HD bins, binned Xenium) and applying the model to Visium."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from spatialdata import deepcopy

import sr_spatial as sr
from sr_spatial.core._reference import SPOT_DIAMETER_RATIO, bin_aligned_map, pool_bins
from sr_spatial.diffusion._fit import output_scene
from sr_spatial.diffusion._reference import reference_scenes
from sr_spatial.model import PRESETS
from sr_spatial.pp import build_st_map
from sr_spatial.tl import spot_residual

SEED = 0
#: The "tiny" network with fewer optimiser steps: the tests check the plumbing, not the fit.
FAST = {**PRESETS["tiny"].to_dict(), "encoder_steps": 30, "train_steps": 30, "n_pool_offsets": 2}
HD_IMAGE = "tinyhd_full_image"
#: 16 µm bins and Visium's 100 µm pitch: 6 bins per pitch.
SCALE = 6


@pytest.fixture(scope="module")
def hd_model(visium_hd_sdata):
    return sr.tl.train(
        visium_hd_sdata,
        HD_IMAGE,
        table_key="square_016um",
        reference=True,
        scale=SCALE,
        config=FAST,
        seed=SEED,
        show_progress_bar=False,
        method="diffusion",
    )


def test_pairs_are_visium_like_spots_pooled_from_the_bins(visium_hd_sdata):
    st_map = bin_aligned_map(build_st_map(visium_hd_sdata, HD_IMAGE, table_key="square_016um", scale=1))
    # The grid's bins are the measured bins: each bin centre is a grid-bin centre and carries its own value.
    ij = st_map.grid.index_of(st_map.centres)
    np.testing.assert_allclose(st_map.grid.centres()[ij[:, 0], ij[:, 1]], st_map.centres, atol=1e-6)
    np.testing.assert_allclose(st_map.nearest[:, ij[:, 0], ij[:, 1]].T, st_map.values, atol=1e-6)

    reference = output_scene(st_map, px_per_bin=4)
    scenes = reference_scenes(st_map, reference, scale=SCALE, px_per_bin=4, n_offsets=2, seed=SEED)
    assert len(scenes) == 2
    first, second = scenes
    assert first.histology is reference.histology is second.histology  # the encoder runs on it once
    assert not np.array_equal(first.nearest, second.nearest)  # shifted lattices measure differently
    np.testing.assert_array_equal(first.target[:, first.mask], st_map.nearest[:, first.mask])
    # A pseudo-spot's value is the linear mean of the bins in its disk, 0.55 pitches wide.
    pitch = SCALE * st_map.pitch
    lo, hi = st_map.centres.min(axis=0), st_map.centres.max(axis=0)
    radius = SPOT_DIAMETER_RATIO * pitch / 2
    lattice = sr.pp.visium_lattice(lo, hi, pitch=pitch, offset=lo)
    xy, pooled = pool_bins(st_map.centres, st_map.values, lattice, radius=radius)
    assert len(xy) >= 10
    under = np.linalg.norm(st_map.centres - xy[0], axis=1) <= radius
    by_hand = np.log1p(np.expm1(st_map.values[under].astype(float)).mean(axis=0))
    np.testing.assert_allclose(pooled[0], by_hand, rtol=1e-5)
    # The first pair (no shift) is rendered from exactly these pseudo-spots.
    cell = st_map.grid.index_of(xy)
    on_grid = (cell >= 0).all(axis=1) & (cell[:, 0] < st_map.grid.height) & (cell[:, 1] < st_map.grid.width)
    cell, values = cell[on_grid], pooled[on_grid]
    inside = first.mask[cell[:, 0], cell[:, 1]]
    assert inside.sum() >= 5
    np.testing.assert_allclose(first.nearest[:, cell[inside, 0], cell[inside, 1]].T, values[inside], atol=1e-6)


def test_a_reference_model_is_calibrated_at_the_output_size(hd_model):
    # Its spread was calibrated on true bins of the output's size: nothing to carry to finer bins.
    assert torch.equal(hd_model.network.spread_error_ratio.cpu(), torch.zeros(len(hd_model.genes)))
    assert not torch.allclose(hd_model.network.spread_scale.cpu(), torch.ones(len(hd_model.genes)))


def test_reference_model_super_resolves_a_visium_slide(hd_model, visium_sdata, tmp_path):
    """Trained on true pairs from Visium HD bins, saved, and applied by path to a Visium slide of another layout."""
    assert hd_model.scale == SCALE
    assert hd_model.genes  # highly variable genes of the HD slide
    path = hd_model.save(tmp_path / "hd_model")

    sdata = deepcopy(visium_sdata)
    # The Visium table holds the genes in another order: they are matched by name.
    table = sdata.tables["table"]
    sdata.tables["table"] = table[:, table.var_names[::-1]].copy()
    sr.tl.superresolve(sdata, "tiny_full_image", model=path, scale=SCALE, n_samples=2, show_progress_bar=False)
    out = sdata.tables["tiny_full_image_superres_table"]
    info = out.uns["tiny_full_image_superres"]
    assert out.var_names.tolist() == hd_model.genes
    assert info["bin_size_px"] == pytest.approx(info["spot_pitch_px"] / SCALE)
    assert info["spot_residual"] < 1e-5  # every draw is projected onto the measured spots
    st_map = build_st_map(sdata, "tiny_full_image", genes=hd_model.genes, scale=SCALE)
    maps = np.asarray(sdata.images["tiny_full_image_superres"].values)
    assert spot_residual(maps, st_map.footprint, st_map.values) < 1e-5
    assert float(np.nanmax(sdata.images["tiny_full_image_superres_std"].values)) > 0  # NaN outside the tissue


def test_missing_model_genes_are_listed(hd_model, visium_sdata):
    sdata = deepcopy(visium_sdata)
    table = sdata.tables["table"]
    dropped = hd_model.genes[:2]
    sdata.tables["table"] = table[:, [g for g in table.var_names if g not in dropped]].copy()
    with pytest.raises(KeyError, match=re.escape(f"2 of which are not in table 'table': {dropped}")):
        sr.tl.superresolve(sdata, "tiny_full_image", model=hd_model, scale=SCALE, show_progress_bar=False)
    assert "tiny_full_image_superres" not in sdata.images


def test_xenium_bins_as_reference(xenium_sdata):
    """Binned transcripts are true high-resolution bins as well; the pairs hold several pseudo-spots."""
    sdata = deepcopy(xenium_sdata)
    sr.pp.bin_transcripts(sdata, bin_size=25.0)
    st_map = bin_aligned_map(build_st_map(sdata, "he_image", table_key="transcripts_bins_table", scale=1))
    scenes = reference_scenes(st_map, output_scene(st_map, px_per_bin=2), scale=4, px_per_bin=2, n_offsets=1, seed=0)
    assert len(np.unique(scenes[0].owner[scenes[0].mask])) >= 10
    with pytest.raises(ValueError, match="hold only 1 pseudo-spots at scale 40"):
        reference_scenes(st_map, output_scene(st_map, px_per_bin=2), scale=40, px_per_bin=2, n_offsets=1, seed=0)


def test_reference_model_on_xenium_bins_over_the_aligned_he(hd_model, xenium_sdata):
    """The diffusion path runs on Xenium too: binned transcripts as the measurement, the H&E through its affine."""
    sdata = deepcopy(xenium_sdata)
    sr.pp.bin_transcripts(sdata, bin_size=25.0)
    sr.tl.superresolve(
        sdata,
        "he_image",
        table_key="transcripts_bins_table",
        model=hd_model,
        scale=SCALE,
        n_samples=1,
        show_progress_bar=False,
    )
    info = sdata.tables["he_image_superres_table"].uns["he_image_superres"]
    assert info["coordinate_system"] == "global"
    assert info["spot_residual"] < 1e-5
    assert info["n_spots"] == sdata.tables["transcripts_bins_table"].n_obs
