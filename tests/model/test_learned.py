"""The learned encoder of ``method="histology"``: cross-fitted honestly, weighted by held-out spots."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import IMAGE_KEY

import sr_spatial
from sr_spatial.histology._learned import (
    AUTO_MIN_SPOTS,
    FOLDS,
    MIN_SPOTS_PER_FOLD,
    EncoderSettings,
    fit_learned_detail,
    use_learned_encoder,
)
from sr_spatial.histology._regression import fit_detail_model

SCALE = 2
STEPS = 300


@pytest.fixture(scope="module")
def noisy_map(demo_sdata):
    """The demo at scale 2 with its last gene shuffled across spots: no histology can predict that gene."""
    st_map = sr_spatial.pp.build_st_map(demo_sdata, IMAGE_KEY, scale=SCALE)
    values = st_map.values.copy()
    values[:, -1] = np.random.default_rng(0).permutation(values[:, -1])
    return dataclasses.replace(st_map, values=values)


@pytest.fixture(scope="module")
def learned(noisy_map):
    return fit_learned_detail(noisy_map, EncoderSettings(8, 16, STEPS, 32), scale=SCALE, seed=0)


def test_shapes(noisy_map, learned):
    n_spots, n_genes = noisy_map.values.shape
    assert learned.heldout.shape == learned.spots.shape == (n_spots, n_genes)
    assert learned.maps.shape == (n_genes, *noisy_map.grid.shape)
    assert np.isfinite(learned.maps).all() and np.isfinite(learned.heldout).all()


def test_heldout_prediction_never_sees_its_spot(noisy_map):
    """Changing one spot's measurement leaves its held-out prediction bit for bit, and moves the other fold's."""
    kwargs = {"scale": SCALE, "seed": 0}
    settings = EncoderSettings(px_per_bin=8, width=8, steps=20, batch_size=16)
    before = fit_learned_detail(noisy_map, settings, **kwargs)
    values = noisy_map.values.copy()
    values[7] += 3.0
    after = fit_learned_detail(dataclasses.replace(noisy_map, values=values), settings, **kwargs)
    np.testing.assert_array_equal(after.heldout[7], before.heldout[7])
    assert not np.allclose(after.heldout, before.heldout)


def test_weights_follow_heldout_evidence(noisy_map, learned):
    """The shuffled gene gets no learned detail; histology-driven genes of the demo get a large share."""
    from sr_spatial.histology._apply import spot_features

    features = np.stack([noisy_map.nearest.mean(axis=0)])  # one weak feature; the learned predictor must carry it
    per_spot = spot_features(features, noisy_map.footprint, noisy_map.grid.index_of(noisy_map.centres))
    model = fit_detail_model(
        per_spot, noisy_map.values, noisy_map.centres, pitch=noisy_map.pitch, scale=SCALE, learned=learned.heldout
    )
    assert model.learned_weight[-1] < 0.1
    assert np.max(model.learned_weight) > 0.5
    assert np.all((model.learned_weight >= 0) & (model.learned_weight <= 1))


def test_too_few_spots_learns_nothing(noisy_map):
    keep = np.arange(FOLDS * MIN_SPOTS_PER_FOLD - 1)
    small = dataclasses.replace(noisy_map, values=noisy_map.values[keep], centres=noisy_map.centres[keep])
    assert fit_learned_detail(small, EncoderSettings(8, 8, 5, 8), scale=SCALE, seed=0) is None


def test_superresolve_records_learned_weights(demo_sdata):
    """Through the public call: weights in ``uns``, the spots' means kept, and the learned detail is used."""
    out = sr_spatial.tl.superresolve(
        demo_sdata, IMAGE_KEY, scale=SCALE, config="tiny", learned_encoder=True, inplace=False,
        key_added="learned", show_progress_bar=False,
    )  # fmt: skip
    uns = out.tables["learned_table"].uns["learned"]
    assert uns["params"]["learned_encoder"] is True
    weights = uns["histology"]["learned_weight"]
    assert weights.shape == (len(out.tables["learned_table"].var_names),)
    assert (weights > 0.2).sum() >= 5
    assert np.all(uns["histology"]["learned_detail_cap"] <= 1.0)


def test_learned_encoder_must_be_a_bool_or_auto(demo_sdata):
    with pytest.raises(TypeError, match="True, False or 'auto'"):
        sr_spatial.tl.superresolve(demo_sdata, IMAGE_KEY, learned_encoder="yes", inplace=False)


def test_auto_learns_only_from_enough_spots_on_a_grid_it_can_hold():
    visium = {"grid_shape": (230, 207), "px_per_bin": 8}  # a Visium slide at scale 4
    assert use_learned_encoder("auto", n_spots=AUTO_MIN_SPOTS, **visium)
    assert not use_learned_encoder("auto", n_spots=AUTO_MIN_SPOTS - 1, **visium)
    # The other methods have no use for it, however large the slide.
    # A Visium HD slide of 16 µm bins at scale 4: the encoders' whole-slide inputs would take several GiB.
    hd = {"grid_shape": (1624, 1624), "px_per_bin": 8}
    assert not use_learned_encoder("auto", n_spots=165_000, **hd)
    assert use_learned_encoder(True, n_spots=10, **hd)
    assert not use_learned_encoder(False, n_spots=10 * AUTO_MIN_SPOTS, **visium)


def test_auto_default_follows_the_number_of_spots(demo_sdata, monkeypatch):
    """The default trains the encoders once a slide has enough spots, and says so in ``uns``; the demo has not."""
    import sr_spatial.histology._learned as learned_module

    kwargs = {"scale": SCALE, "config": "tiny", "train_steps": 40, "inplace": False, "show_progress_bar": False}
    small = sr_spatial.tl.superresolve(demo_sdata, IMAGE_KEY, key_added="auto", **kwargs)
    uns = small.tables["auto_table"].uns["auto"]
    assert uns["params"]["learned_encoder"] is False
    assert "learned_weight" not in uns["histology"]
    n_spots = len(demo_sdata.tables["table"])
    monkeypatch.setattr(learned_module, "AUTO_MIN_SPOTS", n_spots)
    large = sr_spatial.tl.superresolve(demo_sdata, IMAGE_KEY, key_added="auto", **kwargs)
    uns = large.tables["auto_table"].uns["auto"]
    assert uns["params"]["learned_encoder"] is True
    assert uns["histology"]["learned_weight"].shape == (len(large.tables["auto_table"].var_names),)


def test_maps_in_row_chunks_equal_the_whole_slide(monkeypatch):
    """The learned encoder's maps are computed in rows with its receptive field as margin: no seam at a cut."""
    import torch

    import sr_spatial.core._image_encoder as condition
    from sr_spatial.core._pixel_encoder import HistologyEncoder
    from sr_spatial.histology._learned import _bin_maps

    torch.manual_seed(0)
    encoder = HistologyEncoder(width=8, n_genes=3)
    inputs = torch.randn(5, 96, 40)
    whole = _bin_maps(encoder, inputs, 4, device=torch.device("cpu"))
    # Two chunks of rows (20 bins and 4), each with its margins.
    monkeypatch.setattr(condition, "CHUNK_ACTIVATIONS", 40 * 4 * 8 * 24)
    chunked = _bin_maps(encoder, inputs, 4, device=torch.device("cpu"))
    np.testing.assert_allclose(chunked, whole, rtol=1e-5, atol=1e-6)


def test_learned_encoder_belongs_to_the_histology_method(demo_sdata):
    with pytest.raises(ValueError, match="method='histology'"):
        sr_spatial.tl.superresolve(demo_sdata, IMAGE_KEY, method="nearest", learned_encoder=True, inplace=False)
