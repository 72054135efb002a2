"""Shared, session-scoped fixtures: the demo slide, its ST map and a tiny model trained once on it."""

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
    return sr_spatial.tl.train(demo_sdata, IMAGE_KEY, config=CONFIG, seed=SEED, show_progress_bar=False)
