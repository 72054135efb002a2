"""The image store: a call removes only what it created itself, and a replaced element never reads as NaN.

Runs on the demo slide. A failure in the middle of a call is a real ``KeyboardInterrupt`` (what Ctrl-C raises),
raised from a log handler at the moment the call starts computing its maps; what "another call meanwhile" does
is a second real call made at that moment.
"""

from __future__ import annotations

import copy
import logging
from contextlib import contextmanager

import numpy as np
import pytest
import zarr

import sr_spatial as sr

IMAGE = "demo_full_image"


class _Interrupt(logging.Handler):
    """Runs ``meanwhile`` and then raises ``KeyboardInterrupt`` when a call logs that it starts its maps."""

    def __init__(self, meanwhile) -> None:
        super().__init__(logging.INFO)
        self.meanwhile = meanwhile
        self.fired = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.fired and record.getMessage().startswith("Computing the"):
            self.fired = True
            self.meanwhile()
            raise KeyboardInterrupt


@contextmanager
def interrupted(meanwhile=lambda: None):
    logger = logging.getLogger("sr_spatial")
    handler, level = _Interrupt(meanwhile), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        with pytest.raises(KeyboardInterrupt):
            yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert handler.fired


def _nearest(sdata, key, store, **kwargs):
    sr.tl.superresolve(
        sdata, IMAGE, method="nearest", key_added=key, image_store=store, show_progress_bar=False, **kwargs
    )


@pytest.fixture(scope="module")
def expected(demo_sdata):
    sdata = copy.deepcopy(demo_sdata)
    sr.tl.superresolve(sdata, IMAGE, method="nearest", key_added="b", show_progress_bar=False)
    return np.asarray(sdata.images["b"].values)


def test_a_failed_call_keeps_what_another_call_and_the_user_wrote_meanwhile(demo_sdata, expected, tmp_path):
    store = tmp_path / "superres.zarr"
    other = copy.deepcopy(demo_sdata)

    def meanwhile():
        _nearest(other, "b", store)
        (store / "notes.txt").write_text("the user's own notes")

    with interrupted(meanwhile):
        _nearest(copy.deepcopy(demo_sdata), "a", store)
    assert (store / "notes.txt").read_text() == "the user's own notes"
    root = zarr.open_group(store, mode="r")
    assert sorted(root.group_keys()) == ["b"]  # the failed call's own group is gone, and nothing else
    np.testing.assert_array_equal(np.asarray(other.images["b"].values), expected)


def test_a_failed_call_removes_the_folder_it_made_and_only_that(demo_sdata, tmp_path):
    made = tmp_path / "new.zarr"
    with interrupted():
        _nearest(copy.deepcopy(demo_sdata), "a", made)
    assert not made.exists()
    given = tmp_path / "empty"
    given.mkdir()
    with interrupted():
        _nearest(copy.deepcopy(demo_sdata), "a", given)
    assert given.is_dir() and not list(given.iterdir())


def test_a_failed_call_keeps_the_earlier_images_of_its_key(demo_sdata, expected, tmp_path):
    store = tmp_path / "superres.zarr"
    sdata = copy.deepcopy(demo_sdata)
    _nearest(sdata, "b", store)
    with interrupted():
        _nearest(sdata, "b", store, overwrite=True)
    np.testing.assert_array_equal(np.asarray(sdata.images["b"].values), expected)
    assert list(zarr.open_group(store, mode="r")["b"].group_keys()) == ["1"]


def test_an_element_taken_before_an_overwrite_fails_loudly(demo_sdata, expected, tmp_path):
    store = tmp_path / "superres.zarr"
    sdata = copy.deepcopy(demo_sdata)
    _nearest(sdata, "b", store)
    earlier = sdata.images["b"]
    np.testing.assert_array_equal(np.asarray(earlier.values), expected)
    sr.tl.superresolve(
        sdata, IMAGE, method="bicubic", key_added="b", image_store=store, overwrite=True, show_progress_bar=False
    )
    assert np.isfinite(np.asarray(sdata.images["b"].values)).any()
    with pytest.raises(FileNotFoundError, match=r"were removed: a later `superresolve\(.*overwrite=True\)`"):
        np.asarray(earlier.values)
