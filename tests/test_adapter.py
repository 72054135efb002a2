"""The SpatialData adapter: reading spots and histology in the image's full-resolution pixel space."""

from __future__ import annotations

import copy

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from scipy import sparse
from spatialdata import SpatialData
from spatialdata.models import Image2DModel, ShapesModel, TableModel
from spatialdata.transformations import (
    Identity,
    Scale,
    Sequence,
    Translation,
    get_transformation,
    remove_transformation,
    set_transformation,
)

from sr_spatial._adapter._elements import BinGrid
from sr_spatial._adapter._read import read_histology, read_spots

IMAGE_KEY = "demo_full_image"
HIRES_KEY = "demo_hires_image"
SHAPES_KEY = "demo"
CS = "demo"
RADIUS_PX = 27.5

RED = np.array([200, 30, 60], dtype=np.uint8)
WHITE = np.array([255, 255, 255], dtype=np.uint8)


@pytest.fixture
def sdata(demo_sdata):
    """A private copy of the demo for tests that change it."""
    return copy.deepcopy(demo_sdata)


def _table_centres(sdata: SpatialData, obs_names) -> np.ndarray:
    table = sdata.tables["table"]
    return table.obsm["spatial"][table.obs_names.get_indexer(obs_names)]


# --- read_spots ------------------------------------------------------------------------------------------------


def test_read_spots_on_demo(demo_sdata):
    spots = read_spots(demo_sdata, IMAGE_KEY)
    table = demo_sdata.tables["table"]

    assert spots.coordinate_system == CS
    assert spots.shapes_key == SHAPES_KEY
    assert spots.image_key == IMAGE_KEY
    assert spots.table_key == "table"
    full = demo_sdata.images[IMAGE_KEY]["scale0"]["image"]
    assert spots.image_shape == (full.sizes["y"], full.sizes["x"])
    assert len(spots.obs_names) == table.n_obs  # every demo spot is in the tissue and over the image
    assert list(spots.var_names) == list(table.var_names)

    # Centres in full-resolution pixels, as .obsm["spatial"] of a Visium table.
    np.testing.assert_allclose(spots.centres, _table_centres(demo_sdata, spots.obs_names), atol=1e-9)
    np.testing.assert_allclose(spots.radius, RADIUS_PX)

    # Counts are the table's rows, in the order of the spots.
    assert sparse.isspmatrix_csr(spots.counts)
    assert spots.counts.dtype == np.float32
    rows = table.obs_names.get_indexer(spots.obs_names)
    np.testing.assert_array_equal(spots.counts.toarray(), table.X[rows].toarray())


def test_read_spots_on_scaled_image(demo_sdata):
    """The hires image is 4x smaller with Scale(4): spot centres and radii shrink by 4 in its pixels."""
    spots = read_spots(demo_sdata, HIRES_KEY)
    np.testing.assert_allclose(spots.centres, _table_centres(demo_sdata, spots.obs_names) / 4.0, atol=1e-9)
    np.testing.assert_allclose(spots.radius, RADIUS_PX / 4.0)
    hires = demo_sdata.images[HIRES_KEY]
    assert spots.image_shape == (hires.sizes["y"], hires.sizes["x"])


def test_read_spots_with_non_identity_transformations(sdata):
    """Shapes in their own units and an image with Scale + Translation meet in a third coordinate system."""
    table = sdata.tables["table"]
    px = table.obsm["spatial"]  # full-resolution pixels
    # Coordinate system "um": 0.8 um per image pixel, image origin at (30, 20) um.
    set_transformation(
        sdata.images[IMAGE_KEY],
        Sequence([Scale([0.8, 0.8], axes=("x", "y")), Translation([30.0, 20.0], axes=("x", "y"))]),
        to_coordinate_system="um",
    )
    # Shapes stored in half-um units with an offset: um = 2 * s + (-7, 3).
    um = 0.8 * px + np.array([30.0, 20.0])
    stored = (um - np.array([-7.0, 3.0])) / 2.0
    shapes = ShapesModel.parse(
        stored,
        geometry=0,
        radius=np.full(len(px), RADIUS_PX * 0.8 / 2.0),
        index=pd.Index(table.obs["spot_id"].to_numpy(), dtype=object),
        transformations={
            "um": Sequence([Scale([2.0, 2.0], axes=("x", "y")), Translation([-7.0, 3.0], axes=("x", "y"))])
        },
    )
    del sdata.shapes[SHAPES_KEY]
    sdata.shapes[SHAPES_KEY] = shapes

    spots = read_spots(sdata, IMAGE_KEY)
    assert spots.coordinate_system == "um"  # the only one both are registered to
    np.testing.assert_allclose(spots.centres, _table_centres(sdata, spots.obs_names), atol=1e-6)
    np.testing.assert_allclose(spots.radius, RADIUS_PX, rtol=1e-9)

    with pytest.raises(ValueError, match="not shared"):
        read_spots(sdata, IMAGE_KEY, coordinate_system=CS)


@pytest.mark.parametrize(
    ("kwargs", "missing", "available"),
    [
        ({"image_key": "he"}, "'he'", ["demo_full_image", "demo_hires_image", "demo_truth"]),
        ({"image_key": IMAGE_KEY, "table_key": "counts"}, "'counts'", ["table"]),
        ({"image_key": IMAGE_KEY, "shapes_key": "spots"}, "'spots'", ["demo"]),
    ],
)
def test_read_spots_missing_keys(demo_sdata, kwargs, missing, available):
    with pytest.raises(KeyError) as info:
        read_spots(demo_sdata, **kwargs)
    message = str(info.value)
    assert missing in message
    for name in available:
        assert repr(name) in message


def test_read_spots_no_shared_coordinate_system(sdata):
    image = sdata.images[IMAGE_KEY]
    set_transformation(image, Identity(), to_coordinate_system="elsewhere")
    remove_transformation(image, CS)
    assert set(get_transformation(image, get_all=True)) == {"elsewhere"}
    with pytest.raises(ValueError, match="share no coordinate system"):
        read_spots(sdata, IMAGE_KEY)


def test_coordinate_systems_that_disagree_are_refused_naming_both_placements(sdata):
    # A second registration of both elements that puts the spots 300 px further right on the image.
    set_transformation(sdata.images[IMAGE_KEY], Identity(), to_coordinate_system="aligned")
    set_transformation(sdata.shapes[SHAPES_KEY], Translation([300.0, 0.0], axes=("x", "y")), "aligned")
    with pytest.raises(ValueError, match=r"'aligned' and 'demo'|'demo' and 'aligned'") as info:
        read_spots(sdata, IMAGE_KEY)
    message = str(info.value)
    assert "300 px apart" in message and "coordinate_system=" in message
    shifted = read_spots(sdata, IMAGE_KEY, coordinate_system="aligned")  # named, it is used as it is
    first = read_spots(sdata, IMAGE_KEY, coordinate_system=CS)
    both = shifted.obs_names.intersection(first.obs_names)
    moved = shifted.centres[shifted.obs_names.get_indexer(both)] - first.centres[first.obs_names.get_indexer(both)]
    np.testing.assert_allclose(moved, np.tile([300.0, 0.0], (len(both), 1)))


def test_coordinate_systems_that_agree_are_read(sdata, demo_sdata):
    set_transformation(sdata.images[IMAGE_KEY], Identity(), to_coordinate_system="aligned")
    set_transformation(sdata.shapes[SHAPES_KEY], get_transformation(sdata.shapes[SHAPES_KEY], CS), "aligned")
    np.testing.assert_array_equal(read_spots(sdata, IMAGE_KEY).centres, read_spots(demo_sdata, IMAGE_KEY).centres)


def test_repeated_shape_ids_and_a_missing_region_column_are_refused(sdata):
    shapes = sdata.shapes[SHAPES_KEY]
    shapes.index = [shapes.index[0], *shapes.index[:-1]]
    with pytest.raises(ValueError, match=r"Shapes 'demo' repeat 1 index values"):
        read_spots(sdata, IMAGE_KEY)
    table = sdata.tables["table"]
    del table.obs[table.uns["spatialdata_attrs"]["region_key"]]
    with pytest.raises(ValueError, match=r"Table 'table' names 'region' as its region column .* no such column"):
        read_spots(sdata, IMAGE_KEY)


def test_read_spots_all_outside_image(sdata):
    set_transformation(sdata.shapes[SHAPES_KEY], Translation([1e5, 1e5], axes=("x", "y")), to_coordinate_system=CS)
    with pytest.raises(ValueError, match="None of the"):
        read_spots(sdata, IMAGE_KEY)


def test_read_spots_partly_outside_image_drops_them(sdata):
    # Shift the spots left by 600 px: those with x < 600 leave the image.
    set_transformation(sdata.shapes[SHAPES_KEY], Translation([-600.0, 0.0], axes=("x", "y")), to_coordinate_system=CS)
    spots = read_spots(sdata, IMAGE_KEY)
    px = sdata.tables["table"].obsm["spatial"]
    assert len(spots.obs_names) == int((px[:, 0] >= 600).sum())
    assert 0 < len(spots.obs_names) < len(px)
    np.testing.assert_allclose(spots.centres, _table_centres(sdata, spots.obs_names) - [600.0, 0.0], atol=1e-9)


@pytest.mark.parametrize(("bad", "match"), [(-1.0, "negative"), (np.nan, "NaN")])
def test_read_spots_rejects_non_count_values(sdata, bad, match):
    table = sdata.tables["table"]
    x = sparse.csr_matrix(table.X, dtype=np.float32, copy=True)
    x.data[3] = bad
    table.X = x
    with pytest.raises(ValueError, match=match):
        read_spots(sdata, IMAGE_KEY)


# --- read_histology --------------------------------------------------------------------------------------------


def _synthetic_sdata(image: np.ndarray, *, scale_factors=None) -> SpatialData:
    """An image with four spots over it, all in coordinate system ``"px"`` (the image's pixels)."""
    he = Image2DModel.parse(
        image, dims=("c", "y", "x"), scale_factors=scale_factors, transformations={"px": Identity()}
    )
    xy = np.array([[50.0, 50.0], [150.0, 50.0], [50.0, 150.0], [150.0, 150.0]])
    index = pd.Index([f"s{i}" for i in range(len(xy))], dtype=object)
    shapes = ShapesModel.parse(
        xy, geometry=0, radius=np.full(len(xy), 10.0), index=index, transformations={"px": Identity()}
    )
    adata = ad.AnnData(
        X=sparse.csr_matrix(np.ones((len(xy), 3), dtype=np.float32)),
        obs=pd.DataFrame({"region": pd.Categorical(["spots"] * len(xy)), "spot_id": index.to_numpy()}, index=index),
    )
    table = TableModel.parse(adata, region="spots", region_key="region", instance_key="spot_id")
    return SpatialData(images={"he": he}, shapes={"spots": shapes}, tables={"table": table})


def _square_image() -> np.ndarray:
    """White 200 x 240 image with a red square over x in [80, 140), y in [60, 100)."""
    image = np.empty((3, 200, 240), dtype=np.uint8)
    image[:] = WHITE[:, None, None]
    image[:, 60:100, 80:140] = RED[:, None, None]
    return image


def _bin_means(histology: np.ndarray, grid: BinGrid, k: int) -> np.ndarray:
    return histology.reshape(3, grid.height, k, grid.width, k).mean(axis=(2, 4))


def test_read_histology_shape_and_range(st_map):
    k = 2
    histology = read_histology(st_map.spots, st_map.grid, px_per_bin=k)
    assert histology.shape == (3, st_map.grid.height * k, st_map.grid.width * k)
    assert histology.dtype == np.float32
    assert histology.min() >= 0.0
    assert histology.max() <= 1.0
    # Tissue is darker than glass.
    tissue = np.kron(st_map.mask, np.ones((k, k), dtype=bool))
    assert histology[:, tissue].mean() < histology[:, ~tissue].mean() - 0.05


def test_read_histology_pixel_aligned():
    """One output pixel per image pixel over the square gives back the image's pixels exactly."""
    image = _square_image()
    spots = read_spots(_synthetic_sdata(image), "he")
    grid = BinGrid(x0=80.0, y0=60.0, size=20.0, height=2, width=3)
    histology = read_histology(spots, grid, px_per_bin=20)
    np.testing.assert_allclose(histology, image[:, 60:100, 80:140] / 255.0, atol=1e-6)


def _stray(image, value):
    image[:, 70, 90] = value  # one pixel inside the red square, inside the crop read below
    return image


#: The square image in other encodings; each must read as the uint8 original (but for its one stray pixel).
ENCODINGS = {
    "uint16 holding 0-255": lambda im: im.astype(np.uint16),
    "uint16 full range": lambda im: im.astype(np.uint16) * 257,
    "uint16 12-bit": lambda im: (im.astype(np.int64) * 4095 // 255).astype(np.uint16),
    "float 0-1": lambda im: im / np.float32(255),
    "float 0-255": lambda im: im.astype(np.float32),
    "float 0-1, one pixel above 1": lambda im: _stray(im / np.float32(255), 1.5),
    "float 0-1, one pixel inf": lambda im: _stray(im / np.float32(255), np.inf),
}


@pytest.mark.parametrize("encode", ENCODINGS.values(), ids=ENCODINGS.keys())
def test_read_histology_decides_the_intensity_range_once_per_image(encode, caplog):
    """A stray bright pixel or an integer image not using its dtype's range no longer darkens the slide."""
    image = _square_image()
    with caplog.at_level("INFO", logger="sr_spatial"):
        spots = read_spots(_synthetic_sdata(encode(image.copy())), "he")
    assert "read on a 0-" in caplog.text
    grid = BinGrid(x0=80.0, y0=60.0, size=20.0, height=2, width=3)
    histology = read_histology(spots, grid, px_per_bin=20)
    expected = image[:, 60:100, 80:140] / 255.0
    keep = np.ones(expected.shape[1:], dtype=bool)
    keep[10, 10] = False  # the stray pixel reads as white
    np.testing.assert_allclose(histology[:, keep], expected[:, keep], atol=2e-3)


PINK = np.array([220, 150, 190], dtype=np.uint8)


def _tissue_image(covered: bool = False) -> np.ndarray:
    """Pink tissue under all four spots of :func:`_synthetic_sdata` on white glass (or filling the image)."""
    image = np.empty((3, 200, 240), dtype=np.uint8)
    image[:] = (PINK if covered else WHITE)[:, None, None]
    image[:, 30:170, 30:170] = PINK[:, None, None]
    image[:, 60:100, 80:140] = RED[:, None, None]
    return image


def test_a_fluorescence_image_reads_as_its_brightfield_negative(caplog):
    """Tissue bright on a dark background is inverted, so features see nuclei dark on white as in an H&E."""
    image = _tissue_image()
    grid = BinGrid(x0=20.0, y0=20.0, size=20.0, height=8, width=9)
    bright = read_spots(_synthetic_sdata(image), "he")
    assert not bright.inverted
    with caplog.at_level("INFO", logger="sr_spatial"):
        dark = read_spots(_synthetic_sdata((255 - image).astype(np.uint8)), "he")
    assert dark.inverted
    assert "dark background" in caplog.text
    np.testing.assert_allclose(
        read_histology(dark, grid, px_per_bin=4), read_histology(bright, grid, px_per_bin=4), atol=1e-5
    )


def test_a_brightfield_crop_without_glass_is_not_inverted():
    """No background in sight: the border is tissue, bright enough to be brightfield."""
    assert not read_spots(_synthetic_sdata(_tissue_image(covered=True)), "he").inverted


def test_an_rgba_image_reads_as_its_rgb():
    image = _tissue_image()
    rgba = np.concatenate([image, np.full_like(image[:1], 255)])
    sdata = _synthetic_sdata(image)
    sdata.images["rgba"] = Image2DModel.parse(
        rgba, dims=("c", "y", "x"), c_coords=["r", "g", "b", "a"], transformations={"px": Identity()}
    )
    grid = BinGrid(x0=20.0, y0=20.0, size=20.0, height=8, width=9)
    np.testing.assert_array_equal(
        read_histology(read_spots(sdata, "rgba"), grid, px_per_bin=4),
        read_histology(read_spots(sdata, "he"), grid, px_per_bin=4),
    )


def test_read_histology_bin_mean_colour():
    """Bin means are the area-weighted mean colour of the image under each bin."""
    image = _square_image()
    spots = read_spots(_synthetic_sdata(image), "he")
    k = 40
    grid = BinGrid(x0=60.0, y0=60.0, size=40.0, height=1, width=3)  # x in [60, 180), y in [60, 100)
    means = _bin_means(read_histology(spots, grid, px_per_bin=k), grid, k)
    np.testing.assert_allclose(means[:, 0, 0], (RED / 2 + WHITE / 2) / 255.0, atol=1e-4)
    np.testing.assert_allclose(means[:, 0, 1], RED / 255.0, atol=1e-4)  # x in [100, 140): all red
    np.testing.assert_allclose(means[:, 0, 2], WHITE / 255.0, atol=1e-4)  # x in [140, 180): all white


def test_read_histology_reads_coarser_level():
    """With 4 image pixels per output pixel the 4x pyramid level is read; bins on the square stay exact."""
    image = _square_image()
    spots = read_spots(_synthetic_sdata(image, scale_factors=[2, 2]), "he")
    assert spots.image_shape == (200, 240)
    k = 5
    grid = BinGrid(x0=60.0, y0=40.0, size=20.0, height=6, width=6)  # x in [60, 180), y in [40, 160)
    means = _bin_means(read_histology(spots, grid, px_per_bin=k), grid, k)
    expected = np.empty((3, 6, 6))
    expected[:] = (WHITE / 255.0)[:, None, None]
    expected[:, 1:3, 1:4] = (RED / 255.0)[:, None, None]  # bins over y in [60, 100), x in [80, 140)
    np.testing.assert_allclose(means, expected, atol=2e-3)


def test_read_histology_outside_image_is_white():
    spots = read_spots(_synthetic_sdata(_square_image()), "he")
    grid = BinGrid(x0=1000.0, y0=1000.0, size=10.0, height=2, width=2)
    np.testing.assert_array_equal(read_histology(spots, grid, px_per_bin=4), 1.0)


def test_read_histology_uniform_image_stays_uniform_when_pooling():
    """10 image pixels per output pixel (area-averaged): a uniform image must stay uniform to the grid's edge."""
    image = np.empty((3, 200, 240), dtype=np.uint8)
    image[:] = RED[:, None, None]
    spots = read_spots(_synthetic_sdata(image), "he")
    grid = BinGrid(x0=50.0, y0=50.0, size=20.0, height=3, width=3)
    histology = read_histology(spots, grid, px_per_bin=2)
    np.testing.assert_allclose(histology, np.broadcast_to((RED / 255.0)[:, None, None], histology.shape), atol=1e-3)


def test_read_histology_hires_matches_full_image(demo_sdata, st_map):
    """The 4x downscaled hires image, placed by its Scale(4), gives nearly the same histology as the full image."""
    k = 2
    grid = st_map.grid
    full = read_histology(read_spots(demo_sdata, IMAGE_KEY), grid, px_per_bin=k)
    hires_spots = read_spots(demo_sdata, HIRES_KEY)
    hires_grid = BinGrid(x0=grid.x0 / 4, y0=grid.y0 / 4, size=grid.size / 4, height=grid.height, width=grid.width)
    hires = read_histology(hires_spots, hires_grid, px_per_bin=k)
    assert hires.shape == full.shape
    assert np.abs(hires - full).mean() < 0.02
    # Per-bin colours agree closely, so the two are aligned (a shift by one bin would break this).
    fb, hb = _bin_means(full, grid, k), _bin_means(hires, grid, k)
    assert np.abs(hb - fb).mean() < 0.01
    assert np.abs(hb - fb).max() < 0.08
    r = np.corrcoef(fb.ravel(), hb.ravel())[0, 1]
    shifted = np.corrcoef(fb[:, :, 1:].ravel(), hb[:, :, :-1].ravel())[0, 1]
    assert r > 0.99
    assert r > shifted + 0.02


def test_read_histology_translated_crop_matches_full_image(demo_sdata, st_map):
    """A crop of the image registered with a Translation gives the same histology under the same bins."""
    sdata = copy.deepcopy(demo_sdata)
    full = np.asarray(demo_sdata.images[IMAGE_KEY]["scale0"]["image"].values)
    x_off, y_off = 400, 500
    crop = full[:, y_off : y_off + 1000, x_off : x_off + 1200]
    sdata.images["crop"] = Image2DModel.parse(
        crop, dims=("c", "y", "x"), transformations={CS: Translation([float(x_off), float(y_off)], axes=("x", "y"))}
    )
    crop_spots = read_spots(sdata, "crop")
    np.testing.assert_allclose(
        crop_spots.centres, _table_centres(sdata, crop_spots.obs_names) - [x_off, y_off], atol=1e-9
    )
    # Bins well inside the crop, in full-image pixels and in crop pixels.
    size = st_map.grid.size
    grid_full = BinGrid(x0=600.0, y0=700.0, size=size, height=20, width=24)
    grid_crop = BinGrid(x0=600.0 - x_off, y0=700.0 - y_off, size=size, height=20, width=24)
    k = 16  # output pixels smaller than 2 image pixels: both are read from full resolution
    a = read_histology(read_spots(demo_sdata, IMAGE_KEY), grid_full, px_per_bin=k)
    b = read_histology(crop_spots, grid_crop, px_per_bin=k)
    np.testing.assert_allclose(b, a, atol=1e-5)


def test_per_gene_results_become_var_columns_labelled_by_gene():
    from sr_spatial._adapter._write import per_gene_columns

    genes = ["a", "b", "c"]
    uns = {
        "params": {"genes": genes, "n_top_genes": np.array([1.0, 2.0, 3.0])},
        "genes": genes,  # names, not a result
        "spot_residual": 0.1,
        "spot_residual_per_gene": np.array([0.1, 0.2, 0.3]),
        "coverage_scale": np.array([1.0, 1.5, 2.0], dtype=np.float32),
        "histology": {"features": "morphology", "weight": np.array([0.0, 0.5, 1.0]), "n_groups": 3},
        "per_feature": np.arange(5.0),  # another length: not per gene
    }
    var = per_gene_columns(uns, genes)
    assert list(var.index) == genes and var.index.name == "gene"
    assert list(var.columns) == ["spot_residual", "coverage_scale", "histology_weight"]
    assert var.loc["b", "histology_weight"] == 0.5
    # uns keeps its arrays.
    assert isinstance(uns["histology"]["weight"], np.ndarray) and "spot_residual_per_gene" in uns


# --- brightfield or fluorescence, on the demo slide (issue 26) ---------------------------------------------------

DEMO_IMAGE = "demo_full_image"


def _demo_variant(demo_sdata, name, pixels, channels=None):
    """``demo_sdata`` with its H&E's full-resolution pixels replaced by ``pixels`` as image ``name``."""
    from spatialdata import deepcopy
    from spatialdata.transformations import get_transformation

    sdata = deepcopy(demo_sdata)
    sdata.images[name] = Image2DModel.parse(
        pixels, dims=("c", "y", "x"), c_coords=channels, scale_factors=[2, 2],
        transformations=dict(get_transformation(demo_sdata.images[DEMO_IMAGE], get_all=True)),
    )  # fmt: skip
    return sdata


def _demo_pixels(demo_sdata) -> np.ndarray:
    image = demo_sdata.images[DEMO_IMAGE]
    return np.asarray(image[sorted(image.children)[0]]["image"].values)


def black_padded(pixels: np.ndarray, share: float = 0.06) -> np.ndarray:
    """A black frame over ``share`` of each side, as a scanner or a registration pads a brightfield slide."""
    padded = pixels.copy()
    dy, dx = int(share * pixels.shape[1]), int(share * pixels.shape[2])
    padded[:, :dy], padded[:, -dy:], padded[:, :, :dx], padded[:, :, -dx:] = 0, 0, 0, 0
    return padded


def transparent_glass(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """RGBA whose glass is transparent black, and the RGB it shows over white."""
    glass = pixels.mean(axis=0) > 0.9 * 255
    rgba = np.concatenate([pixels, np.full_like(pixels[:1], 255)])
    rgba[:, glass] = 0
    shown = pixels.copy()
    shown[:, glass] = 255
    return rgba, shown


def test_black_padding_does_not_make_a_brightfield_he_fluorescence(demo_sdata):
    """The decision compares the tissue with the glass around it, not with the image's (padded) border."""
    sdata = _demo_variant(demo_sdata, "padded", black_padded(_demo_pixels(demo_sdata)))
    spots = read_spots(sdata, "padded")
    assert not spots.inverted
    # The padding reads as glass, not as the darkest tissue.
    histology = read_histology(spots, BinGrid(x0=0.0, y0=0.0, size=20.0, height=4, width=4), px_per_bin=4)
    np.testing.assert_array_equal(histology, 1.0)


def test_transparent_black_glass_reads_as_white_glass(demo_sdata):
    rgba, shown = transparent_glass(_demo_pixels(demo_sdata))
    sdata = _demo_variant(demo_sdata, "rgba", rgba, channels=["r", "g", "b", "a"])
    sdata.images["shown"] = _demo_variant(demo_sdata, "shown", shown).images["shown"]
    rgba_spots, shown_spots = read_spots(sdata, "rgba"), read_spots(sdata, "shown")
    assert not rgba_spots.inverted
    # At full resolution: a coarser level averages opacity and colour, which blends the glass's edge differently.
    grid = BinGrid(x0=100.0, y0=100.0, size=4.0, height=150, width=150)
    np.testing.assert_allclose(
        read_histology(rgba_spots, grid, px_per_bin=4), read_histology(shown_spots, grid, px_per_bin=4), atol=1e-6
    )


def test_stain_says_how_to_read_the_image(demo_sdata, caplog):
    pixels = _demo_pixels(demo_sdata)
    sdata = _demo_variant(demo_sdata, "negative", (255 - pixels).astype(np.uint8))
    assert read_spots(sdata, "negative").inverted  # decided from the image
    with caplog.at_level("INFO", logger="sr_spatial"):
        caplog.clear()
        assert not read_spots(sdata, "negative", stain="brightfield").inverted
        assert read_spots(sdata, DEMO_IMAGE, stain="fluorescence").inverted
    assert "brightness" not in caplog.text  # stated, not decided: nothing to report
    with pytest.raises(ValueError, match=r"`stain` must be one of \['auto', 'brightfield', 'fluorescence'\]"):
        read_spots(sdata, DEMO_IMAGE, stain="H&E")


def test_a_reading_it_cannot_tell_is_a_warning(demo_sdata, caplog):
    """Dim tissue on a background just like it: neither glass nor a dark background in sight."""
    grey = np.full_like(_demo_pixels(demo_sdata), 70)
    sdata = _demo_variant(demo_sdata, "grey", grey)
    with caplog.at_level("WARNING", logger="sr_spatial"):
        assert not read_spots(sdata, "grey").inverted
    assert "cannot tell brightfield from fluorescence" in caplog.text
    assert "stain='brightfield'" in caplog.text
