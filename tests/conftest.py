"""Shared, session-scoped fixtures: the demo slide, its ST map, a tiny model, and tiny slides in 10x formats."""

from __future__ import annotations

import pytest

import sr_spatial

SEED = 0
IMAGE_KEY = "demo_full_image"
HIRES_KEY = "demo_hires_image"
SHAPES_KEY = "demo"
CS = "demo"
SCALE = 4
CONFIG = "tiny"


@pytest.fixture(scope="session")
def demo_sdata():
    """The demo slide. Read-only: tests that change it take ``copy.deepcopy(demo_sdata)``."""
    return sr_spatial.datasets.demo(seed=SEED)


@pytest.fixture(scope="session")
def st_map(demo_sdata):
    return sr_spatial.pp.build_st_map(demo_sdata, IMAGE_KEY, scale=SCALE)


@pytest.fixture(scope="session")
def tiny_model(demo_sdata):
    """A DiffST with the ``"tiny"`` configuration, trained once per session on the demo slide."""
    return sr_spatial.tl.train(
        demo_sdata, IMAGE_KEY, config=CONFIG, seed=SEED, show_progress_bar=False, method="diffusion"
    )


@pytest.fixture(scope="session")
def reader_tissue():
    """The synthetic tissue the tiny 10x outputs are drawn from (``tests/_readers.py``)."""
    from _readers import tissue

    return tissue(seed=SEED)


@pytest.fixture(scope="session")
def reader_dirs(reader_tissue, tmp_path_factory):
    """Tiny Visium, Visium HD and Xenium output folders, written once per session."""
    from _readers import write_visium, write_visium_hd, write_xenium

    root = tmp_path_factory.mktemp("readers")
    return {
        "visium": write_visium(root / "visium", reader_tissue),
        "visium_hd": write_visium_hd(root / "visium_hd", reader_tissue),
        "xenium": write_xenium(root / "xenium", reader_tissue),
    }


@pytest.fixture(scope="session")
def visium_sdata(reader_dirs):
    """``spatialdata_io.visium`` of the tiny Visium folder. Read-only: copy before changing."""
    from spatialdata_io import visium

    return visium(reader_dirs["visium"], fullres_image_file="tissue_image.tif")


@pytest.fixture(scope="session")
def visium_hd_sdata(reader_dirs):
    """``spatialdata_io.visium_hd`` of the tiny Visium HD folder (8 and 16 µm bins). Read-only."""
    from spatialdata_io import visium_hd

    return visium_hd(reader_dirs["visium_hd"], load_segmentations_only=False)


@pytest.fixture(scope="session")
def xenium_sdata(reader_dirs):
    """``spatialdata_io.xenium`` of the tiny Xenium folder, with the aligned H&E ``he_image``. Read-only."""
    from spatialdata_io import xenium

    return xenium(reader_dirs["xenium"], cells_boundaries=False, nucleus_boundaries=False)
