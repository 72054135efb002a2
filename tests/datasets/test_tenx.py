"""10x loaders: real pooch downloads from a local HTTP server, unpacking, caching and the spatialdata-io readers."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import tarfile
import threading
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pooch
import pytest
import spatialdata_io
import tifffile
from PIL import Image

import sr_spatial as sr
from sr_spatial.datasets import _tenx

SEED = 0
N_SPOTS_SIDE = 5
N_GENES = 12
PITCH_PX = 100.0


def _write_10x_h5(path: Path, counts: np.ndarray, barcodes: list[str], genes: list[str]) -> None:
    """Space Ranger's filtered_feature_bc_matrix.h5 (CSC matrix of features x barcodes)."""
    from scipy import sparse

    matrix = sparse.csc_matrix(counts.T)
    with h5py.File(path, "w") as f:
        g = f.create_group("matrix")
        g.create_dataset("barcodes", data=np.array(barcodes, dtype="S"))
        g.create_dataset("data", data=matrix.data.astype(np.int32))
        g.create_dataset("indices", data=matrix.indices.astype(np.int64))
        g.create_dataset("indptr", data=matrix.indptr.astype(np.int64))
        g.create_dataset("shape", data=np.array(matrix.shape, dtype=np.int32))
        feats = g.create_group("features")
        feats.create_dataset("id", data=np.array([f"ENSG{i:05d}" for i in range(len(genes))], dtype="S"))
        feats.create_dataset("name", data=np.array(genes, dtype="S"))
        feats.create_dataset("feature_type", data=np.array(["Gene Expression"] * len(genes), dtype="S"))
        feats.create_dataset("genome", data=np.array(["GRCh38"] * len(genes), dtype="S"))
        feats.create_dataset("_all_tag_keys", data=np.array(["genome"], dtype="S"))


def _tiny_visium_files(folder: Path, name: str) -> None:
    """The three published files of a Visium dataset, tiny: counts .h5, spatial/ as .tar.gz, full-res .tif."""
    rng = np.random.default_rng(SEED)
    rows, cols = np.meshgrid(np.arange(N_SPOTS_SIDE), np.arange(N_SPOTS_SIDE), indexing="ij")
    rows, cols = rows.ravel(), 2 * cols.ravel() + rows.ravel() % 2
    barcodes = [f"AAAC{r:03d}{c:03d}-1" for r, c in zip(rows, cols, strict=True)]
    px_col = 80 + cols * PITCH_PX / 2
    px_row = 80 + rows * PITCH_PX * np.sqrt(3) / 2
    counts = rng.poisson(5.0, size=(len(barcodes), N_GENES))
    genes = [f"GENE{i}" for i in range(N_GENES)]
    _write_10x_h5(folder / f"{name}_filtered_feature_bc_matrix.h5", counts, barcodes, genes)

    full = rng.integers(150, 255, size=(700, 700, 3), dtype=np.uint8)
    tifffile.imwrite(folder / f"{name}_image.tif", full)
    staging = folder / "staging" / "spatial"
    staging.mkdir(parents=True)
    positions = pd.DataFrame(
        {
            "barcode": barcodes,
            "in_tissue": 1,
            "array_row": rows,
            "array_col": cols,
            "pxl_row_in_fullres": px_row.round().astype(int),
            "pxl_col_in_fullres": px_col.round().astype(int),
        }
    )
    positions.to_csv(staging / "tissue_positions.csv", index=False)
    scalefactors = {
        "spot_diameter_fullres": 55.0,
        "fiducial_diameter_fullres": 80.0,
        "tissue_hires_scalef": 0.5,
        "tissue_lowres_scalef": 0.1,
    }
    (staging / "scalefactors_json.json").write_text(json.dumps(scalefactors))
    Image.fromarray(full[::2, ::2]).save(staging / "tissue_hires_image.png")
    Image.fromarray(full[::10, ::10]).save(staging / "tissue_lowres_image.png")
    with tarfile.open(folder / f"{name}_spatial.tar.gz", "w:gz") as tar:
        tar.add(staging, arcname="spatial")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A local HTTP server holding the tiny files, so pooch's real download path runs without the internet."""
    root = tmp_path_factory.mktemp("served")
    _tiny_visium_files(root, _tenx.VISIUM_BREAST_CANCER.name)
    handler = functools.partial(_QuietHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def _served(dataset: _tenx.TenxDataset, base: str, **changes) -> _tenx.TenxDataset:
    files = tuple(dataclasses.replace(f, url=f"{base}/{f.fname}", **changes) for f in dataset.files)
    return dataclasses.replace(dataset, files=files)


def test_visium_download_unpack_and_read(server, tmp_path):
    root, base = server
    dataset = _served(_tenx.VISIUM_BREAST_CANCER, base)
    sdata = _tenx.load(dataset, path=tmp_path, progressbar=False)

    folder = tmp_path / dataset.name
    assert (folder / "spatial" / "tissue_positions.csv").exists()
    name = dataset.name
    assert {f"{name}_full_image", f"{name}_hires_image", f"{name}_lowres_image"} <= set(sdata.images)
    table = sdata.tables["table"]
    assert table.shape == (N_SPOTS_SIDE**2, N_GENES)
    # The loaded slide is what the package reads: every spot lands on the full-resolution H&E at its pixel.
    st_map = sr.pp.build_st_map(sdata, f"{name}_full_image", genes=["GENE0", "GENE1"], scale=2)
    assert len(st_map.centres) == N_SPOTS_SIDE**2
    assert st_map.pitch == pytest.approx(PITCH_PX, rel=0.02)


def test_cached_files_are_not_downloaded_again(server, tmp_path):
    root, base = server
    dataset = _served(_tenx.VISIUM_BREAST_CANCER, base)
    _tenx.fetch(dataset, path=tmp_path, progressbar=False)
    # A server that no longer answers proves the second call reads the cache only.
    dead = _served(_tenx.VISIUM_BREAST_CANCER, "http://127.0.0.1:9")
    marker = tmp_path / dataset.name / f".{dataset.files[1].fname}.unpacked"
    stamp = marker.stat().st_mtime_ns
    sdata = _tenx.load(dead, path=tmp_path, progressbar=False)
    assert sdata.tables["table"].n_obs == N_SPOTS_SIDE**2
    assert marker.stat().st_mtime_ns == stamp


def test_interrupted_unpacking_is_redone(server, tmp_path):
    _, base = server
    dataset = _served(_tenx.VISIUM_BREAST_CANCER, base)
    _tenx.fetch(dataset, path=tmp_path, progressbar=False)
    folder = tmp_path / dataset.name
    (folder / f".{dataset.files[1].fname}.unpacked").unlink()
    (folder / "spatial" / "scalefactors_json.json").unlink()
    _tenx.fetch(dataset, path=tmp_path, progressbar=False)
    assert (folder / "spatial" / "scalefactors_json.json").exists()


def test_pinned_checksums_are_enforced(server, tmp_path):
    root, base = server
    dataset = _served(_tenx.VISIUM_BREAST_CANCER, base)
    good = tuple(
        dataclasses.replace(f, known_hash=f"sha256:{pooch.file_hash(str(root / f.fname))}") for f in dataset.files
    )
    _tenx.fetch(dataclasses.replace(dataset, files=good), path=tmp_path / "good", progressbar=False)
    bad = (dataclasses.replace(good[0], known_hash="sha256:" + "0" * 64), *good[1:])
    with pytest.raises(ValueError, match="(?i)hash"):
        _tenx.fetch(dataclasses.replace(dataset, files=bad), path=tmp_path / "bad", progressbar=False)


def test_public_loader_reads_a_filled_cache_offline(server, tmp_path):
    """The public function with its real 10x URLs: files already in the cache are used as they are."""
    root, _ = server
    folder = tmp_path / _tenx.VISIUM_BREAST_CANCER.name
    folder.mkdir()
    for remote in _tenx.VISIUM_BREAST_CANCER.files:
        (folder / remote.fname).write_bytes((root / remote.fname).read_bytes())
    sdata = sr.datasets.visium_breast_cancer(path=tmp_path, progressbar=False)
    assert sdata.tables["table"].n_obs == N_SPOTS_SIDE**2


def test_cache_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv(_tenx.CACHE_ENV, str(tmp_path / "env"))
    assert _tenx.cache_dir() == tmp_path / "env"
    assert _tenx.cache_dir(tmp_path / "arg") == tmp_path / "arg"
    monkeypatch.delenv(_tenx.CACHE_ENV)
    assert _tenx.cache_dir() == Path(pooch.os_cache("sr_spatial"))


@pytest.mark.parametrize(
    "dataset", [_tenx.VISIUM_BREAST_CANCER, _tenx.VISIUM_HD_COLON_CANCER, _tenx.XENIUM_BREAST_CANCER]
)
def test_dataset_specs_point_at_10x_and_a_real_reader(dataset):
    assert callable(getattr(spatialdata_io, dataset.reader))
    assert all(f.url.startswith("https://cf.10xgenomics.com/samples/") for f in dataset.files)
    assert all(f.fname.startswith(dataset.name) for f in dataset.files)
    assert any(f.fname.endswith((".tif", ".btf", ".ome.tif")) for f in dataset.files), "every dataset has an H&E"
