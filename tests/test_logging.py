from __future__ import annotations

import logging
import time

import pytest

import sr_spatial as sr
from sr_spatial._logging import ETA
from sr_spatial.tl._train import output_scene


@pytest.fixture
def verbosity():
    before = sr.settings.verbosity
    yield
    sr.settings.verbosity = before


@pytest.mark.parametrize(("value", "level"), [(0, logging.ERROR), ("warning", logging.WARNING), ("hint", 15), (4, 10)])
def test_verbosity_follows_scanpy_levels(verbosity, value, level):
    sr.settings.verbosity = value
    assert logging.getLogger("sr_spatial").level == level
    assert sr.settings.verbosity in range(5)


@pytest.mark.parametrize("value", [5, -1, "loud", True])
def test_verbosity_rejects_unknown_levels(verbosity, value):
    with pytest.raises(ValueError, match="must be 0-4"):
        sr.settings.verbosity = value


def test_eta_extrapolates_from_timed_steps(verbosity, caplog):
    sr.settings.verbosity = "info"
    eta = ETA("Looping", 20, warmup=3)
    with caplog.at_level(logging.INFO, logger="sr_spatial"):
        for _ in range(20):
            time.sleep(0.01)
            eta.step()
    messages = [r.getMessage() for r in caplog.records if "Looping" in r.getMessage()]
    assert len(messages) == 1  # logged once, not every step
    assert messages[0].startswith("Looping: 20 steps, ETA ~")
    # 16 steps of >= 10 ms remain after the first and the three timed ones.
    assert 0.16 <= eta.seconds < 5


def test_sampling_logs_its_eta_unless_quiet(verbosity, caplog, tiny_model, st_map):
    scene = output_scene(st_map, px_per_bin=tiny_model.config.px_per_bin)
    with caplog.at_level(logging.INFO, logger="sr_spatial"):
        tiny_model.sample(scene, n_samples=1, steps=8, show_progress_bar=False)
    assert any(r.getMessage().startswith("Sampling 1 draws: 8 steps, ETA ~") for r in caplog.records)
    caplog.clear()
    sr.settings.verbosity = "warning"
    tiny_model.sample(scene, n_samples=1, steps=8, show_progress_bar=False)
    assert not [r for r in caplog.records if r.levelno < logging.WARNING]
