"""Public 10x Genomics slides with H&E: downloaded once with pooch into a cache, read with spatialdata-io."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sr_spatial._docs import doc_params

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = ["cache_dir", "visium_breast_cancer", "visium_hd_colon_cancer", "xenium_breast_cancer"]

CACHE_ENV = "SR_SPATIAL_CACHE"

_VISIUM = "https://cf.10xgenomics.com/samples/spatial-exp/1.3.0/Visium_FFPE_Human_Breast_Cancer"
_HD = "https://cf.10xgenomics.com/samples/spatial-exp/3.0.0/Visium_HD_Human_Colon_Cancer"
_XENIUM = "https://cf.10xgenomics.com/samples/xenium/1.0.1/Xenium_FFPE_Human_Breast_Cancer_Rep1"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset: where it lives, its checksum, and how to unpack it.

    ``known_hash`` is pooch's ``"<algorithm>:<hex>"`` (or ``None`` to skip verification); ``unpack`` extracts an
    archive next to it once; ``subdir`` is the folder inside the dataset's cache folder that receives the file.
    """

    url: str
    known_hash: str | None = None
    unpack: bool = False
    subdir: str = ""

    @property
    def fname(self) -> str:
        return self.url.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class TenxDataset:
    """A 10x dataset: its files and the :mod:`spatialdata_io` reader (with arguments) that reads them."""

    name: str
    reader: Literal["visium", "visium_hd", "xenium"]
    files: tuple[RemoteFile, ...]
    page: str
    read_subdir: str = ""
    reader_kwargs: dict = field(default_factory=dict)


# Checksums: none is pinned, so pooch only checks that a download completed. The machine this was written on has
# no internet access, 10x's dataset pages list no checksum we could read, and a search of public code and pages
# (2026-11) found no one pinning a sha256 or md5 of these exact files; a hash without a source we can name is not
# pinned. To pin one: download once from a trusted network, run ``pooch.file_hash(path)`` (sha256) and set
# ``known_hash="sha256:<hex>"`` on the file; pooch then refuses a changed or corrupted download.
VISIUM_BREAST_CANCER = TenxDataset(
    name="Visium_FFPE_Human_Breast_Cancer",
    reader="visium",
    files=(
        RemoteFile(f"{_VISIUM}/Visium_FFPE_Human_Breast_Cancer_filtered_feature_bc_matrix.h5"),
        RemoteFile(f"{_VISIUM}/Visium_FFPE_Human_Breast_Cancer_spatial.tar.gz", unpack=True),
        RemoteFile(f"{_VISIUM}/Visium_FFPE_Human_Breast_Cancer_image.tif"),
    ),
    page=(
        "https://www.10xgenomics.com/datasets/"
        "human-breast-cancer-ductal-carcinoma-in-situ-invasive-carcinoma-ffpe-1-standard-1-3-0"
    ),
    reader_kwargs={
        "dataset_id": "Visium_FFPE_Human_Breast_Cancer",
        "fullres_image_file": "Visium_FFPE_Human_Breast_Cancer_image.tif",
    },
)
VISIUM_HD_COLON_CANCER = TenxDataset(
    name="Visium_HD_Human_Colon_Cancer",
    reader="visium_hd",
    files=(
        RemoteFile(f"{_HD}/Visium_HD_Human_Colon_Cancer_binned_outputs.tar.gz", unpack=True),
        RemoteFile(f"{_HD}/Visium_HD_Human_Colon_Cancer_spatial.tar.gz", unpack=True),
        RemoteFile(f"{_HD}/Visium_HD_Human_Colon_Cancer_feature_slice.h5"),
        RemoteFile(f"{_HD}/Visium_HD_Human_Colon_Cancer_tissue_image.btf"),
    ),
    page="https://www.10xgenomics.com/datasets/visium-hd-cytassist-gene-expression-libraries-of-human-crc",
    reader_kwargs={
        "dataset_id": "Visium_HD_Human_Colon_Cancer",
        "fullres_image_file": "Visium_HD_Human_Colon_Cancer_tissue_image.btf",
    },
)
XENIUM_BREAST_CANCER = TenxDataset(
    name="Xenium_FFPE_Human_Breast_Cancer_Rep1",
    reader="xenium",
    files=(
        RemoteFile(f"{_XENIUM}/Xenium_FFPE_Human_Breast_Cancer_Rep1_outs.zip", unpack=True),
        # spatialdata-io finds the post-Xenium H&E and its alignment by their suffixes inside the outs folder.
        RemoteFile(f"{_XENIUM}/Xenium_FFPE_Human_Breast_Cancer_Rep1_he_image.ome.tif", subdir="outs"),
        RemoteFile(f"{_XENIUM}/Xenium_FFPE_Human_Breast_Cancer_Rep1_he_imagealignment.csv", subdir="outs"),
    ),
    page="https://www.10xgenomics.com/products/xenium-in-situ/preview-dataset-human-breast",
    read_subdir="outs",
)


def cache_dir(path: str | os.PathLike | None = None) -> Path:
    """Folder where datasets are kept: ``path``, else ``$SR_SPATIAL_CACHE``, else pooch's OS cache for sr_spatial."""
    import pooch

    if path is not None:
        return Path(path)
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path(pooch.os_cache("sr_spatial"))


def _unpack_once(fname: str, action: str, _pooch) -> str:
    """Pooch processor: extract the archive into its own folder on download, or if an extraction never finished.

    Not :class:`pooch.Untar` / :class:`pooch.Unzip`: they redo an extraction only when a member is missing, so an
    extraction interrupted in the middle of a file is taken as done, and on Python < 3.12 ``Untar`` extracts
    without the ``"data"`` filter; they also extract into a folder of their own rather than beside the archive,
    where the spatialdata-io readers look.
    """
    archive = Path(fname)
    marker = archive.with_name(f".{archive.name}.unpacked")
    if action in ("download", "update") or not marker.exists():
        # The "data" filter refuses absolute paths and links out of the folder that a malicious archive could hold.
        shutil.unpack_archive(archive, archive.parent, filter="data")
        marker.touch()
    return fname


def fetch(dataset: TenxDataset, *, path: str | os.PathLike | None = None, progressbar: bool = True) -> Path:
    """Download (once) every file of ``dataset`` into ``<cache>/<dataset.name>``; returns the folder to read."""
    import pooch

    folder = cache_dir(path) / dataset.name
    for remote in dataset.files:
        pooch.retrieve(
            remote.url,
            known_hash=remote.known_hash,
            fname=remote.fname,
            path=folder / remote.subdir,
            processor=_unpack_once if remote.unpack else None,
            progressbar=progressbar,
        )
    return folder / dataset.read_subdir


def load(
    dataset: TenxDataset, *, path: str | os.PathLike | None = None, progressbar: bool = True, **reader_kwargs
) -> SpatialData:
    """Fetch ``dataset`` and read it with its :mod:`spatialdata_io` reader (``reader_kwargs`` override defaults)."""
    import spatialdata_io

    folder = fetch(dataset, path=path, progressbar=progressbar)
    kwargs = {**dataset.reader_kwargs, **reader_kwargs}
    if "fullres_image_file" in kwargs and kwargs["fullres_image_file"] is not None:
        kwargs["fullres_image_file"] = folder / kwargs["fullres_image_file"]
    return getattr(spatialdata_io, dataset.reader)(folder, **kwargs)


_doc_cache = """\
path
    Cache folder; default ``$SR_SPATIAL_CACHE``, else :func:`pooch.os_cache` ``("sr_spatial")``. Files are
    downloaded only if missing, and archives are unpacked once.
progressbar
    Show download progress bars."""


@doc_params(doc_cache=_doc_cache)
def visium_breast_cancer(*, path: str | os.PathLike | None = None, progressbar: bool = True) -> SpatialData:
    """10x Visium FFPE human breast cancer (ductal carcinoma in situ, invasive carcinoma) with its full-resolution H&E.

    Downloads from ``https://cf.10xgenomics.com/samples/spatial-exp/1.3.0/Visium_FFPE_Human_Breast_Cancer/`` the
    files ``*_filtered_feature_bc_matrix.h5``, ``*_spatial.tar.gz`` and ``*_image.tif`` (about 0.5 GB), and reads
    them with :func:`spatialdata_io.visium`. Dataset page: :data:`VISIUM_BREAST_CANCER` ``.page``. No checksum is
    pinned (10x publishes none we could verify here); pooch only checks that downloads complete.

    Parameters
    ----------
    {doc_cache}

    Returns
    -------
    As :func:`spatialdata_io.visium` builds it, dataset id ``"Visium_FFPE_Human_Breast_Cancer"``: images
    ``{id}_full_image``, ``{id}_hires_image``, ``{id}_lowres_image``; shapes ``{id}`` (spot circles);
    table ``"table"``. Super-resolve with ``image_key="Visium_FFPE_Human_Breast_Cancer_full_image"``.
    """
    return load(VISIUM_BREAST_CANCER, path=path, progressbar=progressbar)


@doc_params(doc_cache=_doc_cache)
def visium_hd_colon_cancer(
    *, path: str | os.PathLike | None = None, bin_size: int | list[int] = (8, 16), progressbar: bool = True
) -> SpatialData:
    """10x Visium HD human colorectal cancer (CytAssist, FFPE) with its full-resolution H&E.

    Downloads from ``https://cf.10xgenomics.com/samples/spatial-exp/3.0.0/Visium_HD_Human_Colon_Cancer/`` the
    files ``*_binned_outputs.tar.gz`` (all bin sizes), ``*_spatial.tar.gz``, ``*_feature_slice.h5`` and
    ``*_tissue_image.btf`` (several GB), and reads them with :func:`spatialdata_io.visium_hd`. No checksum is
    pinned (see :func:`visium_breast_cancer`).

    Parameters
    ----------
    {doc_cache}
    bin_size
        Bin sizes in µm to read (2, 8, 16); the 2 µm bins need tens of GB of memory.

    Returns
    -------
    As :func:`spatialdata_io.visium_hd` builds it: tables ``"square_008um"``, ``"square_016um"``, shapes
    ``"Visium_HD_Human_Colon_Cancer_square_008um"`` ..., images including ``*_full_image``.
    """
    sizes = [bin_size] if isinstance(bin_size, int) else list(bin_size)
    return load(VISIUM_HD_COLON_CANCER, path=path, progressbar=progressbar, bin_size=sizes)


@doc_params(doc_cache=_doc_cache)
def xenium_breast_cancer(
    *, path: str | os.PathLike | None = None, transcripts: bool = True, progressbar: bool = True
) -> SpatialData:
    """10x Xenium FFPE human breast cancer (Janesick et al. 2023, sample 1, replicate 1) with its registered H&E.

    Downloads from ``https://cf.10xgenomics.com/samples/xenium/1.0.1/Xenium_FFPE_Human_Breast_Cancer_Rep1/`` the
    output bundle ``*_outs.zip`` (about 10 GB), the post-Xenium H&E ``*_he_image.ome.tif`` and its
    ``*_he_imagealignment.csv`` (placed in ``outs/``, where spatialdata-io looks for them), and reads them with
    :func:`spatialdata_io.xenium`. No checksum is pinned (see :func:`visium_breast_cancer`).

    Parameters
    ----------
    {doc_cache}
    transcripts
        Read the transcript points (tens of millions; needed to aggregate Visium-like spots).

    Returns
    -------
    As :func:`spatialdata_io.xenium` builds it: images ``"morphology_focus"`` and ``"he_image"`` (the H&E,
    registered through the alignment), points ``"transcripts"``, table ``"table"`` (cells), cell shapes.
    """
    return load(XENIUM_BREAST_CANCER, path=path, progressbar=progressbar, transcripts=transcripts)
