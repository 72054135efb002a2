"""Bad input to superresolve: a clear error that says what to do, and the SpatialData left exactly as it was.

Every case starts from the tiny Visium slide as ``spatialdata_io.visium`` reads it, breaks one thing, and
compares every element (names, arrays, geometries, transformations, table contents) before and after the call.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from scipy import sparse
from spatialdata import deepcopy, read_zarr
from spatialdata.models import Image2DModel, Image3DModel
from spatialdata.transformations import (
    Sequence,
    Translation,
    get_transformation,
    remove_transformation,
    set_transformation,
)

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
        columns = shapes.drop(columns="geometry").to_json(orient="values")  # "values": an index may repeat
        state["shapes", name] = (list(shapes.index), geometry, columns, _transformations(shapes))
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


def text_tissue_flags(sdata):
    """One spot flagged "1", the rest "0": as text, every flag used to read as true."""
    table = _table(sdata)
    table.obs["in_tissue"] = ["1"] + ["0"] * (table.n_obs - 1)


def unreadable_tissue_flags(sdata):
    table = _table(sdata)
    table.obs["in_tissue"] = ["yes"] * (table.n_obs - 1) + ["maybe"]


def _set_radius(sdata, radius):
    sdata.shapes[SHAPES]["radius"] = radius


def zero_radius(sdata):
    _set_radius(sdata, 0.0)


def negative_radius(sdata):
    _set_radius(sdata, -5.0)


def nan_radius(sdata):
    shapes = sdata.shapes[SHAPES]
    shapes.loc[shapes.index[3], "radius"] = np.nan


def duplicated_positions(sdata):
    shapes = sdata.shapes[SHAPES]
    shapes.loc[shapes.index[1], "geometry"] = shapes.geometry.iloc[0]


def zero_counts(sdata):
    _set_x(sdata, lambda x: x.__imul__(0))


def no_genes(sdata):
    sdata.tables["table"] = _table(sdata)[:, []].copy()


def counts_in_x_table(sdata):
    sdata.tables["x_table"] = sdata.tables["table"]
    del sdata.tables["table"]


def _float_he(sdata, name, change):
    full = sdata.images[IMAGE]
    level0 = full[sorted(full.children)[0]]["image"]
    pixels = np.asarray(level0.values, dtype=np.float32) / 255
    change(pixels)
    sdata.images[name] = Image2DModel.parse(pixels, dims=("c", "y", "x"), transformations=_tf(sdata))


def all_nan_image(sdata):
    _float_he(sdata, "nan_image", lambda pixels: pixels.fill(np.nan))


def nan_over_the_tissue(sdata):
    _float_he(sdata, "holed_image", lambda pixels: pixels[:, : pixels.shape[1] // 2].fill(np.nan))


# --- cases that set up files: they take the test's folder and return keyword arguments (and maybe a new slide) ---


def slide_read_from_zarr(sdata, folder):
    path = folder / "slide.zarr"
    sdata.write(path)
    return {"sdata": read_zarr(path), "image_store": path}


def image_store_holding_the_slide(sdata, folder):
    path = folder / "data" / "slide.zarr"
    sdata.write(path)
    return {"sdata": read_zarr(path), "image_store": folder / "data"}


def spots_registered_twice_apart(sdata):
    # A second coordinate system both share, placing the spots 300 px further right on the H&E.
    shapes = sdata.shapes[SHAPES]
    set_transformation(sdata.images[IMAGE], get_transformation(sdata.images[IMAGE], CS), "aligned")
    shift = Sequence([get_transformation(shapes, CS), Translation([300.0, 0.0], axes=("x", "y"))])
    set_transformation(shapes, shift, "aligned")


def repeated_spot_ids(sdata):
    shapes = sdata.shapes[SHAPES]
    shapes.index = [shapes.index[0], *shapes.index[:-1]]


def table_without_region_column(sdata):
    table = sdata.tables["table"]
    del table.obs[table.uns["spatialdata_attrs"]["region_key"]]


def folder_of_other_files(sdata, folder):
    path = folder / "results"
    path.mkdir()
    (path / "notes.txt").write_text("the user's own notes")
    return {"image_store": path}


def _earlier_result(sdata, folder, key="first"):
    store = folder / "superres.zarr"
    sr.tl.superresolve(sdata, IMAGE, method="nearest", key_added=key, image_store=store, show_progress_bar=False)
    return {"image_store": store}


def earlier_result_in_store(sdata, folder):
    """The store holds images of key 'first' that another SpatialData reads."""
    return _earlier_result(deepcopy(sdata), folder)


def earlier_result_in_slide_and_store(sdata, folder):
    """The slide holds the result of key 'first', read lazily from the store."""
    return _earlier_result(sdata, folder)


def counts_only_in_a_layer(sdata):
    table = _table(sdata)
    table.layers["counts"] = table.X
    table.X = None


def transcripts(sdata):
    """Transcripts over the tissue, registered like the H&E (as ``spatialdata_io.xenium`` gives them)."""
    import pandas as pd
    from spatialdata.models import PointsModel

    rng = np.random.default_rng(0)
    n, (height, width) = 5000, sdata.images[IMAGE]["scale0"]["image"].shape[1:]
    frame = pd.DataFrame({"x": rng.uniform(0, width, n), "y": rng.uniform(0, height, n)})
    frame["gene"] = pd.Categorical(rng.choice(["g1", "g2", "g3"], n))
    sdata.points["tx"] = PointsModel.parse(frame, feature_key="gene", transformations=_tf(sdata))


def binned_transcripts(sdata):
    """``bin_transcripts(key_added="xen_bins")``: shapes 'xen_bins', the name `key_added="xen"` gives its bins."""
    transcripts(sdata)
    sr.pp.bin_transcripts(sdata, "tx", bin_size=60.0, min_qv=None, key_added="xen_bins")


def earlier_result_in_memory(sdata):
    sr.tl.superresolve(sdata, IMAGE, method="nearest", key_added="first", show_progress_bar=False)


def new_store(sdata, folder):
    return {"image_store": folder / "superres.zarr"}


def a_file_as_store(sdata, folder):
    path = folder / "results.txt"
    path.write_text("the user's own file")
    return {"image_store": path}


def two_other_tables(sdata):
    """Two tables and neither is "table": a slide with one other table is read without `table_key=`, not this."""
    sdata.tables["counts"] = sdata.tables.pop("table")
    sdata.tables["other"] = sdata.tables["counts"].copy()


# --- the table ---------------------------------------------------------------------------------------------------

#: (id, how to break the slide, keyword arguments, error, message fragment that says what to do)
CASES = [
    ("missing image", None, {"image_key": "nope"}, KeyError, r"Image 'nope' not found\. Available images: \["),
    ("missing table", None, {"table_key": "nope"}, KeyError, r"Table 'nope' not found\. Available tables: \['table'\]"),
    ("several tables, none the default", two_other_tables, {}, KeyError,
     r"Table 'table' not found\. Available tables: \['counts', 'other'\]\. Pass `table_key=` naming the table"),
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
     r"2 of which are not in table 'table': \['OTHER1', 'OTHER2'\]\. A diffusion model .*reads all its genes together: "
     r"train a model on genes both slides measure"),
    ("model at another scale", None, {"model": "two_genes", "scale": 2}, ValueError,
     r"The model was trained for scale 4 and `scale=2` was passed.*Leave `scale` out"),
    ("requested genes not in the model", None, {"model": "two_genes", "genes": ["gene_05"]}, ValueError,
     r"\['gene_05'\] are not among its 2 genes\. Pass `genes` from `model\.genes`"),
    ("truncated checkpoint", None, {"model": "truncated"}, ValueError,
     r"Could not read the model in .*Re-save or re-train"),
    ("not a model directory", None, {"model": "empty_dir"}, FileNotFoundError, r"is not a saved sr_spatial model"),
    ("unknown method", None, {"method": "magic"}, ValueError, r"Unknown method 'magic'; choose"),
    ("read-only zarr store for the images", None, {"image_store": zarr.storage.MemoryStore(read_only=True)},
     ValueError, r"read-only; open it writable or pass a folder path"),
    ("image store already holding the key", earlier_result_in_store, {"key_added": "first", "method": "nearest"},
     ValueError, r"already holds the images of 'first'\. Pass another `key_added`, or `overwrite=True`"),
    # 1. never delete what this package did not write
    ("image store is the slide's own zarr", slide_read_from_zarr, {"overwrite": True, "method": "nearest"},
     ValueError, r"is the slide's own zarr store .*Pass a new folder"),
    ("image store holding the slide", image_store_holding_the_slide, {"overwrite": True, "method": "nearest"},
     ValueError, r"`image_store` '.*data' holds the slide's own zarr store .*Pass a new folder outside the slide"),
    ("spots registered twice, apart", spots_registered_twice_apart, {"method": "nearest"}, ValueError,
     r"systems '\w+' and '\w+' that place the spots \d+ px apart on the image: .*`coordinate_system=`"),
    ("repeated spot ids", repeated_spot_ids, {"method": "nearest"}, ValueError,
     r"Shapes '\w+' repeat 1 index values \(e\.g\. \[.*\]\), so the table's rows cannot be matched"),
    ("table without its region column", table_without_region_column, {"method": "nearest"}, ValueError,
     r"Table 'table' names 'region' as its region column .* but `obs` has no such column"),
    ("image store holding other files", folder_of_other_files, {"overwrite": True, "method": "nearest"},
     ValueError, r"holds data sr_spatial did not write; it is never overwritten\. Pass a new or empty folder"),
    # 3. a failed rerun into a shared store leaves the earlier images (and the slide reading them) intact
    ("failed rerun into the image store", earlier_result_in_slide_and_store,
     {"key_added": "first", "overwrite": True, "model": "overflowing"}, ValueError,
     r"NaN or infinite values for \d+ bins of 2 genes .*nothing was written\. The model is broken"),
    ("image store not a store", None, {"image_store": 3}, TypeError, r"must be a folder path or a zarr store"),
    ("blocks too small", None, {"block_bins": 4}, ValueError,
     r"`block_bins` must be an integer of at least 16 \(or None"),
    ("client not a dask client", None, {"client": object()}, TypeError, r"must be a dask\.distributed Client"),
    # 2. overwrite replaces only what sr_spatial wrote
    ("key_added naming the H&E", None, {"key_added": IMAGE, "overwrite": True, "method": "nearest"}, ValueError,
     r"images\['tiny_full_image'\] not written by sr_spatial; `overwrite=True` replaces only the outputs"),
    ("key_added whose table holds the counts", counts_in_x_table,
     {"table_key": "x_table", "key_added": "x", "overwrite": True, "method": "nearest"}, ValueError,
     r"tables\['x_table'\] not written by sr_spatial.*Pass another `key_added=`"),
    # 4. an H&E that cannot be read as one
    ("all-NaN H&E", all_nan_image, {"image_key": "nan_image"}, ValueError,
     r"Image 'nan_image' holds no finite values.*fill its missing pixels"),
    ("NaN H&E under the spots", nan_over_the_tissue, {"image_key": "holed_image"}, ValueError,
     r"Image 'holed_image' has NaN pixels under \d+ of 81 spots.*Fill them"),
    # 5. non-finite training losses, weights and outputs are refused
    ("diverged training", None,
     {"method": "diffusion", "config": {**FAST, "learning_rate": 1e12, "encoder_steps": 2}}, FloatingPointError,
     r"Training diverged at step \d+ of 30: the loss became .*Lower the learning rate \(now 1e\+12\)"),
    ("saved model with a NaN weight", None, {"model": "nan_weight"}, ValueError,
     r"holds NaN or infinite weights \(\['blend'\]\), e.g. saved from a training run that diverged"),
    ("in-memory model with a NaN weight", None, {"model": "nan_in_memory"}, ValueError,
     r"The model holds NaN or infinite weights \(\['blend'\]\).*Retrain it"),
    ("model giving non-finite maps", None, {"model": "overflowing"}, ValueError,
     r"NaN or infinite values for \d+ bins of 2 genes .*retrain it or load an intact copy"),
    # 6. tissue flags stored as text
    ("in_tissue as text", text_tissue_flags, {}, ValueError, r"Found 1 spot\(s\) over the image"),
    ("in_tissue unreadable", unreadable_tissue_flags, {}, ValueError,
     r"`obs\['in_tissue'\]` holds \['maybe'\], which do not say whether a spot is in the tissue; use 1/0"),
    # 7. a saved model whose gene list no longer matches its weights
    ("saved model with reordered genes", None, {"model": "reordered_genes"}, ValueError,
     r"does not match its checksum: config\.json changed after saving \(fields \['genes'\]\)"),
    # 8. a device this machine lacks is refused whatever the model
    ("CUDA asked for, in-memory model", None, {"model": "in_memory", "device": "cuda"}, ValueError,
     r"Device 'cuda' was asked for but this PyTorch sees no CUDA GPU; use device='auto' or 'cpu'"),
    ("CUDA asked for, saved model", None, {"model": "two_genes", "device": "cuda"}, ValueError,
     r"Device 'cuda' was asked for but this PyTorch sees no CUDA GPU"),
    # 9. arguments that were misread silently
    ("genes as one name", None, {"genes": "no_such_gene"}, KeyError, r"not in the table: \['no_such_gene'\]"),
    ("train_steps zero", None, {"train_steps": 0}, ValueError,
     r"`train_steps` must be a positive integer or None, got 0\. Pass the optimiser steps"),
    ("sampling_steps negative", None, {"sampling_steps": -1}, ValueError,
     r"`sampling_steps` must be a positive integer or None, got -1\. Pass the DDIM steps"),
    ("sampling_steps above the timesteps", None, {"sampling_steps": 10**6, "method": "diffusion"}, ValueError,
     r"`sampling_steps=1000000` exceeds the model's \d+ diffusion timesteps; pass at most"),
    ("empty key_added", None, {"key_added": ""}, ValueError, r"`key_added` must be a non-empty name, got ''"),
    # 10. what failed late or deep inside, refused before the work
    ("spot radius 0", zero_radius, {}, ValueError, r"81 spots of shapes 'tiny' have a radius that is 0, negative"),
    ("negative spot radius", negative_radius, {}, ValueError, r"have a radius that is 0, negative or NaN"),
    ("NaN spot radius", nan_radius, {}, ValueError, r"1 spots of shapes 'tiny' have a radius that is 0, negative or"),
    ("spots at duplicated positions", duplicated_positions, {}, ValueError,
     r"2 spots of shapes 'tiny' share their position with another spot.*drop the duplicated spots"),
    ("table of zeros", zero_counts, {}, ValueError, r"holds only zeros for the 81 spots in the tissue"),
    ("table without genes", no_genes, {}, ValueError, r"has no genes \(its `var` is empty\)"),
    ("n_top_genes not an integer", None, {"n_top_genes": 2.5}, ValueError,
     r"`n_top_genes` must be a positive integer, got 2\.5"),
    ("negative seed", None, {"seed": -1}, ValueError, r"`seed` must be a non-negative integer, got -1"),
    ("seed not an integer", None, {"seed": 1.5}, ValueError, r"`seed` must be a non-negative integer, got 1\.5"),
    ("model with no genes asked for", None, {"model": "two_genes", "genes": []}, ValueError,
     r"`genes` is empty; pass at least one gene name, or `genes=None`"),
    ("saved model not trained", None, {"model": "untrained"}, ValueError,
     r"is not trained; train it with `sr_spatial\.tl\.train` and save it"),
    ("saved model with a text format_version", None, {"model": "text_format_version"}, ValueError,
     r"has `format_version` '2', not an integer.*Re-save the model"),
    ("saved model without a gene list", None, {"model": "no_gene_list"}, ValueError,
     r"lacks \['genes'\]; it is not a complete saved model"),
    ("scale too coarse to train on", None, {"method": "diffusion", "scale": 64}, ValueError,
     r"Pooling \d+ spots 64-fold leaves \d pseudo-spots, too few to learn from\. Use a smaller `scale`"),
    # 11. issue 26: what failed late, in another library, or replaced what the user owns
    ("key_added starting with '__'", None, {"key_added": "__tmp", "method": "nearest"}, ValueError,
     r"`key_added` '__tmp' is not a valid element name: names starting with '__' are reserved"),
    ("key_added '.' into an image store", new_store, {"key_added": ".", "method": "nearest"}, ValueError,
     r"`key_added` '\.' is not a valid element name: '\.' and '\.\.' name folders"),
    ("key_added naming the input bins", binned_transcripts,
     {"table_key": "xen_bins_table", "key_added": "xen", "overwrite": True, "method": "nearest"}, ValueError,
     r"shapes\['xen_bins'\] \(written by `bin_transcripts`\) not an output of an earlier `superresolve` call"),
    ("key_added naming the input bins, without overwrite", binned_transcripts,
     {"table_key": "xen_bins_table", "key_added": "xen", "method": "nearest"}, ValueError,
     r"The output names are taken: shapes\['xen_bins'\]\. Pass another `key_added=`\.$"),
    ("key_added naming an earlier result this call reads", earlier_result_in_memory,
     {"image_key": "first", "key_added": "first", "overwrite": True}, ValueError,
     r"would replace images\['first'\], which this call reads; an input is never replaced"),
    ("image store is a file", a_file_as_store, {"method": "nearest"}, ValueError,
     r"`image_store` '.*results\.txt' is a file\. Pass a new folder"),
    ("CUDA asked for as a torch.device", None, {"device": torch.device("cuda")}, ValueError,
     r"Device device\(type='cuda'\) was asked for but this PyTorch sees no CUDA GPU"),
    ("device not a name", None, {"device": 0}, TypeError, r"`device` must be 'auto', a device name"),
    ("counts only in a layer", counts_only_in_a_layer, {"method": "nearest"}, ValueError,
     r"Table 'table' has no `X`.*`table\.X = table\.layers\['counts'\]`"),
    ("image_key naming shapes", None, {"image_key": SHAPES}, ValueError,
     r"`image_key='tiny'` names an element of `sdata\.shapes`, not of `sdata\.images`\. Available images"),
    ("image_key not a name", None, {"image_key": 3}, TypeError, r"`image_key` must be the name of an image"),
    ("table_key naming an image", None, {"table_key": IMAGE}, ValueError,
     r"`table_key='tiny_full_image'` names an element of `sdata\.images`, not of `sdata\.tables`"),
    ("shapes_key naming transcripts", transcripts, {"shapes_key": "tx"}, ValueError,
     r"names an element of `sdata\.points`, not of `sdata\.shapes`\. Transcripts \(points\) are counted "
     r".*sr\.pp\.bin_transcripts"),
    ("coordinate_system not a name", None, {"coordinate_system": 3}, TypeError,
     r"`coordinate_system` must be a name"),
    ("overwrite not a boolean", None, {"overwrite": "no"}, TypeError, r"`overwrite` must be True or False, got 'no'"),
    ("inplace not a boolean", None, {"inplace": "no"}, TypeError, r"`inplace` must be True or False"),
    ("n_samples True", None, {"n_samples": True}, ValueError, r"`n_samples` must be a positive integer, got True"),
    ("n_samples zero", None, {"n_samples": 0}, ValueError, r"`n_samples` must be a positive integer, got 0"),
    ("quantiles not numbers", None, {"quantiles": ["0.05", "x"]}, ValueError,
     r"`quantiles` must be numbers strictly between 0 and 1"),
    ("image_um_per_px zero", None, {"image_um_per_px": 0}, ValueError,
     r"`image_um_per_px` must be a positive number of micrometres per pixel"),
    ("unknown stain", None, {"stain": "H&E"}, ValueError,
     r"`stain` must be one of \['auto', 'brightfield', 'fluorescence'\]"),
    ("genes listed twice", None, {"genes": ["gene_00", "gene_00"], "method": "nearest"}, ValueError,
     r"`genes` lists a gene more than once \(\['gene_00'\]\); pass each gene once"),
    ("genes listed twice, with a model", None, {"model": "two_genes", "genes": ["gene_00", "gene_00"]}, ValueError,
     r"`genes` lists a gene more than once"),
    ("configuration with a number as text", None, {"method": "diffusion", "config": {**FAST, "train_steps": "30"}},
     TypeError, r"Model configuration `train_steps` must be of type int, got '30'"),
    ("configuration with a negative learning rate", None,
     {"method": "diffusion", "config": {**FAST, "learning_rate": -1.0}}, ValueError,
     r"Model configuration `learning_rate` must be positive, got -1\.0"),
]  # fmt: skip


#: Saved models whose config.json was edited after saving.
CONFIG_EDITS = {
    "reordered_genes": lambda meta: meta["genes"].reverse(),
    "text_format_version": lambda meta: meta.update(format_version="2"),
    "no_gene_list": lambda meta: meta.pop("genes"),
}


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
    untrained = DiffST(["gene_00", "gene_01"], config=FAST, device="cpu", seed=0)
    untrained.save(root / "untrained")
    for name, edit in CONFIG_EDITS.items():
        two.save(root / name)
        meta = json.loads((root / name / "config.json").read_text())
        edit(meta)
        (root / name / "config.json").write_text(json.dumps(meta))
    broken = DiffST(["gene_00", "gene_01"], config=FAST, device="cpu", seed=0)
    broken.is_trained = True
    broken.network.blend.fill_(np.nan)
    broken.save(root / "nan_weight")
    names = ["other_genes", "two_genes", "truncated", "empty_dir", "untrained", "nan_weight", *CONFIG_EDITS]
    paths = {name: root / name for name in names}
    # Finite weights whose maps overflow float32: the failure comes only after the blocks are sampled.
    overflowing = DiffST(["gene_00", "gene_01"], config=FAST, device="cpu", seed=0)
    overflowing.is_trained = True
    overflowing.network.gene_std.fill_(1e30)
    overflowing.network.residual_scale.fill_(1e30)
    return {**paths, "in_memory": two, "overflowing": overflowing, "nan_in_memory": broken}


def _files(folder) -> dict[str, str]:
    """Every file and folder under ``folder`` with a digest of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "folder"
        for p in sorted(folder.rglob("*"))
    }


def test_the_table_is_large_enough():
    assert len(CASES) >= 15
    assert len({c[0] for c in CASES}) == len(CASES)


def test_the_docs_list_every_case():
    page = (Path(__file__).resolve().parents[2] / "docs" / "inputs.md").read_text()
    listed = re.findall(r"^\| (.+?) \| `\w+` \|", page.split("## Bad input")[1], flags=re.MULTILINE)
    assert sorted(listed) == sorted(c[0] for c in CASES)


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
    visium_sdata, model_paths, tmp_path, name, breaks, kwargs, error, message
):
    if str(kwargs.get("device")) == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    sdata = deepcopy(visium_sdata)
    kwargs = {"image_key": IMAGE, "config": FAST, "n_samples": 1, "show_progress_bar": False, **kwargs}
    if breaks is not None:
        takes_folder = len(inspect.signature(breaks).parameters) == 2
        changes = (breaks(sdata, tmp_path) if takes_folder else breaks(sdata)) or {}
        sdata = changes.pop("sdata", sdata)
        kwargs.update(changes)
    for key in ("model", "image_store"):
        if isinstance(kwargs.get(key), str):
            kwargs[key] = model_paths[kwargs[key]]
    image_key = kwargs.pop("image_key")
    models = model_paths["empty_dir"].parent
    before, disk = snapshot(sdata), (_files(tmp_path), _files(models))
    with pytest.raises(error, match=message):
        sr.tl.superresolve(sdata, image_key, **kwargs)
    assert snapshot(sdata) == before
    assert (_files(tmp_path), _files(models)) == disk


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


def test_keys_share_an_image_store_and_an_overwrite_replaces_only_its_own(visium_sdata, tmp_path):
    sdata = deepcopy(visium_sdata)
    store = tmp_path / "superres.zarr"

    def run(**kwargs):
        sr.tl.superresolve(sdata, IMAGE, image_store=store, show_progress_bar=False, **kwargs)

    def image(key):
        return np.asarray(sdata.images[key].values)

    run(method="nearest", key_added="a")
    nearest = image("a")
    run(method="bicubic", key_added="b")
    np.testing.assert_array_equal(image("a"), nearest)
    bicubic = image("b")
    run(method="bicubic", key_added="a", overwrite=True)
    np.testing.assert_array_equal(image("a"), bicubic)
    np.testing.assert_array_equal(image("b"), bicubic)
    root = zarr.open_group(store, mode="r")
    assert sorted(root.group_keys()) == ["a", "b"]
    assert list(root["a"].group_keys()) == ["2"]  # the replaced images are removed once the new ones are in place


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"seed": -1}, r"`seed` must be a non-negative integer"),
        ({"train_steps": 0}, r"`train_steps` must be a positive integer or None"),
        ({"genes": []}, r"`genes` is empty"),
        ({"scale": 64}, r"64-fold leaves \d pseudo-spots, too few to learn from"),
        ({"device": "cuda"}, r"sees no CUDA GPU"),
    ],
    ids=["seed", "train_steps", "genes", "scale", "device"],
)
def test_train_refuses_the_same_arguments_before_reading(visium_sdata, kwargs, message):
    if kwargs.get("device") == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    sdata = deepcopy(visium_sdata)
    before = snapshot(sdata)
    with pytest.raises(ValueError, match=message):
        sr.tl.train(sdata, IMAGE, config=FAST, show_progress_bar=False, **kwargs, method="diffusion")
    assert snapshot(sdata) == before


@pytest.mark.parametrize("function", ["superresolve", "train"])
@pytest.mark.parametrize(
    ("slide", "message"),
    [("table", r"got AnnData\. An AnnData holds the counts but not the H&E"), ("path", r"spatialdata\.read_zarr\(")],
)
def test_a_slide_that_is_not_a_spatialdata_is_refused(visium_sdata, tmp_path, function, slide, message):
    path = tmp_path / "slide.zarr"
    deepcopy(visium_sdata).write(path)
    given = deepcopy(visium_sdata).tables["table"] if slide == "table" else str(path)
    with pytest.raises(TypeError, match=r"`sdata` must be a SpatialData, .*" + message):
        getattr(sr.tl, function)(given, IMAGE, config=FAST, show_progress_bar=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"device": torch.device("cuda")}, ValueError, r"sees no CUDA GPU"),
        ({"checkpoint_dir": "file"}, ValueError, r"`checkpoint_dir` '.*file' is not a folder \('.*file' is a file\)"),
        ({"checkpoint_dir": "file/below"}, ValueError, r"is not a folder \('.*file' is a file\)"),
        ({"reference": "no"}, TypeError, r"`reference` must be True or False"),
        ({"stain": "dark"}, ValueError, r"`stain` must be one of"),
        ({"genes": ["gene_00", "gene_00"]}, ValueError, r"lists a gene more than once"),
    ],
    ids=["torch.device", "checkpoint_dir a file", "checkpoint_dir below a file", "reference", "stain", "genes"],
)
def test_train_refuses_before_training(visium_sdata, tmp_path, kwargs, error, message):
    """Each used to fail late: at the first checkpoint, after the encoder had trained, or inside PyTorch."""
    if str(kwargs.get("device")) == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "file").write_text("the user's own file")
    if "checkpoint_dir" in kwargs:
        kwargs = {**kwargs, "checkpoint_dir": tmp_path / kwargs["checkpoint_dir"]}
    sdata = deepcopy(visium_sdata)
    before, files = snapshot(sdata), _files(tmp_path)
    with pytest.raises(error, match=message):
        sr.tl.train(sdata, IMAGE, config=FAST, show_progress_bar=False, **kwargs, method="diffusion")
    assert snapshot(sdata) == before
    assert _files(tmp_path) == files


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("slide.zarr/checkpoints", r"lies in the zarr store '.*slide\.zarr'"),
        (".", r"`checkpoint_dir` '.*' holds the slide's zarr store"),
        ("link/ckpt", r"lies in the zarr store '.*slide\.zarr'"),  # inside it through a symbolic link
    ],
    ids=["inside the slide", "around the slide", "linked inside"],
)
def test_a_checkpoint_folder_on_the_slide_is_refused_before_training(visium_sdata, tmp_path, where, message):
    path = tmp_path / "slide.zarr"
    deepcopy(visium_sdata).write(path)
    (tmp_path / "link").symlink_to(path)
    sdata, files = read_zarr(path), _files(tmp_path)
    with pytest.raises(ValueError, match=message):
        sr.tl.train(sdata, IMAGE, config=FAST, checkpoint_dir=tmp_path / where, show_progress_bar=False)
    assert _files(tmp_path) == files


def test_overwrite_replaces_an_earlier_result_after_a_round_trip(visium_sdata, tmp_path):
    """The record of what sr_spatial wrote survives ``write`` / ``read_zarr``."""
    sdata = deepcopy(visium_sdata)
    sr.tl.superresolve(sdata, IMAGE, method="nearest", key_added="x", show_progress_bar=False)
    sdata.write(tmp_path / "slide.zarr")
    back = read_zarr(tmp_path / "slide.zarr")
    assert set(back.tables["x_table"].uns["sr_spatial"]["elements"]["images"]) == {"x", "x_std"}
    sr.tl.superresolve(back, IMAGE, method="bicubic", key_added="x", overwrite=True, show_progress_bar=False)
    assert back.tables["x_table"].uns["x"]["params"]["method"] == "bicubic"
