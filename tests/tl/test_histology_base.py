"""A diffusion model trained with ``histology_base``: the residual around the histology predictor's map."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import IMAGE_KEY, SEED

import sr_spatial
from sr_spatial.diffusion._config import PRESETS
from sr_spatial.histology._model import fit_on_slide
from sr_spatial.model import DiffST, HistologyConfig
from sr_spatial.pp._stmap import coarsen_spots, nearest_spot, render_spots

SCALE = 2
CONFIG = dataclasses.replace(PRESETS["tiny"], histology_base=True)


@pytest.fixture(scope="module")
def st_map2(demo_sdata):
    return sr_spatial.pp.build_st_map(demo_sdata, IMAGE_KEY, scale=SCALE)


@pytest.fixture(scope="module")
def predictor(st_map2):
    config = HistologyConfig(learned_encoder=False)
    return fit_on_slide(
        st_map2, config=config, scale=SCALE, seed=SEED, image_um_per_px=None, device="cpu", show_progress_bar=False
    )[1]


@pytest.fixture(scope="module")
def model(demo_sdata):
    return sr_spatial.tl.train(
        demo_sdata, IMAGE_KEY, scale=SCALE, config=CONFIG, features="morphology", train_steps=30, seed=SEED,
        show_progress_bar=False,
    )  # fmt: skip


def _training_scene_maps(st_map, values):
    """A scale-transfer pooling of ``values`` (offset 0) on the training grid: maps, groups, each bin's spot."""
    from sr_spatial.core._groups import lattice_groups
    from sr_spatial.pp._lattice import make_grid

    pitch = st_map.pitch
    grid = make_grid(st_map.centres, bin_size=pitch, pitch=pitch)
    _, _, mask, _ = render_spots(st_map.centres, values, grid, pitch=pitch)
    pooled_xy, pooled = coarsen_spots(st_map.centres, values, factor=SCALE, pitch=pitch)
    nearest, smooth, _, _ = render_spots(pooled_xy, pooled, grid, pitch=SCALE * pitch)
    maps = (nearest * mask, smooth * mask, mask, nearest_spot(pooled_xy, grid))
    group = lattice_groups(st_map.centres, side=SCALE * pitch)
    return maps, group, nearest_spot(st_map.centres, grid)


def test_a_training_base_never_reads_its_own_spot(st_map2, predictor):
    """Changing one spot's measurement leaves the histology detail of its bins exactly as it was."""
    maps, group, spot_of_bin = _training_scene_maps(st_map2, st_map2.values)
    values = st_map2.values.copy()
    spot = int(np.argmax(np.bincount(group)[group]))  # a spot in a full group
    values[spot] += 2.0
    changed, _, _ = _training_scene_maps(st_map2, values)
    # The interpolation's share moves with the pooled values; hold it out to compare the histology's alone.
    no_interpolation = dataclasses.replace(
        predictor, model=dataclasses.replace(predictor.model, interpolation_weight=np.zeros_like(values[0]))
    )
    before = no_interpolation.training_base(st_map2.values, group, spot_of_bin, maps, seed=0) - maps[0]
    after = no_interpolation.training_base(values, group, spot_of_bin, changed, seed=0) - changed[0]
    own = (spot_of_bin == spot) & maps[2]
    assert own.any()
    # Clipping at 0 aside, the detail is the held-out ridge's: the spot's own label never enters it.
    unclipped = (maps[0][:, own] + before[:, own] > 0) & (changed[0][:, own] + after[:, own] > 0)
    assert unclipped.sum() > 10
    np.testing.assert_allclose(after[:, own][unclipped], before[:, own][unclipped], atol=1e-5)
    assert np.abs(before[:, own]).max() > 0  # the predictor does add detail there


def test_training_bases_follow_the_weights(st_map2, predictor):
    """With every weight 0, the base is the pooled measurement itself."""
    maps, group, spot_of_bin = _training_scene_maps(st_map2, st_map2.values)
    zero = dataclasses.replace(
        predictor, weight=np.zeros_like(predictor.weight), interpolation_weight=np.zeros_like(predictor.weight)
    )
    base = zero.training_base(st_map2.values, group, spot_of_bin, maps, seed=0)
    np.testing.assert_allclose(base, maps[0] * maps[2], atol=1e-6)


def test_condition_generates_around_a_given_base(model, st_map2):
    from sr_spatial.diffusion._fit import output_scene

    scene = output_scene(st_map2, px_per_bin=model.config.px_per_bin)
    base = np.full_like(scene.nearest, 1.5)
    cond, _, returned = model._inputs(dataclasses.replace(scene, base=base))
    np.testing.assert_allclose(returned, base * scene.mask, rtol=1e-6)
    # The measurement channel carries the base, standardised like the measurement it replaces.
    mean = model.network.gene_mean.numpy()[:, None, None]
    std = model.network.gene_std.numpy()[:, None, None]
    n_genes = len(model.genes)
    np.testing.assert_allclose(cond[:n_genes].numpy(), (base - mean) / std * scene.mask, rtol=1e-5, atol=1e-5)


def test_superresolve_with_a_histology_base_model(demo_sdata, model, tmp_path):
    """Trained, saved, loaded and applied: the predictor is refitted on the slide and recorded, the spots kept."""
    assert model.config.histology_base
    model.save(tmp_path / "m")
    loaded = DiffST.load(tmp_path / "m")
    assert loaded.config.histology_base
    assert loaded.config.base_features == "morphology"
    out = sr_spatial.tl.superresolve(
        demo_sdata, IMAGE_KEY, scale=SCALE, model=loaded, n_samples=2, inplace=False, key_added="hb",
        show_progress_bar=False,
    )  # fmt: skip
    uns = out.tables["hb_table"].uns["hb"]
    assert uns["params"]["method"] == "diffusion"
    assert uns["histology"]["weight"].shape == (len(model.genes),)
    assert uns["spot_residual"] < 1e-4
    values = np.asarray(out.images["hb"].values)
    assert np.isfinite(values[~np.isnan(values)]).all()


def test_a_reference_cannot_train_a_histology_base(demo_sdata):
    with pytest.raises(ValueError, match="scale transfer"):
        sr_spatial.tl.train(demo_sdata, IMAGE_KEY, config=CONFIG, reference=True, show_progress_bar=False)


def test_train_features_choose_the_predictor_of_a_histology_base_only(demo_sdata):
    """Refused up front: without a histology base, or not by name, or an encoder without the pixel size."""
    with pytest.raises(ValueError, match="histology_base"):
        sr_spatial.tl.train(demo_sdata, IMAGE_KEY, config="tiny", features="morphology", show_progress_bar=False)
    with pytest.raises(TypeError, match="names the features"):
        sr_spatial.tl.train(demo_sdata, IMAGE_KEY, config=CONFIG, features=lambda x: x, show_progress_bar=False)
    with pytest.raises(ValueError, match="image_um_per_px"):
        sr_spatial.tl.train(demo_sdata, IMAGE_KEY, config=CONFIG, features="hf-hub:org/model", show_progress_bar=False)
