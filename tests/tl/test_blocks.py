"""Block-wise inference: exact coverage, the same result as one block, zarr output, and a dask cluster."""

from __future__ import annotations

import copy

import dask.array as da
import numpy as np
import pytest
import zarr

import sr_spatial as sr
from sr_spatial.core._tiling import plan_blocks
from sr_spatial.tl._blocks import BlockJob, _owned, block_halo

IMAGE = "demo_full_image"


def _mean(sdata, key):
    return np.asarray(sdata.images[key].values)


@pytest.fixture(scope="module")
def one_block(demo_sdata, tiny_model):
    """The demo super-resolved with the tiny model in a single block (the demo's grid is 79 x 81 bins)."""
    sdata = copy.deepcopy(demo_sdata)
    sr.tl.superresolve(sdata, IMAGE, model=tiny_model, n_samples=2, key_added="whole", show_progress_bar=False)
    return sdata


@pytest.fixture(scope="module")
def small_blocks(demo_sdata, tiny_model):
    """The same with blocks of 32 bins (3 x 3 blocks)."""
    sdata = copy.deepcopy(demo_sdata)
    sr.tl.superresolve(
        sdata, IMAGE, model=tiny_model, n_samples=2, block_bins=32, key_added="blocks", client=None,
        show_progress_bar=False,
    )  # fmt: skip
    return sdata


def test_blocks_render_like_the_whole_grid_and_own_every_bin_once(st_map):
    job = BlockJob.from_map(st_map)
    blocks = plan_blocks(st_map.grid.shape, block_bins=16, halo=block_halo(st_map, context=0))
    height, width = st_map.grid.shape
    assert len(blocks) == -(-height // 16) * -(-width // 16)
    owners = np.zeros(st_map.grid.shape, dtype=int)
    blocks_of_spot = [set() for _ in range(len(st_map.values))]
    for index, block in enumerate(blocks):
        nearest, smooth, mask, footprint = job.renderer.render(job.sub_grid(block))
        rows, cols = block.region
        np.testing.assert_array_equal(smooth, st_map.smooth[:, rows, cols])
        np.testing.assert_array_equal(footprint, st_map.footprint[rows, cols])
        np.testing.assert_array_equal(mask, st_map.mask[rows, cols])
        owned, _ = _owned(block, footprint, job.spot_bins)
        owners[rows, cols] += owned
        for spot in np.unique(footprint[owned & (footprint >= 0)]):
            blocks_of_spot[spot].add(index)
    assert (owners == 1).all()
    # Every spot's bins come from one block, so projecting a block onto its spots is exact.
    assert all(len(b) == 1 for b in blocks_of_spot if b)


def test_baselines_in_blocks_equal_the_whole_grid(demo_sdata, st_map):
    sdata = copy.deepcopy(demo_sdata)
    sr.tl.superresolve(sdata, IMAGE, method="bicubic", block_bins=16, key_added="cubic", show_progress_bar=False)
    # NaN outside the tissue (assert_array_equal counts NaN as equal to NaN).
    np.testing.assert_array_equal(_mean(sdata, "cubic"), np.where(st_map.mask, st_map.smooth, np.nan))
    table = sdata.tables["cubic_table"]
    rows, cols = np.nonzero(st_map.mask)
    np.testing.assert_array_equal(table.obs["array_row"], rows)
    np.testing.assert_array_equal(table.obs["array_col"], cols)
    np.testing.assert_array_equal(table.X, st_map.smooth[:, rows, cols].T)


def test_blocks_agree_with_one_block_and_stay_exact_at_the_spots(one_block, small_blocks):
    whole, blocks = _mean(one_block, "whole"), _mean(small_blocks, "blocks")
    assert whole.shape == blocks.shape
    uns_whole = one_block.tables["whole_table"].uns["whole"]
    uns_blocks = small_blocks.tables["blocks_table"].uns["blocks"]
    # The projection stays exact although spots straddle block edges.
    assert uns_blocks["spot_residual"] < 1e-5
    assert uns_whole["spot_residual"] < 1e-5
    assert uns_blocks["spot_residual_before_projection"] == pytest.approx(
        uns_whole["spot_residual_before_projection"], rel=0.2
    )
    # Same noise per bin and a halo of context: the maps differ only slightly near block edges.
    tissue = ~np.isnan(whole).any(axis=0)
    r = np.corrcoef(whole[:, tissue].ravel(), blocks[:, tissue].ravel())[0, 1]
    assert r > 0.98
    assert not np.array_equal(whole, blocks, equal_nan=True)
    np.testing.assert_array_equal(
        one_block.tables["whole_table"].obs["bin_id"], small_blocks.tables["blocks_table"].obs["bin_id"]
    )


def test_images_stream_to_a_zarr_store(demo_sdata, tiny_model, small_blocks, tmp_path):
    sdata = copy.deepcopy(demo_sdata)
    store = tmp_path / "superres.zarr"
    sr.tl.superresolve(
        sdata, IMAGE, model=tiny_model, n_samples=2, block_bins=32, key_added="blocks", image_store=store,
        client=None, show_progress_bar=False,
    )  # fmt: skip
    image = sdata.images["blocks"]
    assert isinstance(image.data, da.Array)
    root = zarr.open_group(store, mode="r")
    assert "sr_spatial" in root.attrs  # marked, so a later call may write here and no other store is touched
    group = root["blocks/1"]
    assert set(group.array_keys()) == {"mean", "std"}
    np.testing.assert_array_equal(np.asarray(group["mean"]), _mean(small_blocks, "blocks"))
    np.testing.assert_array_equal(np.asarray(sdata.images["blocks_std"].values), _mean(small_blocks, "blocks_std"))
    np.testing.assert_array_equal(sdata.tables["blocks_table"].X, small_blocks.tables["blocks_table"].X)
    # Lazy images persist through spatialdata like in-memory ones.
    written = tmp_path / "slide.zarr"
    sdata.write(written)
    from spatialdata import read_zarr

    back = read_zarr(written)
    np.testing.assert_array_equal(np.asarray(back.images["blocks"].values), _mean(small_blocks, "blocks"))


@pytest.mark.parametrize("in_store", [False, True], ids=["memory", "zarr"])
def test_images_are_nan_outside_the_tissue_and_the_table_is_not(demo_sdata, st_map, tmp_path, in_store):
    sdata = copy.deepcopy(demo_sdata)
    sr.tl.superresolve(
        sdata, IMAGE, method="histology", block_bins=32, key_added="h", show_progress_bar=False,
        image_store=tmp_path / "h.zarr" if in_store else None,
    )  # fmt: skip
    images = [_mean(sdata, "h"), _mean(sdata, "h_std")]
    if in_store:
        group = zarr.open_group(tmp_path / "h.zarr", mode="r")["h/1"]
        images += [np.asarray(group["mean"]), np.asarray(group["std"])]
    for image in images:
        # Viewers draw NaN transparent: the map overlays the H&E without a rectangle around the tissue.
        assert np.isnan(image[:, ~st_map.mask]).all()
        assert np.isfinite(image[:, st_map.mask]).all()
    table = sdata.tables["h_table"]
    assert table.n_obs == int(st_map.mask.sum())
    assert np.isfinite(table.X).all() and np.isfinite(table.layers["std"]).all()


def test_a_failed_call_removes_the_store_it_created(demo_sdata, tmp_path):
    sdata = copy.deepcopy(demo_sdata)
    store = tmp_path / "never.zarr"
    with pytest.raises(ValueError, match="n_samples"):
        sr.tl.superresolve(sdata, IMAGE, method="nearest", n_samples=0, image_store=store, show_progress_bar=False)
    assert not store.exists()


def test_a_local_dask_cluster_gives_the_single_process_result(demo_sdata, tiny_model, small_blocks):
    distributed = pytest.importorskip("distributed")
    from sr_spatial.tl._pipeline import resolve_client

    sdata = copy.deepcopy(demo_sdata)
    with (
        distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        distributed.Client(cluster) as client,
    ):
        assert resolve_client("auto") is client
        with distributed.get_task_stream(client) as stream:
            sr.tl.superresolve(
                sdata, IMAGE, model=tiny_model, n_samples=2, block_bins=32, key_added="blocks", client=client,
                show_progress_bar=False,
            )  # fmt: skip
        workers = {task["worker"] for task in stream.data if "_worker_run" in str(task["key"])}
    assert len(workers) == 2
    np.testing.assert_allclose(_mean(sdata, "blocks"), _mean(small_blocks, "blocks"), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(
        sdata.tables["blocks_table"].layers["std"], small_blocks.tables["blocks_table"].layers["std"], rtol=1e-4,
        atol=1e-5,
    )  # fmt: skip


@pytest.fixture(scope="module")
def sparse_slide():
    """A small slide whose 16-bin blocks include two with no spot in reach (none within their halo)."""
    return sr.datasets.demo(n_rows=18, n_cols=16)


@pytest.mark.parametrize("method", ["nearest", "bicubic", "histology", "diffusion"])
def test_blocks_without_any_spot(sparse_slide, method, request):
    st_map = sr.pp.build_st_map(sparse_slide, IMAGE, scale=4)
    blocks = plan_blocks(st_map.grid.shape, block_bins=16, halo=block_halo(st_map, context=0))
    assert any(not (st_map.footprint[b.region] >= 0).any() for b in blocks)
    sdata = copy.deepcopy(sparse_slide)
    # The session's tiny model (trained on the demo's genes) only where it is used: training it takes a while.
    model = request.getfixturevalue("tiny_model") if method == "diffusion" else None
    sr.tl.superresolve(
        sdata, IMAGE, method=method, model=model, n_samples=2, block_bins=16, key_added="out", client=None,
        show_progress_bar=False,
    )  # fmt: skip
    table = sdata.tables["out_table"]
    assert table.n_obs == int(st_map.mask.sum())
    assert np.isfinite(table.X).all()
    if method == "nearest":
        # Each spot's bins take its value, so the residual is zero.
        assert table.uns["out"]["spot_residual"] < 1e-6
    if method == "diffusion":
        assert table.uns["out"]["spot_residual"] < 1e-5


def test_writing_a_result_prints_no_sharding_notices(sparse_slide, tmp_path):
    import warnings

    sdata = copy.deepcopy(sparse_slide)
    sr.tl.superresolve(sdata, IMAGE, method="nearest", key_added="near", show_progress_bar=False)
    with warnings.catch_warnings(record=True) as caught:
        # Everything else is shown every time; the package's filter for anndata's notice comes first.
        warnings.filterwarnings("always", append=True)
        sdata.write(tmp_path / "slide.zarr")
    assert not [w for w in caught if "autosharding" in str(w.message)]
