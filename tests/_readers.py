"""Tiny slides written in the on-disk formats of 10x Genomics' Visium, Visium HD and Xenium outputs.

Each writer puts the minimum set of files that the matching :mod:`spatialdata_io` reader needs into a directory,
so tests read them with the real reader and get the reader's exact element names and transformations.
Everything is derived from one synthetic tissue (:func:`sr_spatial.datasets.demo`): the Visium slide is the
demo's own spots, the Visium HD bins and the Xenium transcripts are drawn from its hidden truth map, so the three
share genes and histology like serial sections of one tissue.

The writers follow the file layouts the readers of spatialdata-io 0.7.1 parse (``readers/visium.py``,
``readers/visium_hd.py``, ``readers/xenium.py``); sizes are tiny (hundreds of spots, images of a few hundred
pixels) so that tests run in seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from scipy import sparse
from skimage.transform import downscale_local_mean

__all__ = [
    "Tissue",
    "hd_bins",
    "tissue",
    "write_10x_h5",
    "write_visium",
    "write_visium_hd",
    "write_xenium",
    "xenium_transcripts",
]

HIRES_SCALEF = 0.5
LOWRES_SCALEF = 0.25
N_CONTROLS = 40
CONTROL_NAMES = ("NegControlProbe_00031", "BLANK_0006", "NegControlCodeword_0500")
LOW_QV_FRACTION = 0.05


@dataclass(frozen=True)
class Tissue:
    """A synthetic slide: H&E, spots with counts, and the expected expression on 5 µm pixels (the truth)."""

    image: np.ndarray  # (3, y, x) uint8
    microns_per_pixel: float
    genes: list[str]
    spot_px: np.ndarray  # (n, 2) x, y full-resolution pixels
    spot_ids: list[str]
    array_row: np.ndarray
    array_col: np.ndarray
    counts: sparse.csr_matrix
    spot_diameter_px: float
    truth: np.ndarray  # (genes, y, x) log1p(1e4 * rate share) on truth_um pixels
    truth_um: float


def tissue(*, seed: int = 0, n_rows: int = 12, n_cols: int = 11, n_genes: int = 12, microns_per_pixel: float = 2.5):
    """The synthetic tissue every writer draws from (about 80 Visium spots, a ~540 x 500 px H&E by default)."""
    import sr_spatial as sr

    sdata = sr.datasets.demo(
        seed=seed, n_rows=n_rows, n_cols=n_cols, n_genes=n_genes, microns_per_pixel=microns_per_pixel
    )
    table = sdata.tables["table"]
    meta = table.uns["demo"]
    full = sdata.images["demo_full_image"]["scale0"]["image"]
    return Tissue(
        image=np.asarray(full.values),
        microns_per_pixel=float(microns_per_pixel),
        genes=table.var_names.tolist(),
        spot_px=np.asarray(table.obsm["spatial"], dtype=float),
        spot_ids=table.obs_names.tolist(),
        array_row=table.obs["array_row"].to_numpy(),
        array_col=table.obs["array_col"].to_numpy(),
        counts=sparse.csr_matrix(table.X),
        spot_diameter_px=meta["spot_diameter_um"] / microns_per_pixel,
        truth=np.asarray(sdata.images["demo_truth"].values),
        truth_um=float(meta["truth_microns_per_pixel"]),
    )


# --- shared file formats ---------------------------------------------------------------------------------------


def write_10x_h5(path: Path, counts: sparse.spmatrix, barcodes, genes, *, library_id: str | None = None) -> None:
    """A Cell Ranger v3 feature-barcode matrix (``matrix/`` group, CSC by barcode) as ``scanpy.read_10x_h5`` reads."""
    csc = sparse.csr_matrix(counts)  # barcodes x features in CSR is features x barcodes in CSC
    with h5py.File(path, "w") as f:
        if library_id is not None:
            f.attrs["library_ids"] = np.array([library_id.encode()])
        f.attrs["software_version"] = "spaceranger-tiny"
        m = f.create_group("matrix")
        m.create_dataset("barcodes", data=np.array([str(b).encode() for b in barcodes]))
        m.create_dataset("data", data=csc.data.astype(np.int32))
        m.create_dataset("indices", data=csc.indices.astype(np.int64))
        m.create_dataset("indptr", data=csc.indptr.astype(np.int64))
        m.create_dataset("shape", data=np.array([len(genes), counts.shape[0]], dtype=np.int32))
        feats = m.create_group("features")
        feats.create_dataset("id", data=np.array([f"ENSG{i:08d}".encode() for i in range(len(genes))]))
        feats.create_dataset("name", data=np.array([g.encode() for g in genes]))
        feats.create_dataset("feature_type", data=np.array([b"Gene Expression"] * len(genes)))
        feats.create_dataset("genome", data=np.array([b"GRCh38"] * len(genes)))


def _png(path: Path, image: np.ndarray) -> None:
    import imageio.v3 as iio

    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, np.moveaxis(image, 0, -1))


def _downscale(image: np.ndarray, factor: float) -> np.ndarray:
    step = round(1 / factor)
    _, h, w = image.shape
    padded = np.pad(image, ((0, 0), (0, -h % step), (0, -w % step)), mode="edge")
    return np.round(downscale_local_mean(padded, (1, step, step))).astype(np.uint8)


def _tif(path: Path, image: np.ndarray, **kwargs) -> None:
    import tifffile

    tifffile.imwrite(path, image, **kwargs)


# --- Visium ----------------------------------------------------------------------------------------------------


def write_visium(
    path: Path,
    source: Tissue,
    *,
    dataset_id: str = "tiny",
    full_image: bool = True,
    positions_file: str = "tissue_positions.csv",
) -> Path:
    """Space Ranger ``outs/`` of a Visium slide: counts h5, tissue positions, scale factors, hires/lowres PNGs.

    Read with ``spatialdata_io.visium(path, fullres_image_file="tissue_image.tif")`` (``full_image``) or without
    the full image. ``positions_file`` ``"tissue_positions_list.csv"`` writes Space Ranger 1's header-less file.
    """
    path = Path(path)
    (path / "spatial").mkdir(parents=True, exist_ok=True)
    write_10x_h5(
        path / f"{dataset_id}_filtered_feature_bc_matrix.h5",
        source.counts,
        source.spot_ids,
        source.genes,
        library_id=dataset_id,
    )
    positions = pd.DataFrame(
        {
            "barcode": source.spot_ids,
            "in_tissue": 1,
            "array_row": source.array_row,
            "array_col": source.array_col,
            "pxl_row_in_fullres": np.round(source.spot_px[:, 1]).astype(int),
            "pxl_col_in_fullres": np.round(source.spot_px[:, 0]).astype(int),
        }
    )
    # A spot off the tissue, as Space Ranger lists every barcode of the slide; the filtered matrix leaves it out.
    off = pd.DataFrame([["OFFTISSUE-1", 0, 99, 99, 1, 1]], columns=positions.columns)
    positions = pd.concat([positions, off], ignore_index=True)
    positions.to_csv(path / "spatial" / positions_file, index=False, header=positions_file == "tissue_positions.csv")
    scalefactors = {
        "tissue_hires_scalef": HIRES_SCALEF,
        "tissue_lowres_scalef": LOWRES_SCALEF,
        "spot_diameter_fullres": source.spot_diameter_px,
        "fiducial_diameter_fullres": source.spot_diameter_px * 1.6,
    }
    (path / "spatial" / "scalefactors_json.json").write_text(json.dumps(scalefactors))
    _png(path / "spatial" / "tissue_hires_image.png", _downscale(source.image, HIRES_SCALEF))
    _png(path / "spatial" / "tissue_lowres_image.png", _downscale(source.image, LOWRES_SCALEF))
    if full_image:
        _tif(path / "tissue_image.tif", np.moveaxis(source.image, 0, -1), photometric="rgb")
    return path


# --- Visium HD -------------------------------------------------------------------------------------------------


def _truth_crop(source: Tissue, origin_um: tuple[float, float], size_um: float) -> tuple[np.ndarray, np.ndarray]:
    """Truth pixels (linear, normalised to 1e4 per pixel) of a square region and their centres in µm."""
    x0, y0 = (int(round(v / source.truth_um)) for v in origin_um)
    n = int(round(size_um / source.truth_um))
    crop = np.expm1(source.truth[:, y0 : y0 + n, x0 : x0 + n].astype(np.float64))
    yy, xx = np.indices(crop.shape[1:])
    centres = np.stack([(xx + x0 + 0.5) * source.truth_um, (yy + y0 + 0.5) * source.truth_um], axis=-1)
    return crop, centres


def hd_bins(
    source: Tissue, *, bin_um: float, origin_um: tuple[float, float], size_um: float, umis_per_um2: float, seed: int
):
    """Poisson counts of square bins over a square region, from the truth; bins without tissue are left out.

    Returns
    -------
    ``(centres_um, array_row, array_col, counts)`` for the bins in the tissue.
    """
    rng = np.random.default_rng(seed)
    crop, centres = _truth_crop(source, origin_um, size_um)
    n_bins = int(size_um // bin_um)
    idx = np.floor((centres - np.asarray(origin_um)) / bin_um).astype(int)
    inside = (idx < n_bins).all(axis=-1)
    flat = idx[..., 1] * n_bins + idx[..., 0]
    n_genes = crop.shape[0]
    sums = np.stack([np.bincount(flat[inside], crop[g][inside], minlength=n_bins**2) for g in range(n_genes)])
    n_px = np.bincount(flat[inside], minlength=n_bins**2)
    share = sums / np.maximum(sums.sum(axis=0), 1e-12)  # composition of each bin
    tissue_frac = (crop.sum(axis=0)[inside] > 0).astype(float)
    frac = np.bincount(flat[inside], tissue_frac, minlength=n_bins**2) / np.maximum(n_px, 1)
    depth = umis_per_um2 * bin_um**2 * frac
    counts = rng.poisson(share * depth).T
    keep = counts.sum(axis=1) > 0
    rows, cols = np.divmod(np.arange(n_bins**2), n_bins)
    centres_um = np.column_stack([(cols + 0.5) * bin_um + origin_um[0], (rows + 0.5) * bin_um + origin_um[1]])
    return centres_um[keep], rows[keep], cols[keep], sparse.csr_matrix(counts[keep])


def write_visium_hd(
    path: Path,
    source: Tissue,
    *,
    dataset_id: str = "tinyhd",
    bin_sizes_um: tuple[int, ...] = (8, 16),
    origin_um: tuple[float, float] = (300.0, 300.0),
    size_um: float = 480.0,
    umis_per_um2: float = 1.0,
    seed: int = 0,
) -> Path:
    """Space Ranger ``outs/`` of a Visium HD slide over a square crop of the tissue.

    Writes ``{dataset_id}_feature_slice.h5`` (metadata only), ``binned_outputs/square_XXXum/`` with the counts h5,
    ``spatial/tissue_positions.parquet`` and scale factors for every bin size, top-level ``spatial/`` PNGs and
    the microscope image ``microscope_image/tissue.tif`` (the crop of the H&E). Read with
    ``spatialdata_io.visium_hd(path, load_segmentations_only=False)``: tables ``square_XXXum``, shapes
    ``{dataset_id}_square_XXXum`` (squares), image ``{dataset_id}_full_image``.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    mpp = source.microns_per_pixel
    x0, y0 = (int(round(v / mpp)) for v in origin_um)
    n_px = int(round(size_um / mpp))
    image = np.ascontiguousarray(source.image[:, y0 : y0 + n_px, x0 : x0 + n_px])
    hd_layout = {"file_format": "1.0", "transform": np.eye(3).ravel().tolist()}
    with h5py.File(path / f"{dataset_id}_feature_slice.h5", "w") as f:
        f.attrs["metadata_json"] = json.dumps({"hd_layout_json": json.dumps(hd_layout)})
    scalefactors = {
        "tissue_hires_scalef": HIRES_SCALEF,
        "tissue_lowres_scalef": LOWRES_SCALEF,
        "microns_per_pixel": mpp,
    }
    (path / "spatial").mkdir(exist_ok=True)
    _png(path / "spatial" / "tissue_hires_image.png", _downscale(image, HIRES_SCALEF))
    _png(path / "spatial" / "tissue_lowres_image.png", _downscale(image, LOWRES_SCALEF))
    (path / "microscope_image").mkdir(exist_ok=True)
    _tif(path / "microscope_image" / "tissue.tif", np.moveaxis(image, 0, -1), photometric="rgb")
    for i, bin_um in enumerate(bin_sizes_um):
        folder = path / "binned_outputs" / f"square_{bin_um:03d}um"
        (folder / "spatial").mkdir(parents=True, exist_ok=True)
        centres_um, rows, cols, counts = hd_bins(
            source, bin_um=bin_um, origin_um=origin_um, size_um=size_um, umis_per_um2=umis_per_um2, seed=seed + i
        )
        barcodes = [f"s_{bin_um:03d}um_{r:05d}_{c:05d}-1" for r, c in zip(rows, cols, strict=True)]
        write_10x_h5(folder / "filtered_feature_bc_matrix.h5", counts, barcodes, source.genes)
        # Pixel positions in the cropped microscope image.
        px = (centres_um - np.asarray(origin_um)) / mpp
        pd.DataFrame(
            {
                "barcode": barcodes,
                "in_tissue": np.ones(len(rows), dtype=np.int32),
                "array_row": rows.astype(np.int32),
                "array_col": cols.astype(np.int32),
                "pxl_row_in_fullres": px[:, 1],
                "pxl_col_in_fullres": px[:, 0],
            }
        ).to_parquet(folder / "spatial" / "tissue_positions.parquet", index=False)
        bin_scalefactors = {**scalefactors, "bin_size_um": float(bin_um), "spot_diameter_fullres": bin_um / mpp}
        (folder / "spatial" / "scalefactors_json.json").write_text(json.dumps(bin_scalefactors))
    (path / "spatial" / "scalefactors_json.json").write_text(
        json.dumps({**scalefactors, "bin_size_um": 2.0, "spot_diameter_fullres": 2.0 / mpp})
    )
    return path


# --- Xenium ----------------------------------------------------------------------------------------------------


def xenium_transcripts(
    source: Tissue, *, origin_um: tuple[float, float], size_um: float, per_um2: float, seed: int
) -> pd.DataFrame:
    """Transcripts drawn from the truth over a square region, in µm relative to the region's origin."""
    rng = np.random.default_rng(seed)
    crop, centres = _truth_crop(source, origin_um, size_um)
    expected = crop / 1e4 * per_um2 * source.truth_um**2  # per truth pixel and gene
    n = rng.poisson(expected)
    gene, yy, xx = np.nonzero(n)
    reps = n[gene, yy, xx]
    gene, yy, xx = np.repeat(gene, reps), np.repeat(yy, reps), np.repeat(xx, reps)
    half = source.truth_um / 2
    x = centres[yy, xx, 0] - origin_um[0] + rng.uniform(-half, half, len(gene))
    y = centres[yy, xx, 1] - origin_um[1] + rng.uniform(-half, half, len(gene))
    names = np.asarray(source.genes, dtype=object)[gene]
    # As in real output: a few control probes, and low-quality calls (qv < 20) among the genes.
    controls = rng.choice(len(gene), size=min(N_CONTROLS, len(gene)), replace=False)
    names[controls] = [CONTROL_NAMES[i % len(CONTROL_NAMES)] for i in range(len(controls))]
    qv = np.where(rng.random(len(gene)) < LOW_QV_FRACTION, 10.0, 40.0)
    return pd.DataFrame(
        {
            "transcript_id": np.arange(len(gene), dtype=np.uint64),
            "cell_id": np.full(len(gene), -1, dtype=np.int64),
            "overlaps_nucleus": np.zeros(len(gene), dtype=np.uint8),
            "feature_name": names,
            "x_location": x.astype(np.float32),
            "y_location": y.astype(np.float32),
            "z_location": np.full(len(gene), 5.0, dtype=np.float32),
            "qv": qv.astype(np.float32),
        }
    )


def write_xenium(
    path: Path,
    source: Tissue,
    *,
    origin_um: tuple[float, float] = (250.0, 250.0),
    size_um: float = 600.0,
    pixel_size_um: float = 2.0,
    per_um2: float = 0.05,
    he_offset_px: tuple[float, float] = (12.0, 7.0),
    cell_um: float = 20.0,
    seed: int = 0,
) -> Path:
    """Xenium Onboard Analysis 1.x output over a square crop, with a post-Xenium H&E and its alignment file.

    Transcripts (µm) are drawn from the truth; morphology pixels are ``pixel_size_um`` (the real instrument uses
    0.2125 µm; a coarser pixel keeps the files tiny). Cells are the squares of a ``cell_um`` grid holding
    transcripts, so the reader's cell table, cell labels and morphology image exist as in real output.
    ``tiny_he_image.ome.tif`` is the tissue's H&E crop at its own resolution and ``tiny_he_imagealignment.csv``
    the 3x3 affine from H&E pixels to morphology pixels, as Xenium Explorer exports it.

    Read with ``spatialdata_io.xenium(path, cells_boundaries=False, nucleus_boundaries=False)``: points
    ``transcripts`` (µm, ``Scale(1 / pixel_size)`` to ``"global"``), image ``he_image`` (``Affine`` to
    ``"global"``), ``morphology_focus``, ``morphology_mip``, labels ``cell_labels``/``nucleus_labels``,
    table ``table``.
    """
    import zarr

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    specs = {"pixel_size": pixel_size_um, "analysis_sw_version": "xenium-1.0.2.0", "run_name": "tiny"}
    (path / "experiment.xenium").write_text(json.dumps(specs))
    tx = xenium_transcripts(source, origin_um=origin_um, size_um=size_um, per_um2=per_um2, seed=seed)

    # Cells: squares of a grid, numbered in order; transcripts in a cell get its id.
    n_cells_side = int(size_um // cell_um)
    ci = np.clip((tx["x_location"].to_numpy() // cell_um).astype(int), 0, n_cells_side - 1)
    cj = np.clip((tx["y_location"].to_numpy() // cell_um).astype(int), 0, n_cells_side - 1)
    flat = cj * n_cells_side + ci
    occupied = np.unique(flat)
    cell_number = np.full(n_cells_side**2, -1)
    cell_number[occupied] = np.arange(len(occupied))
    tx["cell_id"] = cell_number[flat].astype(np.int64) + 1
    tx.to_parquet(path / "transcripts.parquet", index=False)

    cell_ids = [f"{i + 1}" for i in range(len(occupied))]
    gene_index = pd.Index(source.genes).get_indexer(tx["feature_name"])
    is_gene = gene_index >= 0
    counts = sparse.coo_matrix(
        (np.ones(is_gene.sum()), (cell_number[flat][is_gene], gene_index[is_gene])),
        shape=(len(occupied), len(source.genes)),
    ).tocsr()
    write_10x_h5(path / "cell_feature_matrix.h5", counts, cell_ids, source.genes)
    rows, cols = np.divmod(occupied, n_cells_side)
    pd.DataFrame(
        {
            "cell_id": cell_ids,
            "x_centroid": (cols + 0.5) * cell_um,
            "y_centroid": (rows + 0.5) * cell_um,
            "transcript_counts": np.asarray(counts.sum(axis=1)).ravel().astype(np.int64),
            "cell_area": np.full(len(occupied), cell_um**2),
            "nucleus_area": np.full(len(occupied), cell_um**2 / 4),
        }
    ).to_parquet(path / "cells.parquet", index=False)

    n_px = int(round(size_um / pixel_size_um))
    labels = np.zeros((n_px, n_px), dtype=np.uint32)
    py, px = np.indices(labels.shape)
    grid_cell = (py * pixel_size_um // cell_um).astype(int) * n_cells_side + (px * pixel_size_um // cell_um).astype(int)
    valid = (py * pixel_size_um < n_cells_side * cell_um) & (px * pixel_size_um < n_cells_side * cell_um)
    labels[valid] = (cell_number[grid_cell[valid]] + 1).astype(np.uint32)
    with zarr.storage.ZipStore(path / "cells.zarr.zip", mode="w") as store:
        group = zarr.open_group(store, mode="w")
        masks = group.create_group("masks")
        masks.create_array("0", data=labels)
        masks.create_array("1", data=labels)

    dapi = (labels > 0).astype(np.uint16) * 1000
    _tif(path / "morphology_focus.ome.tif", dapi[None])
    _tif(path / "morphology_mip.ome.tif", dapi[None])

    # H&E: the tissue's image over the region at its own pixel size, shifted by a few pixels of margin.
    mpp = source.microns_per_pixel
    ox, oy = he_offset_px
    x0 = int(round(origin_um[0] / mpp - ox))
    y0 = int(round(origin_um[1] / mpp - oy))
    n_he = int(round(size_um / mpp + max(ox, oy)))
    he = np.ascontiguousarray(source.image[:, max(y0, 0) : y0 + n_he, max(x0, 0) : x0 + n_he])
    _tif(path / "tiny_he_image.ome.tif", np.moveaxis(he, 0, -1)[None], photometric="rgb")
    # H&E pixel (u, v) -> µm relative to the region: (u * mpp + x0 * mpp - origin) -> morphology pixel: / pixel_size.
    s = mpp / pixel_size_um
    alignment = np.array(
        [
            [s, 0.0, (x0 * mpp - origin_um[0]) / pixel_size_um],
            [0.0, s, (y0 * mpp - origin_um[1]) / pixel_size_um],
            [0.0, 0.0, 1.0],
        ]
    )
    pd.DataFrame(alignment).to_csv(path / "tiny_he_imagealignment.csv", header=False, index=False)
    return path
