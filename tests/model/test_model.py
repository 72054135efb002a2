"""The diffusion model: network shapes and gradients, schedule and sampler, configuration, save and load."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch

from sr_spatial.core._pixel_encoder import HISTOLOGY_INPUTS, HistologyEncoder
from sr_spatial.diffusion._config import resolve_config
from sr_spatial.diffusion._fit import output_scene
from sr_spatial.diffusion._schedule import Schedule
from sr_spatial.diffusion.module._network import DiffSTNetwork
from sr_spatial.diffusion.nn._denoiser import UNet
from sr_spatial.model import PRESETS, DiffST, ModelConfig, Scene, resolve_device

SEED = 0
# An odd-sized window of the demo's output grid, in the tissue: sampling it must pad to the UNet's multiple.
ROWS, COLS = slice(27, 52), slice(27, 54)


@pytest.fixture(scope="module")
def scene(st_map, tiny_model) -> Scene:
    """A 25 x 27 bin window of the demo slide at the model's resolution."""
    full = output_scene(st_map, px_per_bin=tiny_model.config.px_per_bin)
    k = full.px_per_bin
    window = Scene(
        nearest=full.nearest[:, ROWS, COLS],
        smooth=full.smooth[:, ROWS, COLS],
        mask=full.mask[ROWS, COLS],
        histology=full.histology[:, ROWS.start * k : ROWS.stop * k, COLS.start * k : COLS.stop * k],
        px_per_bin=k,
    )
    assert window.mask.mean() > 0.9
    return window


@pytest.fixture(scope="module")
def drawn(tiny_model, scene) -> np.ndarray:
    """Two samples of the tiny model for the window, seed 0."""
    return tiny_model.sample(scene, n_samples=2, seed=SEED, show_progress_bar=False)


@pytest.fixture(scope="module")
def saved(tiny_model, tmp_path_factory):
    return tiny_model.save(tmp_path_factory.mktemp("models") / "tiny")


# --- networks ------------------------------------------------------------------------------------------------


def test_unet_shape_and_zero_start():
    torch.manual_seed(SEED)
    net = UNet(in_channels=7, out_channels=3, channels=8, channel_mult=(1, 2))
    x = torch.randn(2, 7, 16, 12)
    out = net(x, torch.rand(2))
    assert out.shape == (2, 3, 16, 12)
    # The output layer starts at zero: an untrained model predicts no residual.
    assert torch.count_nonzero(out) == 0


@pytest.mark.parametrize("channel_mult", [(1, 2), (1, 2, 2)])
def test_unet_gradients_reach_every_parameter(channel_mult):
    torch.manual_seed(SEED)
    net = UNet(in_channels=5, out_channels=4, channels=8, channel_mult=channel_mult)
    x, t = torch.randn(3, 5, 16, 16), torch.rand(3)
    target = torch.randn(3, 4, 16, 16)

    # From the zero start only the output layer learns at first.
    (net(x, t) - target).square().mean().backward()
    assert net.out[-1].weight.grad.abs().sum() > 0
    assert net.stem.weight.grad.abs().sum() == 0

    # Once the output layer is non-zero, every parameter gets a finite, non-zero gradient.
    net.zero_grad(set_to_none=True)
    torch.nn.init.normal_(net.out[-1].weight, std=0.1)
    out = net(x, t)
    assert out.shape == (3, 4, 16, 16)
    (out - target).square().mean().backward()
    for name, p in net.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_histology_encoder_bin_maps():
    torch.manual_seed(SEED)
    k, n_genes = 8, 3
    encoder = HistologyEncoder(width=4, n_genes=n_genes)
    image = torch.randn(2, HISTOLOGY_INPUTS, 4 * k, 6 * k)
    with torch.no_grad():
        per_pixel = encoder(image)
        binned, cells = encoder.bin_maps(image, k)
    assert per_pixel.shape == (2, n_genes, 4 * k, 6 * k)
    assert binned.shape == (2, n_genes, 4, 6)
    assert cells is None
    # Each bin is log1p of the mean rate over its k x k pixels.
    block = per_pixel[1, :, k : 2 * k, 2 * k : 3 * k].exp().mean(dim=(-2, -1))
    torch.testing.assert_close(binned[1, :, 1, 2], torch.log1p(block), rtol=1e-5, atol=1e-6)


# --- schedule and sampler ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("prediction", ["v", "epsilon"])
def test_schedule_round_trip(prediction):
    schedule = Schedule(1000, prediction=prediction)
    generator = torch.Generator().manual_seed(SEED)
    x0 = torch.randn(8, 3, 5, 5, generator=generator)
    noise = torch.randn(8, 3, 5, 5, generator=generator)
    t = torch.tensor([0, 1, 10, 100, 400, 700, 900, 999])
    x_t = schedule.noisy(x0, t, noise)
    target = schedule.target(x0, t, noise)
    if prediction == "epsilon":
        torch.testing.assert_close(target, noise)
    x0_hat, eps_hat = schedule.split(x_t, t, target)
    # x0 from an epsilon prediction divides by sqrt(alpha_bar), ~3e-3 at the last step: float32 error grows to ~1e-4.
    atol = 1e-5 if prediction == "v" else 2e-4
    torch.testing.assert_close(x0_hat, x0, rtol=0, atol=atol)
    torch.testing.assert_close(eps_hat, noise, rtol=0, atol=1e-5)


def test_schedule_is_a_cosine_schedule():
    schedule = Schedule(1000)
    ab = schedule.alpha_bar
    assert ab.shape == (1000,)
    assert (ab[1:] <= ab[:-1]).all()
    assert ab[0] > 0.999
    assert ab[-1] == pytest.approx(1e-5)


@pytest.mark.parametrize("prediction", ["v", "epsilon"])
@pytest.mark.parametrize("steps", [1, 10, 50])
def test_ddim_with_exact_denoiser_returns_x0(prediction, steps):
    """A denoiser that knows x0 predicts the exact target at every step; DDIM must land on x0."""
    schedule = Schedule(1000, prediction=prediction)
    generator = torch.Generator().manual_seed(SEED)
    x0 = torch.rand(2, 3, 6, 7, generator=generator) * 4 - 2  # inside the clip range
    noise = torch.randn(2, 3, 6, 7, generator=generator)
    calls = []

    def denoise(x_t, t):
        step = torch.round(t * schedule.timesteps).long()
        calls.append(int(step[0]))
        ab = schedule.alpha_bar[step][:, None, None, None]
        eps = (x_t - ab.sqrt() * x0) / (1 - ab).sqrt()
        return schedule.target(x0, step, eps)

    out = schedule.sample(denoise, noise, steps=steps)
    assert len(calls) == steps
    assert calls[0] == schedule.timesteps - 1
    assert calls == sorted(calls, reverse=True)
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-4)


def test_ddim_clips_x0_estimates():
    schedule = Schedule(100)
    x0 = torch.full((1, 1, 2, 2), 50.0)

    def denoise(x_t, t):
        step = torch.round(t * schedule.timesteps).long()
        ab = schedule.alpha_bar[step][:, None, None, None]
        return schedule.target(x0, step, (x_t - ab.sqrt() * x0) / (1 - ab).sqrt())

    out = schedule.sample(denoise, torch.zeros(1, 1, 2, 2), steps=5, clip=6.0)
    torch.testing.assert_close(out, torch.full_like(out, 6.0))


# --- configuration and device ------------------------------------------------------------------------------------


def test_resolve_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    device = torch.device("cpu")
    assert resolve_device(device) is device
    with pytest.raises(ValueError, match="nonsense"):
        resolve_device("nonsense")
    with pytest.raises(TypeError, match="`device` must be 'auto', a device name"):
        resolve_device(0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where CUDA is missing")
def test_a_torch_device_for_missing_cuda_is_refused_like_its_name():
    """``torch.device("cuda")`` used to pass through and fail deep inside PyTorch."""
    for device in (torch.device("cuda"), torch.device("cuda", 0)):
        with pytest.raises(ValueError, match="sees no CUDA GPU; use device='auto' or 'cpu'"):
            resolve_device(device)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message shown where CUDA is missing")
def test_asking_for_missing_cuda_says_what_to_do():
    with pytest.raises(ValueError, match="sees no CUDA GPU; use device='auto' or 'cpu'"):
        resolve_device("cuda")


def test_presets():
    assert set(PRESETS) >= {"tiny", "base"}
    assert PRESETS["base"] == ModelConfig()
    tiny, base = PRESETS["tiny"], PRESETS["base"]
    assert tiny.channels < base.channels
    assert tiny.train_steps < base.train_steps
    assert resolve_config("tiny") is tiny
    assert resolve_config(None) is base
    assert resolve_config(tiny) is tiny
    assert resolve_config("tiny", train_steps=7, batch_size=None) == replace(tiny, train_steps=7)
    with pytest.raises(ValueError, match="huge"):
        resolve_config("huge")
    with pytest.raises(ValueError, match="huge"):
        DiffST(["a"], config="huge")
    with pytest.raises(TypeError):
        resolve_config(3)


def test_config_dict_round_trip():
    config = PRESETS["tiny"]
    as_dict = config.to_dict()
    assert isinstance(as_dict["channel_mult"], list)
    assert json.loads(json.dumps(as_dict)) == as_dict
    assert ModelConfig.from_dict(as_dict) == config
    assert resolve_config(as_dict) == config
    with pytest.raises(ValueError, match="bogus"):
        ModelConfig.from_dict({**as_dict, "bogus": 1})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"prediction": "x0"}, "prediction"), ({"px_per_bin": 6}, "px_per_bin"), ({"px_per_bin": 1}, "px_per_bin")],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ModelConfig(**kwargs)
    with pytest.raises(ValueError, match="patch_bins"):
        ModelConfig(channel_mult=(1, 2, 2), patch_bins=18)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"train_steps": "30"}, TypeError, r"`train_steps` must be of type int, got '30'"),
        ({"channels": True}, TypeError, r"`channels` must be of type int, got True"),
        ({"use_cmam": 1}, TypeError, r"`use_cmam` must be of type bool"),
        ({"learning_rate": float("nan")}, TypeError, r"`learning_rate` must be of type float"),
        ({"learning_rate": -1e-3}, ValueError, r"`learning_rate` must be positive"),
        ({"batch_size": 0}, ValueError, r"`batch_size` must be positive, got 0"),
        ({"tile_overlap": -1}, ValueError, r"`tile_overlap` must be 0 or more"),
        ({"ema_decay": 1.0}, ValueError, r"`ema_decay` must lie in \[0, 1\)"),
        ({"channel_mult": (1, 0)}, TypeError, r"`channel_mult` must be of type"),
    ],
)
def test_config_fields_of_the_wrong_type_or_range_are_refused(kwargs, error, match):
    """These used to pass and fail inside training (``'>' not supported between 'int' and 'str'``) or train silently."""
    with pytest.raises(error, match=match):
        ModelConfig(**kwargs)
    with pytest.raises(error, match=match):
        resolve_config({**PRESETS["tiny"].to_dict(), **kwargs})


def test_model_arguments():
    with pytest.raises(ValueError, match="at least one gene"):
        DiffST([], config="tiny")
    with pytest.raises(ValueError, match="unique"):
        DiffST(["a", "a"], config="tiny")
    model = DiffST(["a", "b"], config="tiny", device="cpu")
    assert not model.is_trained
    assert "untrained" in repr(model)


# --- the trained model ---------------------------------------------------------------------------------------


def test_trained_model(tiny_model, st_map):
    assert tiny_model.is_trained
    assert tiny_model.genes == st_map.genes
    assert tiny_model.config == PRESETS["tiny"]
    assert tiny_model.scale == 4
    assert len(tiny_model.history["denoiser"]) == PRESETS["tiny"].train_steps
    assert len(tiny_model.history["encoder"]) == PRESETS["tiny"].encoder_steps
    assert np.isfinite(tiny_model.history["denoiser"]).all()


def test_sample_shape_on_odd_window(tiny_model, scene, drawn):
    assert scene.shape == (25, 27)
    assert drawn.shape == (2, len(tiny_model.genes), 25, 27)
    assert drawn.dtype == np.float32
    assert np.isfinite(drawn).all()
    assert (drawn[:, :, ~scene.mask] == 0).all()
    assert not np.array_equal(drawn[0], drawn[1])  # two independent draws


def test_sample_is_reproducible(tiny_model, scene, drawn):
    again = tiny_model.sample(scene, n_samples=2, seed=SEED, show_progress_bar=False)
    np.testing.assert_array_equal(again, drawn)
    other = tiny_model.sample(scene, n_samples=1, seed=SEED + 1, show_progress_bar=False)
    assert not np.allclose(other[0], drawn[0])


def test_posterior_mean_shrinks_the_draws_toward_the_base(tiny_model, scene, drawn):
    weight = tiny_model.network.residual_weight.cpu().numpy()
    # Fitted on held-out training bins: a share in [0, 1] per gene, not left at its initial 1 everywhere.
    assert weight.shape == (len(tiny_model.genes),)
    assert ((weight >= 0) & (weight <= 1)).all()
    assert (weight < 1).any()
    again, mean = tiny_model.sample(scene, n_samples=2, seed=SEED, return_mean=True, show_progress_bar=False)
    np.testing.assert_array_equal(again, drawn)
    *_, base = tiny_model._inputs(scene)
    expected = base + weight[:, None, None] * (drawn.mean(axis=0) - base)
    np.testing.assert_allclose(mean, expected * scene.mask, atol=1e-5)
    assert (mean[:, ~scene.mask] == 0).all()


def test_the_spread_is_calibrated_on_held_out_bins_at_training(tiny_model):
    scale = tiny_model.network.spread_scale.cpu().numpy()
    # Fitted (a conformal factor per gene), not left at its initial 1.
    assert scale.shape == (len(tiny_model.genes),)
    assert np.all(np.isfinite(scale)) and np.all(scale > 0)
    assert not np.allclose(scale, 1.0)
    ratio = tiny_model.network.spread_error_ratio.cpu().numpy()
    assert ratio.shape == scale.shape and np.all(np.isfinite(ratio)) and np.all(ratio > 0)
    assert not np.allclose(ratio, 1.0)


def test_spread_scale_brings_an_overconfident_spread_to_nominal_coverage():
    from sr_spatial.core._consistency import project_to_spots
    from sr_spatial.core._uncertainty import interval_coverage
    from sr_spatial.diffusion.module._fitted import fit_spread_scale

    rng = np.random.default_rng(0)
    n_genes, side, cell = 3, 30, 3
    rows, cols = np.mgrid[0:side, 0:side]
    owner = (rows // cell) * (side // cell) + cols // cell
    measured = rng.uniform(1.0, 3.0, (owner.max() + 1, n_genes)).astype(np.float32)
    nearest = measured[owner].transpose(2, 0, 1)
    target = np.clip(nearest + rng.normal(0.0, 0.5, nearest.shape), 0.0, None).astype(np.float32)
    mask = np.ones((side, side), dtype=bool)
    scene = Scene(
        nearest=nearest, smooth=nearest, mask=mask, histology=np.ones((3, side, side), np.float32), px_per_bin=1,
        target=target, owner=owner,
    )  # fmt: skip
    # Draws far narrower than the error: a spread of 0.05 against an error of about 0.5.
    draws = nearest[None] + rng.normal(0.0, 0.05, (8, *nearest.shape)).astype(np.float32)
    network = DiffSTNetwork(n_genes, resolve_config("tiny"))
    fit_spread_scale(network, [(scene, nearest, mask, draws)])
    scale = network.spread_scale.numpy()
    assert np.all(scale > 3)
    footprint = np.where(mask, owner, -1)
    spread = project_to_spots(draws, footprint, measured).std(axis=0) * scale[:, None, None]
    mean = project_to_spots(nearest, footprint, measured)
    covered = interval_coverage(mean[:, mask].T, np.maximum(spread[:, mask].T, 0.05), target[:, mask].T)[0.9]
    assert np.all(np.abs(covered - 0.9) < 0.03)
    # Kept for carrying the spread to finer bins: the held-out errors' mean square over the calibrated spread's.
    # (The fit's mean is the projected mean of the draws: the network's residual weight is still 1.)
    error = (target - project_to_spots(draws.mean(axis=0), footprint, measured))[:, mask]
    expected = np.mean(error**2, axis=1) / np.mean(spread[:, mask] ** 2, axis=1)
    np.testing.assert_allclose(network.spread_error_ratio.numpy(), expected, rtol=1e-4)


def test_models_saved_before_the_weight_keep_the_plain_mean(tiny_model, saved, tmp_path):
    old = tmp_path / "old"
    shutil.copytree(saved, old)
    state = torch.load(old / "model.pt", weights_only=True)
    del state["residual_weight"]
    del state["spread_scale"]
    del state["spread_error_ratio"]
    torch.save(state, old / "model.pt")
    meta = json.loads((old / "config.json").read_text())
    del meta["checksum"]  # models of that time had no checksum either
    (old / "config.json").write_text(json.dumps(meta))
    loaded = DiffST.load(old, device="cpu")
    assert torch.equal(loaded.network.residual_weight.cpu(), torch.ones(len(tiny_model.genes)))
    assert torch.equal(loaded.network.spread_scale.cpu(), torch.ones(len(tiny_model.genes)))
    assert torch.equal(loaded.network.spread_error_ratio.cpu(), torch.ones(len(tiny_model.genes)))


def test_sample_checks_its_inputs(tiny_model, scene):
    with pytest.raises(ValueError, match="n_samples"):
        tiny_model.sample(scene, n_samples=0, show_progress_bar=False)
    fewer = Scene(
        nearest=scene.nearest[:3], smooth=scene.smooth[:3], mask=scene.mask, histology=scene.histology, px_per_bin=8
    )
    with pytest.raises(ValueError, match="genes"):
        tiny_model.sample(fewer, show_progress_bar=False)
    untrained = DiffST(tiny_model.genes, config="tiny", device="cpu")
    with pytest.raises(RuntimeError, match="not trained"):
        untrained.sample(scene, show_progress_bar=False)


# --- save and load -------------------------------------------------------------------------------------------


def test_save_load_round_trip(tiny_model, saved, scene, drawn):
    assert (saved / "model.pt").is_file()
    meta = json.loads((saved / "config.json").read_text())
    assert meta["genes"] == tiny_model.genes
    assert meta["config"] == tiny_model.config.to_dict()

    loaded = DiffST.load(saved, device="cpu")
    assert loaded.is_trained
    assert loaded.genes == tiny_model.genes
    assert loaded.config == tiny_model.config
    assert loaded.scale == tiny_model.scale
    original = tiny_model.network.state_dict()
    for name, value in loaded.network.state_dict().items():
        assert torch.equal(value.cpu(), original[name].cpu()), name
    np.testing.assert_array_equal(loaded.sample(scene, n_samples=2, seed=SEED, show_progress_bar=False), drawn)


def test_load_checks_genes(tiny_model, saved):
    assert DiffST.load(saved, device="cpu", genes=tiny_model.genes).genes == tiny_model.genes
    wrong = [*tiny_model.genes[:-1], "NOT_A_GENE"]
    with pytest.raises(ValueError) as info:
        DiffST.load(saved, device="cpu", genes=wrong)
    assert "NOT_A_GENE" in str(info.value)
    assert tiny_model.genes[-1] in str(info.value)
    with pytest.raises(ValueError, match="order"):
        DiffST.load(saved, device="cpu", genes=tiny_model.genes[::-1])


def test_load_truncated_weights(saved, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    data = (broken / "model.pt").read_bytes()
    (broken / "model.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="Re-save or re-train"):
        DiffST.load(broken, device="cpu")


def test_load_weights_of_another_configuration(saved, tmp_path):
    other = tmp_path / "other"
    shutil.copytree(saved, other)
    meta = json.loads((other / "config.json").read_text())
    meta["config"]["channels"] = 8
    (other / "config.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="Re-save or re-train"):
        DiffST.load(other, device="cpu")


def test_load_missing(tmp_path):
    with pytest.raises(FileNotFoundError):
        DiffST.load(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="config.json"):
        DiffST.load(tmp_path / "empty")


def test_save_does_not_overwrite(tiny_model, tmp_path):
    path = tiny_model.save(tmp_path / "m")
    with pytest.raises(FileExistsError, match="overwrite"):
        tiny_model.save(path)
    assert tiny_model.save(path, overwrite=True) == path
    assert DiffST.load(path, device="cpu").genes == tiny_model.genes


@pytest.mark.parametrize("present", ["config.json", "model.pt"])
def test_save_never_replaces_a_file_it_did_not_write(tmp_path, present):
    """A folder holding the user's own ``config.json`` (or ``model.pt``) is refused: nothing is written there."""
    model = DiffST(["a", "b"], config="tiny", device="cpu")
    folder = tmp_path / "results"
    folder.mkdir()
    (folder / present).write_text("the user's own file")
    with pytest.raises(FileExistsError, match=rf"already holds {re.escape(present)} that sr_spatial did not write"):
        model.save(folder)
    assert (folder / present).read_text() == "the user's own file"
    assert sorted(p.name for p in folder.iterdir()) == [present]
    assert model.save(folder, overwrite=True) == folder  # unless told
    assert DiffST.load(folder, device="cpu").genes == ["a", "b"]


def test_save_to_a_file_says_so(tmp_path):
    (tmp_path / "model").write_text("x")
    with pytest.raises(NotADirectoryError, match="is a file; a model is saved as a directory"):
        DiffST(["a"], config="tiny", device="cpu").save(tmp_path / "model")


def test_positional_noise_depends_only_on_the_position():
    from sr_spatial.diffusion.module._sampler import NOISE_CELL, positional_noise

    whole = positional_noise(0, 2, 3, top=0, left=0, height=3 * NOISE_CELL, width=2 * NOISE_CELL + 5)
    part = positional_noise(0, 2, 3, top=17, left=40, height=50, width=29)
    torch.testing.assert_close(part, whole[..., 17:67, 40:69], rtol=0, atol=0)
    assert not torch.equal(whole[0], whole[1])  # draws differ
    assert not torch.equal(whole, positional_noise(1, 2, 3, top=0, left=0, height=96, width=69))  # so do seeds
    assert abs(float(whole.mean())) < 0.05 and abs(float(whole.std()) - 1) < 0.05
    with pytest.raises(ValueError, match="`offset` must be non-negative"):
        positional_noise(0, 1, 1, top=-1, left=0, height=4, width=4)
