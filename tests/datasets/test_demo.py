from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage, sparse
from scipy.spatial import cKDTree
from skimage.color import rgb2hed
from skimage.transform import downscale_local_mean
from spatialdata import read_zarr
from spatialdata.transformations import Identity, Scale, get_transformation

from sr_spatial.datasets._demo import demo

CS = "demo"
IMAGES = {"demo_full_image", "demo_hires_image", "demo_truth"}


@pytest.fixture(scope="module")
def sdata():
    return demo()


@pytest.fixture(scope="module")
def small():
    return demo(seed=3, n_genes=12, n_rows=6, n_cols=7, microns_per_pixel=2.0)


def _full_image(sd) -> np.ndarray:
    return np.asarray(sd["demo_full_image"]["scale0"]["image"].values)


def _spot_truth(sd) -> np.ndarray:
    """Truth averaged over each spot disk, in linear normalised units (what a spot physically pools)."""
    truth = sd["demo_truth"].values
    scale = get_transformation(sd["demo_truth"], to_coordinate_system=CS).scale[0]
    radius = sd.shapes[CS]["radius"].to_numpy()
    yy, xx = (np.indices(truth.shape[1:]) + 0.5) * scale
    out = []
    for (x, y), r in zip(sd["table"].obsm["spatial"], radius, strict=True):
        disk = (xx - x) ** 2 + (yy - y) ** 2 <= r**2
        out.append(np.log1p(np.expm1(truth[:, disk]).mean(axis=1)))
    return np.array(out)


def test_elements_and_coordinate_system(sdata):
    assert set(sdata.images) == IMAGES
    assert set(sdata.shapes) == {CS}
    assert set(sdata.tables) == {"table"}
    for name in [*IMAGES, CS]:
        assert set(get_transformation(sdata[name], get_all=True)) == {CS}
    assert isinstance(get_transformation(sdata["demo_full_image"], to_coordinate_system=CS), Identity)
    assert isinstance(get_transformation(sdata[CS], to_coordinate_system=CS), Identity)
    hires = get_transformation(sdata["demo_hires_image"], to_coordinate_system=CS)
    assert isinstance(hires, Scale)
    np.testing.assert_allclose(hires.scale, [4.0, 4.0])

    full = _full_image(sdata)
    assert full.dtype == np.uint8
    assert full.shape[0] == 3
    assert list(sdata["demo_full_image"]["scale0"]["image"].coords["c"].values) == ["r", "g", "b"]
    assert len(sdata["demo_full_image"]) == 3  # full resolution plus two 2x pyramid levels
    assert np.all(np.abs(np.array(sdata["demo_hires_image"].shape[1:]) * 4 - full.shape[1:]) < 4)


def test_no_truth_when_not_requested():
    sd = demo(n_rows=4, n_cols=4, include_truth=False)
    assert "demo_truth" not in sd.images


def test_spot_count_and_lattice(sdata):
    xy = sdata["table"].obsm["spatial"]
    assert 250 <= len(xy) <= 320
    dist, _ = cKDTree(xy).query(xy, k=2)
    np.testing.assert_allclose(dist[:, 1], 100.0, atol=1e-6)
    np.testing.assert_allclose(sdata.shapes[CS]["radius"], 27.5)

    obs = sdata["table"].obs
    assert (obs["in_tissue"] == 1).all()
    # Visium array coordinates: doubled columns, odd rows shifted by one.
    assert ((obs["array_col"] - obs["array_row"]) % 2 == 0).all()


def test_pixel_size_scales_geometry(small):
    xy = small["table"].obsm["spatial"]
    dist, _ = cKDTree(xy).query(xy, k=2)
    np.testing.assert_allclose(dist[:, 1], 50.0, atol=1e-6)
    np.testing.assert_allclose(small.shapes[CS]["radius"], 13.75)
    truth_scale = get_transformation(small["demo_truth"], to_coordinate_system=CS)
    np.testing.assert_allclose(truth_scale.scale, [2.5, 2.5])
    assert small["table"].n_vars == 12


def test_table_annotates_shapes(sdata):
    table = sdata["table"]
    attrs = table.uns["spatialdata_attrs"]
    assert attrs["region"] == CS
    assert attrs["region_key"] == "region"
    assert attrs["instance_key"] == "spot_id"
    assert table.obs["region"].dtype == "category"
    assert set(table.obs["region"]) == {CS}

    shapes = sdata.shapes[CS]
    assert table.obs["spot_id"].isin(shapes.index).all()
    assert table.obs["spot_id"].is_unique
    assert list(table.obs_names) == list(table.obs["spot_id"])
    centres = np.column_stack([shapes.geometry.x, shapes.geometry.y])
    np.testing.assert_allclose(centres[shapes.index.get_indexer(table.obs["spot_id"])], table.obsm["spatial"])
    assert list(table.var["gene_ids"]) == list(table.var_names)

    meta = table.uns[CS]
    assert len(meta["gene_kind"]) == table.n_vars
    assert meta["spot_diameter_um"] == 55.0
    assert list(sdata["demo_truth"].coords["c"].values) == list(table.var_names)


def test_counts_are_raw_integers(sdata):
    x = sdata["table"].X
    assert sparse.issparse(x)
    assert x.data.min() >= 0
    np.testing.assert_array_equal(x.data, np.round(x.data))
    # Calibrated to a Visium-like depth.
    assert 2000 < np.median(np.asarray(x.sum(axis=1)).ravel()) < 4500


def test_deterministic_given_seed():
    kwargs = {"n_rows": 5, "n_cols": 5, "n_genes": 10}
    a, b, c = demo(seed=0, **kwargs), demo(seed=0, **kwargs), demo(seed=1, **kwargs)
    assert (a["table"].X != b["table"].X).nnz == 0
    np.testing.assert_array_equal(_full_image(a), _full_image(b))
    np.testing.assert_array_equal(a["demo_truth"].values, b["demo_truth"].values)
    assert not np.array_equal(_full_image(a), _full_image(c))


@pytest.mark.parametrize(
    "kwargs", [{"n_genes": 7}, {"n_rows": 2}, {"n_cols": 1}, {"microns_per_pixel": 0.0}, {"microns_per_pixel": -1}]
)
def test_invalid_arguments(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        demo(**kwargs)


def test_truth_predicts_spot_expression(sdata):
    table = sdata["table"]
    x = table.X.toarray().astype(float)
    lognorm = np.log1p(1e4 * x / x.sum(axis=1, keepdims=True))
    truth = _spot_truth(sdata)
    kind = np.asarray(table.uns[CS]["gene_kind"])
    r = np.array([np.corrcoef(lognorm[:, g], truth[:, g])[0, 1] for g in range(table.n_vars)])
    assert r[np.char.startswith(kind, "marker:")].mean() > 0.7
    assert r[kind == "gradient"].mean() > 0.6

    raw = sdata["demo_truth"].values
    assert raw.dtype == np.float32
    assert raw.min() >= 0
    assert raw.max() < np.log1p(1e4) + 1e-4


def test_histology_carries_the_signal(sdata):
    truth = sdata["demo_truth"].values
    kind = np.asarray(sdata["table"].uns[CS]["gene_kind"])
    haem = rgb2hed(_full_image(sdata).transpose(1, 2, 0))[..., 0]
    # Average haematoxylin on the 5 µm truth grid, then over ~25 µm neighbourhoods.
    ny, nx = truth.shape[1:]
    haem = downscale_local_mean(haem, (5, 5))[:ny, :nx]
    haem25 = ndimage.uniform_filter(haem, 5)
    tissue = truth.sum(axis=0) > 0

    lymph = truth[kind == "marker:lymphocyte"].mean(axis=0)
    assert np.corrcoef(lymph[tissue], haem25[tissue])[0, 1] > 0.3
    # Glass carries no haematoxylin; tissue does.
    assert haem[tissue].mean() > haem[~tissue].mean() + 0.01


def test_zarr_round_trip(small, tmp_path):
    path = tmp_path / "demo.zarr"
    small.write(path)
    back = read_zarr(path)
    assert set(back.images) == IMAGES
    assert set(back.shapes) == {CS}
    np.testing.assert_array_equal(_full_image(back), _full_image(small))
    np.testing.assert_array_equal(back["table"].X.toarray(), small["table"].X.toarray())
    np.testing.assert_allclose(back["demo_truth"].values, small["demo_truth"].values)
    assert list(back["table"].uns[CS]["gene_kind"]) == list(small["table"].uns[CS]["gene_kind"])
    assert isinstance(get_transformation(back["demo_hires_image"], to_coordinate_system=CS), Scale)
