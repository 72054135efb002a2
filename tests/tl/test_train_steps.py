"""Every training step count follows the user's `train_steps`."""

from __future__ import annotations

import sr_spatial as sr
from sr_spatial.diffusion._fit import config_for_steps
from sr_spatial.model import PRESETS


def test_train_steps_shortens_the_encoder_in_proportion():
    large = PRESETS["large"]  # 2000 encoder, 4000 denoiser steps
    shorter = config_for_steps(large, 1000)
    assert (shorter.encoder_steps, shorter.train_steps) == (500, 1000)
    assert config_for_steps(PRESETS["tiny"], 40).encoder_steps == 40
    assert config_for_steps(PRESETS["tiny"], 1).encoder_steps == 1
    assert config_for_steps(large, None) is large


def test_a_trained_model_ran_the_steps_asked_for():
    train_steps = 5
    sdata = sr.datasets.demo(n_rows=10, n_cols=10, n_genes=8)
    model = sr.tl.train(sdata, "demo_full_image", config="tiny", train_steps=train_steps, show_progress_bar=False)
    assert len(model.history["encoder"]) == train_steps
    assert len(model.history["denoiser"]) == train_steps
    # The saved configuration says what was run.
    assert (model.config.encoder_steps, model.config.train_steps) == (train_steps, train_steps)
