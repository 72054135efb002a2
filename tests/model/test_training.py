"""Training: interrupted runs resume from their checkpoint to the same model."""

from __future__ import annotations

import pytest
import torch

from sr_spatial.diffusion._config import resolve_config
from sr_spatial.diffusion._fit import output_scene, scale_transfer_scenes
from sr_spatial.model import DiffST

SEED = 0
CONFIG = resolve_config("tiny", encoder_steps=10, train_steps=8, n_pool_offsets=1)


@pytest.fixture(scope="module")
def pairs(st_map):
    scenes = scale_transfer_scenes(st_map, scale=4, px_per_bin=CONFIG.px_per_bin, n_offsets=1, seed=SEED)
    return scenes, output_scene(st_map, px_per_bin=CONFIG.px_per_bin)


def _train(st_map, pairs, **kwargs) -> DiffST:
    scenes, reference = pairs
    model = DiffST(st_map.genes, config=CONFIG, device="cpu", seed=kwargs.pop("seed", SEED))
    return model.train(scenes, reference=reference, show_progress_bar=False, **kwargs)


@pytest.fixture(scope="module")
def uninterrupted(st_map, pairs) -> DiffST:
    return _train(st_map, pairs)


def test_interrupted_training_resumes_to_the_same_model(st_map, pairs, uninterrupted, tmp_path):
    def stop_after_five_steps(step, losses):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _train(st_map, pairs, checkpoint_dir=tmp_path, checkpoint_every=3, callback=stop_after_five_steps)
    assert (tmp_path / "encoder.pt").is_file()
    assert torch.load(tmp_path / "training.pt", weights_only=True)["step"] == 3

    steps_seen = []
    resumed = _train(
        st_map, pairs, checkpoint_dir=tmp_path, checkpoint_every=3, callback=lambda step, _: steps_seen.append(step)
    )
    assert steps_seen == [3, 4, 5, 6, 7]  # goes on from the checkpoint, not from the start
    assert resumed.history == uninterrupted.history
    expected = uninterrupted.network.state_dict()
    for name, value in resumed.network.state_dict().items():
        assert torch.equal(value, expected[name]), name


def test_checkpoint_of_another_run_is_refused(st_map, pairs, tmp_path):
    _train(st_map, pairs, checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="other genes, configuration, seed or steps"):
        _train(st_map, pairs, checkpoint_dir=tmp_path, seed=SEED + 1)


def test_unreadable_checkpoint_says_what_to_do(st_map, pairs, tmp_path):
    (tmp_path / "encoder.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="delete it to start afresh"):
        _train(st_map, pairs, checkpoint_dir=tmp_path)


def test_full_model_round_trips_bit_for_bit(st_map, pairs, tmp_path):
    """Every module on (gene graph included): a saved and loaded model draws the same maps for a seed."""
    from dataclasses import replace

    from sr_spatial.model import ABLATIONS

    scenes, reference = pairs
    config = replace(CONFIG, **ABLATIONS["full"])
    model = DiffST(st_map.genes, config=config, device="cpu", seed=SEED)
    model.train(scenes, reference=reference, show_progress_bar=False)
    graph = model.network.unet.gene_graph.adjacency
    assert not torch.equal(graph, torch.eye(len(st_map.genes)))  # fitted from the spots' co-expression

    loaded = DiffST.load(model.save(tmp_path / "full"), device="cpu")
    torch.testing.assert_close(loaded.network.unet.gene_graph.adjacency, graph, rtol=0, atol=0)
    drawn = model.sample(reference, n_samples=2, steps=3, seed=SEED, show_progress_bar=False)
    again = loaded.sample(reference, n_samples=2, steps=3, seed=SEED, show_progress_bar=False)
    assert drawn.shape == (2, len(st_map.genes), *reference.shape)
    assert (drawn == again).all()
