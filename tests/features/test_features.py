"""Histology feature extractors behind one seam: shapes, pixel size honoured, cache, encoders offline."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sr_spatial.features import EncoderFeatures, MorphologyFeatures, _extract, bin_features, resolve_features
from sr_spatial.pp import build_st_map

IMAGE = "demo_full_image"


@pytest.fixture(scope="module")
def st_map():
    import sr_spatial as sr

    return build_st_map(sr.datasets.demo(n_rows=8, n_cols=10, seed=1), IMAGE, n_top_genes=5, scale=4)


def _crop(rng, height_bins=6, width_bins=5, k=8):
    rgb = np.ones((3, height_bins * k, width_bins * k), dtype=np.float32)
    # Dark purple "nuclei" in the left half only.
    for _ in range(40):
        y, x = rng.integers(2, height_bins * k - 2), rng.integers(2, width_bins * k // 2 - 2)
        rgb[:, y - 2 : y + 2, x - 2 : x + 2] = np.array([0.35, 0.2, 0.5])[:, None, None]
    return rgb


def test_morphology_features_have_one_vector_per_bin_and_see_nuclei():
    rgb = _crop(np.random.default_rng(0))
    extractor = MorphologyFeatures(context=(3,))
    features = extractor.bin_features(rgb, px_per_bin=8)
    assert features.shape[1:] == (6, 5)
    assert features.dtype == np.float32 and np.isfinite(features).all()
    planes = extractor.pixel_planes(rgb)
    assert features.shape[0] == 2 * len(planes)  # the bin itself and one context scale
    nuclear = features[8]  # nuclear fraction per bin
    assert nuclear[:, :2].mean() > nuclear[:, 3:].mean()


def test_the_pixel_size_follows_the_bin_and_the_encoder(st_map):
    assert MorphologyFeatures().px_per_bin(25.0) == 16
    assert MorphologyFeatures().px_per_bin(3.0) == 4  # a coarse image is not read finer than 4 px per bin
    encoder = EncoderFeatures(torch.nn.Identity(), image_um_per_px=1.0, um_per_px=0.5, patch_px=16)
    # 25 image pixels at 1 µm are 50 encoder pixels at 0.5 µm.
    assert encoder.px_per_bin(25.0) == 50


def test_slide_features_are_cached_for_a_second_call(st_map):
    _extract._cache.clear()
    extractor = MorphologyFeatures(context=(3,))
    first = bin_features(st_map.spots, st_map.grid, extractor, show_progress_bar=False)
    assert first.shape[1:] == st_map.grid.shape
    assert len(_extract._cache) == 1
    again = bin_features(st_map.spots, st_map.grid, MorphologyFeatures(context=(3,)), show_progress_bar=False)
    assert again is first
    other = bin_features(st_map.spots, st_map.grid, MorphologyFeatures(context=(5,)), show_progress_bar=False)
    assert other is not first and len(_extract._cache) == 2


def test_tiles_give_the_whole_slide_features(st_map, monkeypatch):
    _extract._cache.clear()
    whole = bin_features(st_map.spots, st_map.grid, MorphologyFeatures(context=(3,)), show_progress_bar=False)
    _extract._cache.clear()
    k = MorphologyFeatures().px_per_bin(st_map.grid.size)
    monkeypatch.setattr(_extract, "TILE_PIXELS", (12 * k) ** 2)  # tiles of 12 x 12 bins
    tiled = bin_features(st_map.spots, st_map.grid, MorphologyFeatures(context=(3,)), show_progress_bar=False)
    # Pixel filters differ only within a few pixels of a tile edge; per-bin means stay close.
    assert np.corrcoef(whole.ravel(), tiled.ravel())[0, 1] > 0.99
    _extract._cache.clear()


class TinyEncoder(torch.nn.Module):
    """A randomly initialised convolutional encoder, as a user's own torch module would be passed."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 12, 4, stride=4)

    def forward(self, x):
        return self.conv(x).mean(dim=(2, 3))


def test_a_torch_module_gives_principal_components_per_bin(st_map):
    extractor = EncoderFeatures(TinyEncoder(), image_um_per_px=2.0, um_per_px=4.0, patch_px=16, n_components=5)
    _extract._cache.clear()
    features = bin_features(st_map.spots, st_map.grid, extractor, show_progress_bar=False)
    assert features.shape == (5, *st_map.grid.shape)
    assert np.isfinite(features).all() and features.std() > 0


def test_a_random_weight_timm_vit_runs_through_the_same_path(st_map):
    timm = pytest.importorskip("timm")
    vit = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, img_size=32, patch_size=8, depth=2)
    extractor = EncoderFeatures(vit, image_um_per_px=2.0, um_per_px=4.0, patch_px=32, n_components=4)
    _extract._cache.clear()
    features = bin_features(st_map.spots, st_map.grid, extractor, show_progress_bar=False)
    assert features.shape == (4, *st_map.grid.shape)


def test_features_are_chosen_by_name_and_fail_early_with_what_to_do():
    assert isinstance(resolve_features("morphology"), MorphologyFeatures)
    with pytest.raises(ValueError, match="pass `image_um_per_px`"):
        resolve_features("hf-hub:MahmoodLab/uni")
    with pytest.raises(TypeError, match="`features` must be"):
        resolve_features(3)
    with pytest.raises(ValueError, match="`image_um_per_px` must be"):
        EncoderFeatures(torch.nn.Identity(), image_um_per_px=0)


def test_a_pretrained_encoder_that_cannot_be_downloaded_says_what_to_do(monkeypatch):
    pytest.importorskip("timm")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises((RuntimeError, ImportError), match="pass the loaded module|pip install"):
        resolve_features("hf-hub:MahmoodLab/uni", image_um_per_px=0.5)


def test_an_image_replaced_on_disk_gets_its_own_features(tmp_path):
    """The cache is keyed by the pixels, not by a name: dask's name of a zarr-backed image survives its pixels
    being replaced on disk, and the rerun used to reuse the old image's features with an info line only."""
    import zarr
    from spatialdata import read_zarr

    import sr_spatial as sr

    path = tmp_path / "slide.zarr"
    sr.datasets.demo(n_rows=8, n_cols=10, seed=1).write(path)
    sdata = read_zarr(path)
    _extract._cache.clear()
    spots = build_st_map(sdata, IMAGE, n_top_genes=5, scale=4)
    first = bin_features(spots.spots, spots.grid, MorphologyFeatures(), show_progress_bar=False)
    # The same element and dask arrays, other pixels: the H&E's levels written over with their mirror image.
    for _, level in zarr.open_group(path / "images" / IMAGE, mode="r+").arrays():
        level[:] = np.asarray(level[:])[:, :, ::-1]
    again = bin_features(spots.spots, spots.grid, MorphologyFeatures(), show_progress_bar=False)
    assert len(_extract._cache) == 2
    assert not np.allclose(first, again)
    _extract._cache.clear()
    fresh = build_st_map(read_zarr(path), IMAGE, n_top_genes=5, scale=4)
    recomputed = bin_features(fresh.spots, fresh.grid, MorphologyFeatures(), show_progress_bar=False)
    np.testing.assert_allclose(recomputed, again, rtol=1e-5, atol=1e-6)


def test_morphology_bin_features_are_the_bin_means_of_its_pixel_planes():
    """Averaged plane by plane (never all planes stacked at full resolution), to the bit the stacked means."""
    from scipy import ndimage
    from skimage.transform import downscale_local_mean

    texture = ndimage.gaussian_filter(np.random.default_rng(0).uniform(0, 1, (96, 120)), 2)
    rgb = np.stack([0.5 + texture, 0.3 + texture, 0.6 + texture / 2]).clip(0, 1).astype(np.float32)
    extractor = MorphologyFeatures(context=(3,)).fit([rgb])
    per_bin = downscale_local_mean(extractor.pixel_planes(rgb), (1, 8, 8)).astype(np.float32)
    features = extractor.bin_features(rgb, px_per_bin=8)
    assert features.shape == (2 * len(per_bin), 12, 15)
    np.testing.assert_array_equal(features[: len(per_bin)], per_bin)
