"""The same seed gives the same result on the CPU, training included; another seed gives another."""

from __future__ import annotations

import numpy as np

import sr_spatial as sr
from sr_spatial.model import PRESETS

#: The "tiny" network with fewer optimiser steps, so that three full runs (training + sampling) take seconds.
FAST = {**PRESETS["tiny"].to_dict(), "encoder_steps": 10, "train_steps": 10, "n_pool_offsets": 1}
IMAGE = "tiny_hires_image"


def _run(sdata, seed: int) -> tuple[np.ndarray, np.ndarray]:
    out = sr.tl.superresolve(
        sdata,
        IMAGE,
        method="diffusion",
        config=FAST,
        seed=seed,
        n_samples=2,
        device="cpu",
        inplace=False,
        show_progress_bar=False,
    )
    key = f"{IMAGE}_superres"
    return np.asarray(out.images[key].values), np.asarray(out.images[f"{key}_std"].values)


def test_same_seed_same_output_on_cpu(visium_sdata):
    first, again, other = _run(visium_sdata, 0), _run(visium_sdata, 0), _run(visium_sdata, 1)
    np.testing.assert_array_equal(first[0], again[0])
    np.testing.assert_array_equal(first[1], again[1])
    # equal_nan: both are NaN outside the tissue, which must not make them differ.
    assert not np.array_equal(first[0], other[0], equal_nan=True)
    assert not np.array_equal(first[1], other[1], equal_nan=True)
