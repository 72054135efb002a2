from __future__ import annotations

import copy

import numpy as np
import pytest
import spatialdata as sd
from spatialdata.models import get_table_keys
from spatialdata.transformations import get_transformation

import sr_spatial as sr
from sr_spatial.pp import build_st_map
from sr_spatial.tl import spot_residual

SEED = 0
IMAGE = "demo_full_image"
KEY = "sr"


@pytest.fixture(scope="module")
def superres(demo_sdata):
    """The demo, super-resolved once by the full path (training inside) and by the bicubic baseline."""
    sdata = copy.deepcopy(demo_sdata)
    sr.tl.superresolve(
        sdata, IMAGE, method="diffusion", config="tiny", seed=SEED, key_added=KEY, show_progress_bar=False
    )
    sr.tl.superresolve(sdata, IMAGE, method="bicubic", key_added="bicubic", show_progress_bar=False)
    sr.tl.superresolve(sdata, IMAGE, method="nearest", key_added="nearest", show_progress_bar=False)
    return sdata


def _elements(sdata) -> dict[str, set[str]]:
    return {kind: set(getattr(sdata, kind).keys()) for kind in ("images", "labels", "points", "shapes", "tables")}


def test_outputs_are_written_as_the_data_contract_says(superres):
    table = superres.tables[f"{KEY}_table"]
    genes = table.var_names.tolist()
    image, std = superres.images[KEY], superres.images[f"{KEY}_std"]
    assert image.dims == ("c", "y", "x")
    assert list(image.coords["c"].values) == genes
    assert std.shape == image.shape
    assert float(std.min()) >= 0 and float(std.max()) > 0  # several diffusion draws disagree somewhere
    assert len(superres.shapes[f"{KEY}_bins"]) == table.n_obs
    region, region_key, instance_key = get_table_keys(table)
    assert region == f"{KEY}_bins"
    assert set(table.obs[instance_key]) == set(superres.shapes[f"{KEY}_bins"].index)
    assert table.layers["std"].shape == table.shape
    assert table.obsm["spatial"].shape == (table.n_obs, 2)
    legacy = table.uns["spatial"][KEY]
    assert legacy["images"]["hires"].ndim == 3
    assert legacy["scalefactors"]["spot_diameter_fullres"] == pytest.approx(25.0)
    info = table.uns[KEY]
    assert info["params"]["scale"] == 4
    assert info["params"]["seed"] == SEED
    assert info["params"]["method"] == "diffusion"
    assert info["bin_size_px"] == pytest.approx(25.0)
    # The table's X is the image at the bins' positions.
    rows, cols = table.obs["array_row"].to_numpy(), table.obs["array_col"].to_numpy()
    np.testing.assert_allclose(np.asarray(image.values)[:, rows, cols].T, table.X, rtol=1e-6)
    # Nothing else in the object changed.
    assert superres.tables["table"].n_obs == 279 or superres.tables["table"].n_obs > 0
    assert IMAGE in superres.images


def test_bin_centres_map_onto_the_right_image_pixel(superres):
    table = superres.tables[f"{KEY}_table"]
    rows, cols = table.obs["array_row"].to_numpy(), table.obs["array_col"].to_numpy()
    for cs in get_transformation(superres.images[IMAGE], get_all=True):
        to_cs = get_transformation(superres.images[KEY], to_coordinate_system=cs)
        matrix = to_cs.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y"))
        centres = np.column_stack([cols + 0.5, rows + 0.5, np.ones(len(rows))]) @ matrix.T
        # The full-resolution image is the coordinate system here (Identity), so cs units are its pixels.
        np.testing.assert_allclose(centres[:, :2], table.obsm["spatial"], atol=1e-6)
        # Through the hires image (Scale 4) the same bin lands on pixel centre / 4.
        hires = get_transformation(superres.images["demo_hires_image"], to_coordinate_system=cs)
        to_hires = np.linalg.inv(hires.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")))
        np.testing.assert_allclose((centres @ to_hires.T)[:, :2], table.obsm["spatial"] / 4, atol=1e-6)
    shapes = superres.shapes[f"{KEY}_bins"].loc[table.obs["bin_id"]]
    np.testing.assert_allclose(np.column_stack([shapes.centroid.x, shapes.centroid.y]), table.obsm["spatial"])


def test_bins_average_back_exactly_to_each_spot(superres):
    st_map = build_st_map(superres, IMAGE, genes=superres.tables[f"{KEY}_table"].var_names.tolist(), scale=4)
    maps = np.asarray(superres.images[KEY].values)
    assert spot_residual(maps, st_map.footprint, st_map.values) < 1e-5
    info = superres.tables[f"{KEY}_table"].uns[KEY]
    assert info["spot_residual"] < 1e-5
    assert info["spot_residual_before_projection"] > info["spot_residual"]
    # The bicubic baseline is not projected and disagrees with the spots.
    bicubic = np.asarray(superres.images["bicubic"].values)
    assert spot_residual(bicubic, st_map.footprint, st_map.values) > 1e-3


def test_diffusion_beats_bicubic_on_the_demo_truth(superres):
    diffusion = sr.tl.evaluate(superres, KEY, truth_key="demo_truth")
    bicubic = sr.tl.evaluate(superres, "bicubic", truth_key="demo_truth")
    assert diffusion["pearson"].mean() > bicubic["pearson"].mean()
    assert diffusion["spot_residual"].max() < 1e-5


def test_evaluate_scores_every_gene(superres):
    scores = sr.tl.evaluate(superres, "nearest", truth_key="demo_truth", genes=["gene_00", "gene_10"])
    assert scores.index.tolist() == ["gene_00", "gene_10"]
    assert set(scores.columns) == {"pearson", "ssim", "rmse", "spot_residual"}
    assert scores["pearson"].between(-1, 1).all()
    assert (scores["rmse"] > 0).all()
    with pytest.raises(KeyError, match="not found"):
        sr.tl.evaluate(superres, "no_such_key", truth_key="demo_truth")
    with pytest.raises(KeyError, match="were not super-resolved"):
        sr.tl.evaluate(superres, "nearest", truth_key="demo_truth", genes=["gene_xx"])


def test_same_seed_same_result_and_other_seed_differs(demo_sdata, tiny_model):
    outputs = []
    for seed in (SEED, SEED, SEED + 1):
        result = sr.tl.superresolve(
            demo_sdata, IMAGE, model=tiny_model, seed=seed, n_samples=2, inplace=False, show_progress_bar=False
        )
        outputs.append(np.asarray(result.images[f"{IMAGE}_superres_std"].values))
    np.testing.assert_array_equal(outputs[0], outputs[1])
    assert not np.array_equal(outputs[0], outputs[2], equal_nan=True)  # NaN outside the tissue in both


def test_the_spread_is_carried_from_spots_to_the_finer_bins(demo_sdata, tiny_model):
    import copy

    from sr_spatial.core._uncertainty import MIN_SD, finer_spread_factor

    calibrated_on_bins = copy.deepcopy(tiny_model)
    calibrated_on_bins.network.spread_error_ratio.zero_()
    outputs = []
    for model in (tiny_model, calibrated_on_bins):
        result = sr.tl.superresolve(
            demo_sdata, IMAGE, model=model, seed=SEED, n_samples=2, inplace=False, show_progress_bar=False
        )
        outputs.append(result)
    info = outputs[0].tables[f"{IMAGE}_superres_table"].uns[f"{IMAGE}_superres"]
    factor = np.asarray(info["finer_spread_factor"])
    # The demo's expression varies more from bin to bin than from spot to spot: the intervals widen.
    assert info["finer_ratio"] > 1 and np.all(factor >= 1) and np.any(factor > 1)
    ratio = tiny_model.network.spread_error_ratio.cpu().numpy()
    np.testing.assert_allclose(factor, finer_spread_factor(ratio, info["finer_ratio"]), rtol=1e-6)
    plain = outputs[1].tables[f"{IMAGE}_superres_table"].uns[f"{IMAGE}_superres"]
    np.testing.assert_array_equal(plain["finer_spread_factor"], np.ones_like(factor))
    # Same draws, so the spread differs by exactly the factor wherever it is above the floor.
    carried = np.asarray(outputs[0].images[f"{IMAGE}_superres_std"].values)
    drawn = np.asarray(outputs[1].images[f"{IMAGE}_superres_std"].values)
    np.testing.assert_array_equal(
        np.asarray(outputs[0].images[f"{IMAGE}_superres"].values),
        np.asarray(outputs[1].images[f"{IMAGE}_superres"].values),
    )
    above = np.isfinite(drawn) & (drawn > MIN_SD * 1.01)
    expected = np.broadcast_to(factor[:, None, None], drawn.shape)
    np.testing.assert_allclose(carried[above] / drawn[above], expected[above], rtol=1e-4)


def test_inplace_false_leaves_the_object_alone(demo_sdata, tiny_model):
    before = _elements(demo_sdata)
    result = sr.tl.superresolve(
        demo_sdata, IMAGE, model=tiny_model, n_samples=1, inplace=False, show_progress_bar=False
    )
    assert _elements(demo_sdata) == before
    assert set(result.images) == {f"{IMAGE}_superres", f"{IMAGE}_superres_std"}
    assert set(result.tables) == {f"{IMAGE}_superres_table"}


def test_saved_model_is_used_from_a_path(demo_sdata, tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "model")
    from_path = sr.tl.superresolve(demo_sdata, IMAGE, model=path, n_samples=1, inplace=False, show_progress_bar=False)
    from_object = sr.tl.superresolve(
        demo_sdata, IMAGE, model=tiny_model, n_samples=1, inplace=False, show_progress_bar=False
    )
    np.testing.assert_array_equal(
        from_path.images[f"{IMAGE}_superres"].values, from_object.images[f"{IMAGE}_superres"].values
    )
    assert from_path.tables[f"{IMAGE}_superres_table"].uns[f"{IMAGE}_superres"]["params"]["model"] == str(path)


BAD_CALLS = [
    ({"image_key": "nope"}, KeyError, r"Image 'nope' not found\. Available images: \['demo_full_image'"),
    ({"table_key": "nope"}, KeyError, r"Table 'nope' not found\. Available tables: \['table'\]"),
    ({"shapes_key": "nope"}, KeyError, r"Shapes 'nope' not found"),
    ({"genes": ["gene_00", "not_a_gene"]}, KeyError, r"not in the table: \['not_a_gene'\]"),
    ({"scale": 1}, ValueError, r"`scale` must be an integer of at least 2"),
    ({"method": "magic"}, ValueError, r"Unknown method 'magic'"),
    ({"key_added": "has space"}, ValueError, r"not a valid element name"),
    ({"key_added": "demo"}, ValueError, r"output names are taken: shapes\['demo'\]"),
    ({"n_samples": 0}, ValueError, r"`n_samples` must be a positive integer"),
    ({"config": "huge"}, ValueError, r"Unknown model configuration 'huge'; choose one of \['base', 'large', 'tiny'\]"),
    ({"model": 3}, TypeError, r"`model` must be None, a DiffST, a HistologyModel or the folder of a saved one"),
    ({"sampling_steps": 5}, ValueError, r"`sampling_steps` sets the diffusion model's DDIM steps; method='histology'"),
    ({"model": "/no/such/model"}, FileNotFoundError, r"is not a saved sr_spatial model"),
]


@pytest.mark.parametrize(("kwargs", "error", "message"), BAD_CALLS, ids=[str(c[0]) for c in BAD_CALLS])
def test_bad_input_raises_a_clear_error_and_changes_nothing(demo_sdata, kwargs, error, message):
    sdata = copy.deepcopy(demo_sdata)
    before = _elements(sdata)
    counts = sdata.tables["table"].X.copy()
    kwargs = {"image_key": IMAGE, "config": "tiny", "show_progress_bar": False, **kwargs}
    image_key = kwargs.pop("image_key")
    with pytest.raises(error, match=message):
        sr.tl.superresolve(sdata, image_key, **kwargs)
    assert _elements(sdata) == before
    assert (sdata.tables["table"].X != counts).nnz == 0


def test_model_for_other_genes_is_refused(demo_sdata, tiny_model):
    sdata = copy.deepcopy(demo_sdata)
    before = _elements(sdata)
    with pytest.raises(ValueError, match=r"not among its 30 genes"):
        sr.tl.superresolve(sdata, IMAGE, model=tiny_model, genes=["gene_00", "other"], show_progress_bar=False)
    assert _elements(sdata) == before


def test_model_genes_are_matched_by_name(demo_sdata, tiny_model):
    """Some of the model's genes, in another order, come out as asked and equal to the full run's."""
    full = sr.tl.superresolve(demo_sdata, IMAGE, model=tiny_model, n_samples=1, inplace=False, show_progress_bar=False)
    some = sr.tl.superresolve(
        demo_sdata,
        IMAGE,
        model=tiny_model,
        genes=["gene_05", "gene_01"],
        n_samples=1,
        inplace=False,
        show_progress_bar=False,
    )
    image = some.images[f"{IMAGE}_superres"]
    assert list(image.coords["c"].values) == ["gene_05", "gene_01"]
    np.testing.assert_array_equal(image.values, full.images[f"{IMAGE}_superres"].sel(c=["gene_05", "gene_01"]).values)


def test_second_call_needs_overwrite(demo_sdata, tiny_model):
    sdata = copy.deepcopy(demo_sdata)
    sr.tl.superresolve(sdata, IMAGE, method="nearest", key_added="x", show_progress_bar=False)
    with pytest.raises(ValueError, match="overwrite=True"):
        sr.tl.superresolve(sdata, IMAGE, method="nearest", key_added="x", show_progress_bar=False)
    sr.tl.superresolve(sdata, IMAGE, method="bicubic", key_added="x", overwrite=True, show_progress_bar=False)
    assert sdata.tables["x_table"].uns["x"]["params"]["method"] == "bicubic"


def test_works_through_the_hires_image_and_renamed_elements(demo_sdata):
    """No element or coordinate-system names are assumed: rename everything and use the downscaled image."""
    sdata = copy.deepcopy(demo_sdata)
    renamed = sd.SpatialData(
        images={"he": sdata.images["demo_hires_image"]},
        shapes={"spots": sdata.shapes["demo"]},
        tables={"counts": sdata.tables["table"].copy()},
    )
    table = renamed.tables["counts"]
    table.obs["region"] = table.obs["region"].cat.rename_categories({"demo": "spots"})
    table.uns["spatialdata_attrs"]["region"] = "spots"
    sr.tl.superresolve(renamed, "he", table_key="counts", method="nearest", key_added="out", show_progress_bar=False)
    out = renamed.tables["out_table"]
    full = sr.tl.superresolve(demo_sdata, IMAGE, method="nearest", inplace=False, show_progress_bar=False)
    reference = full.tables[f"{IMAGE}_superres_table"]
    # Same bins in full-resolution pixels: the hires image's Scale is composed in, not assumed away.
    assert out.uns["out"]["bin_size_px"] == pytest.approx(reference.uns[f"{IMAGE}_superres"]["bin_size_px"] / 4)
    np.testing.assert_allclose(np.sort(out.X.sum(axis=1)), np.sort(reference.X.sum(axis=1)), rtol=1e-5)


def test_squidpy_plots_the_bins(superres):
    import matplotlib

    matplotlib.use("Agg")
    import squidpy as sq

    table = superres.tables[f"{KEY}_table"]
    sq.pl.spatial_scatter(table, color="gene_00", library_id=KEY, shape="square")
    import matplotlib.pyplot as plt

    assert plt.gcf().axes
    plt.close("all")


def test_zarr_round_trip(superres, tmp_path):
    path = tmp_path / "out.zarr"
    superres.write(path)
    back = sd.read_zarr(path)
    assert {KEY, f"{KEY}_std"} <= set(back.images)
    np.testing.assert_allclose(back.images[KEY].values, superres.images[KEY].values)
    assert back.tables[f"{KEY}_table"].uns[KEY]["params"]["scale"] == 4


def test_spatialdata_plot_overlays_the_result_on_the_he(superres, tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import spatialdata_plot  # noqa: F401 - registers the `.pl` accessor

    cs = superres.tables[f"{KEY}_table"].uns[KEY]["coordinate_system"]
    fig, ax = plt.subplots()
    (
        superres.pl.render_images(IMAGE)
        # spatialdata-plot 0.4 refuses NaN (outside the tissue) in images; it draws the map once NaN is filled.
        .pl.render_images(KEY, channel="gene_00", alpha=0.7, transfunc=np.nan_to_num)
        .pl.show(coordinate_systems=cs, ax=ax)
    )
    # Both images are drawn in one axis, over the same extent.
    assert len(ax.get_images()) == 2
    extents = [np.asarray(im.get_extent()) for im in ax.get_images()]
    assert extents[1][0] >= extents[0][0] - 1 and extents[1][1] <= extents[0][1] + 1
    plt.close(fig)
