"""Bad input to superresolve: a clear error that says what to do, and the SpatialData left exactly as it was.

Every case starts from the tiny Visium slide as ``spatialdata_io.visium`` reads it, breaks one thing, and
compares every element (names, arrays, geometries, transformations, table contents) before and after the call.
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import pytest
import zarr
from scipy import sparse
from spatialdata import deepcopy, read_zarr
from spatialdata.models import Image2DModel, Image3DModel
from spatialdata.transformations import Translation, get_transformation, remove_transformation, set_transformation

import sr_spatial as sr
from sr_spatial.model import PRESETS, DiffST

IMAGE = "tiny_full_image"
SHAPES = "tiny"
CS = "tiny"
FAST = {**PRESETS["tiny"].to_dict(), "encoder_steps": 30, "train_steps": 30, "n_pool_offsets": 1}


def _digest(array) -> str:
    return hashlib.sha1(np.ascontiguousarray(np.asarray(array)).tobytes()).hexdigest()


def _transformations(element) -> dict[str, str]:
    return {cs: repr(tf) for cs, tf in get_transformation(element, get_all=True).items()}


def snapshot(sdata) -> dict:
    """Everything a call could change, in comparable form."""
    state = {}
    for name, image in sdata.images.items():
        levels = [image[k]["image"] for k in sorted(image.children)] if hasattr(image, "children") else [image]
        state["images", name] = ([(lv.dims, lv.shape, str(lv.dtype), _digest(lv.values)) for lv in levels],)
        state["images", name] += (_transformations(image),)
    for name, shapes in sdata.shapes.items():
        geometry = _digest(shapes.geometry.to_wkb().tolist())
        state["shapes", name] = (list(shapes.index), geometry, _transformations(shapes))
    for name, points in sdata.points.items():
        state["points", name] = (list(points.columns), _transformations(points))
    for name, table in sdata.tables.items():
        x = table.X.toarray() if sparse.issparse(table.X) else np.asarray(table.X)
        state["tables", name] = (
            table.shape,
            list(table.obs_names),
            list(table.var_names),
            _digest(x),
            table.obs.to_json(),
            sorted(table.uns.keys()),
            repr(table.uns.get("spatialdata_attrs")),
        )
    return state


# --- how each case breaks the slide -----------------------------------------------------------------------------


def _table(sdata):
    return sdata.tables["table"]


def other_shapes(sdata):
    sdata.shapes["other"] = deepcopy(sdata.shapes[SHAPES])


def drop_table_annotation(sdata):
    _table(sdata).uns.pop("spatialdata_attrs")


def spots_far_away(sdata):
    set_transformation(sdata.shapes[SHAPES], Translation([1e6, 1e6], axes=("x", "y")), to_coordinate_system=CS)


def no_shared_coordinate_system(sdata):
    remove_transformation(sdata.shapes[SHAPES], CS)


def image_3d(sdata):
    data = np.zeros((3, 2, 64, 64), dtype=np.uint8)
    sdata.images["stack"] = Image3DModel.parse(data, dims=("c", "z", "y", "x"), transformations=_tf(sdata))


def image_4_channels(sdata):
    data = np.zeros((4, 64, 64), dtype=np.uint16)
    sdata.images["if4"] = Image2DModel.parse(data, dims=("c", "y", "x"), transformations=_tf(sdata))


def image_bool(sdata):
    data = np.zeros((3, 64, 64), dtype=bool)
    sdata.images["mask"] = Image2DModel.parse(data, dims=("c", "y", "x"), transformations=_tf(sdata))


def _tf(sdata):
    return dict(get_transformation(sdata.images[IMAGE], get_all=True))


def _set_x(sdata, change):
    table = _table(sdata)
    x = table.X.toarray()
    change(x)
    table.X = sparse.csr_matrix(x)


def nan_counts(sdata):
    _set_x(sdata, lambda x: x.__setitem__((0, 0), np.nan))


def negative_counts(sdata):
    _set_x(sdata, lambda x: x.__setitem__((1, 2), -3))


def normalised_counts(sdata):
    _set_x(sdata, lambda x: np.copyto(x, np.log1p(x)))


def duplicated_genes(sdata):
    table = _table(sdata)
    names = table.var_names.tolist()
    names[1] = names[0]
    table.var_names = names


def one_spot_in_tissue(sdata):
    table = _table(sdata)
    table.obs["in_tissue"] = np.r_[1, np.zeros(table.n_obs - 1, dtype=int)]


def empty_tissue(sdata):
    _table(sdata).obs["in_tissue"] = 0


# --- the table ---------------------------------------------------------------------------------------------------

#: (id, how to break the slide, keyword arguments, error, message fragment that says what to do)
CASES = [
    ("missing image", None, {"image_key": "nope"}, KeyError, r"Image 'nope' not found\. Available images: \["),
    ("missing table", None, {"table_key": "nope"}, KeyError, r"Table 'nope' not found\. Available tables: \['table'\]"),
    ("missing shapes", None, {"shapes_key": "nope"}, KeyError, r"Shapes 'nope' not found\. Available shapes"),
    ("table not annotating the shapes", other_shapes, {"shapes_key": "other"}, ValueError,
     r"annotates \['tiny'\], not shapes 'other'\. Pass the table that holds the counts"),
    ("table without annotation", drop_table_annotation, {}, ValueError,
     r"does not say which shapes it annotates.*TableModel\.parse"),
    ("spots outside the image", spots_far_away, {}, ValueError,
     r"None of the 81 spots of 'tiny' lies over image .*Check the elements' transformations"),
    ("no shared coordinate system", no_shared_coordinate_system, {}, ValueError,
     r"share no coordinate system.*set_transformation"),
    ("3D image", image_3d, {"image_key": "stack"}, ValueError, r"dims \('c', 'z', 'y', 'x'\).*isel\(z=0\)"),
    ("4-channel image", image_4_channels, {"image_key": "if4"}, ValueError,
     r"has 4 channels; an H&E image with 3 \(RGB\) channels.*Available images"),
    ("boolean image", image_bool, {"image_key": "mask"}, TypeError, r"dtype bool.*Pass the H&E image, not a mask"),
    ("NaN counts", nan_counts, {}, ValueError, r"NaN or infinite values in `\.X`; raw counts are needed"),
    ("negative counts", negative_counts, {}, ValueError, r"negative values in `\.X`; raw counts are needed"),
    ("normalised (float) counts", normalised_counts, {}, ValueError,
     r"non-integer values in `\.X`.*table\.X = table\.layers\['counts'\]"),
    ("duplicated gene names", duplicated_genes, {}, ValueError, r"duplicated.*var_names_make_unique"),
    ("genes not present", None, {"genes": ["gene_00", "no_such_gene"]}, KeyError,
     r"not in the table: \['no_such_gene'\]"),
    ("one-spot tissue", one_spot_in_tissue, {}, ValueError, r"Found 1 spot\(s\) over the image.*in_tissue"),
    ("no spot in tissue", empty_tissue, {}, ValueError, r"has no spots of shapes 'tiny' in the tissue.*in_tissue"),
    ("scale below 2", None, {"scale": 1}, ValueError, r"`scale` must be an integer of at least 2"),
    ("float scale", None, {"scale": 2.5}, ValueError, r"`scale` must be an integer of at least 2"),
    ("model for other genes", None, {"model": "other_genes"}, KeyError,
     r"2 of which are not in table 'table': \['OTHER1', 'OTHER2'\]\. Train a model on genes both slides measure"),
    ("requested genes not in the model", None, {"model": "two_genes", "genes": ["gene_05"]}, ValueError,
     r"\['gene_05'\] are not among its 2 genes\. Pass `genes` from `model\.genes`"),
    ("truncated checkpoint", None, {"model": "truncated"}, ValueError,
     r"Could not read the model in .*Re-save or re-train"),
    ("not a model directory", None, {"model": "empty_dir"}, FileNotFoundError, r"is not a saved sr_spatial model"),
    ("unknown method", None, {"method": "magic"}, ValueError, r"Unknown method 'magic'; choose"),
    ("read-only zarr store for the images", None, {"image_store": zarr.storage.MemoryStore(read_only=True)},
     ValueError, r"read-only; open it writable or pass a folder path"),
    ("image store exists", None, {"image_store": "empty_dir"}, ValueError,
     r"exists\. Pass another path, or `overwrite=True` to replace it"),
    ("image store not a store", None, {"image_store": 3}, TypeError, r"must be a folder path or a zarr store"),
    ("blocks too small", None, {"block_bins": 4}, ValueError,
     r"`block_bins` must be an integer of at least 16 \(or None"),
    ("client not a dask client", None, {"client": object()}, TypeError, r"must be a dask\.distributed Client"),
]  # fmt: skip


@pytest.fixture(scope="module")
def model_paths(tmp_path_factory):
    """Loadable models for genes the slide lacks and for two of its genes, a truncated checkpoint, an empty folder."""
    root = tmp_path_factory.mktemp("models")
    other = DiffST(["OTHER1", "OTHER2"], config=FAST, device="cpu", seed=0)
    other.is_trained = True  # untrained weights load the same way; the gene check comes first
    other.save(root / "other_genes")
    two = DiffST(["gene_00", "gene_01"], config=FAST, device="cpu", seed=0)
    two.is_trained = True
    two.save(root / "two_genes")
    two.save(root / "truncated")
    weights = root / "truncated" / "model.pt"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    (root / "empty_dir").mkdir()
    return {name: root / name for name in ("other_genes", "two_genes", "truncated", "empty_dir")}


def test_the_table_is_large_enough():
    assert len(CASES) >= 15
    assert len({c[0] for c in CASES}) == len(CASES)


def test_snapshot_sees_every_kind_of_change(visium_sdata):
    sdata = deepcopy(visium_sdata)
    before = snapshot(sdata)
    for change in (negative_counts, spots_far_away, duplicated_genes):
        changed = deepcopy(sdata)
        change(changed)
        assert snapshot(changed) != before
    sr.tl.superresolve(sdata, IMAGE, method="nearest", show_progress_bar=False)
    assert snapshot(sdata) != before


@pytest.mark.parametrize(("name", "breaks", "kwargs", "error", "message"), CASES, ids=[c[0] for c in CASES])
def test_bad_input_raises_a_clear_error_and_changes_nothing(
    visium_sdata, model_paths, name, breaks, kwargs, error, message
):
    sdata = deepcopy(visium_sdata)
    if breaks is not None:
        breaks(sdata)
    kwargs = {"image_key": IMAGE, "config": FAST, "n_samples": 1, "show_progress_bar": False, **kwargs}
    for key in ("model", "image_store"):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = model_paths[kwargs[key]]
    image_key = kwargs.pop("image_key")
    before = snapshot(sdata)
    with pytest.raises(error, match=message):
        sr.tl.superresolve(sdata, image_key, **kwargs)
    assert snapshot(sdata) == before


def test_zarr_backed_slide_is_read_not_written(visium_sdata, tmp_path):
    """Results are added in memory; the zarr store the slide was read from is not touched (it may be read-only).

    Writing them to disk is the caller's explicit step (``sdata.write_element``), where a read-only store fails.
    """
    path = tmp_path / "slide.zarr"
    deepcopy(visium_sdata).write(path)
    files = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()}
    for p in [path, *path.rglob("*")]:
        p.chmod(p.stat().st_mode & ~0o222)
    try:
        sdata = read_zarr(path)
        sr.tl.superresolve(sdata, "tiny_hires_image", method="nearest", show_progress_bar=False)
        assert "tiny_hires_image_superres" in sdata.images
        assert {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()} == files
        if os.geteuid() != 0:  # root writes through read-only permissions
            with pytest.raises(OSError):
                sdata.write_element("tiny_hires_image_superres")
    finally:
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o200)
