"""The denoiser's training loop: random crops of scenes, DDPM noise-prediction loss, EMA weights."""

from __future__ import annotations

import copy
import json
import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from sr_spatial._logging import logger, progress_bar
from sr_spatial.diffusion._precision import autocast, compute_dtype
from sr_spatial.diffusion.train._checkpoint import load_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from sr_spatial.diffusion._schedule import Schedule
    from sr_spatial.diffusion.module._network import DiffSTNetwork

__all__ = ["SceneTensors", "train_network"]


class SceneTensors:
    """One training scene as standardised CPU tensors, padded to a crop.

    The condition, target and mask are on the bin grid; the optional cell-level histology on a grid twice as
    fine, cropped along with them.
    """

    def __init__(self, cond, x0, mask, min_size: int, *, cells=None):
        _, height, width = x0.shape
        pad_h, pad_w = max(min_size - height, 0), max(min_size - width, 0)

        def pad(a, factor=1):
            return torch.nn.functional.pad(a, (0, factor * pad_w, 0, factor * pad_h))

        self.cond = pad(cond)
        self.x0 = pad(x0)
        self.mask = pad(mask[None])
        self.cells = pad(cells, 2) if cells is not None else None

    def crop(self, size: int, rng: np.random.Generator, *, min_tissue: float = 0.2, tries: int = 20):
        _, height, width = self.x0.shape
        for _ in range(tries):
            i = int(rng.integers(0, height - size + 1))
            j = int(rng.integers(0, width - size + 1))
            mask = self.mask[:, i : i + size, j : j + size]
            if mask.mean() >= min_tissue:
                break
        parts = [self.cond[:, i : i + size, j : j + size], self.x0[:, i : i + size, j : j + size], mask]
        if self.cells is not None:
            parts.append(self.cells[:, 2 * i : 2 * (i + size), 2 * j : 2 * (j + size)])
        return parts


def _augment(tensors: list[torch.Tensor], rng: np.random.Generator) -> list[torch.Tensor]:
    # Tissue has no preferred orientation: the 8 symmetries of the square multiply the few training pairs.
    turns = int(rng.integers(0, 4))
    flip = bool(rng.integers(0, 2))
    out = []
    for t in tensors:
        t = torch.rot90(t, turns, dims=(-2, -1))
        out.append(torch.flip(t, dims=(-1,)) if flip else t)
    return out


def _batch(scenes: list[SceneTensors], rng: np.random.Generator, *, batch_size: int, patch_bins: int, device):
    """One training batch: random augmented crops of random scenes, stacked part by part, on ``device``."""
    batch = []
    for _ in range(batch_size):
        scene = scenes[int(rng.integers(0, len(scenes)))]
        batch.append(_augment(scene.crop(patch_bins, rng), rng))
    return [torch.stack(parts).to(device) for parts in zip(*batch, strict=True)]


def _resume(state: dict, network, ema, optimiser, scheduler, scaler, rng, generator) -> tuple[dict, int]:
    """Restore a checkpoint's training state in place; returns its loss history and the step it stopped at."""
    network.load_state_dict(state["network"])
    ema.load_state_dict(state["ema"])
    optimiser.load_state_dict(state["optimiser"])
    scheduler.load_state_dict(state["scheduler"])
    scaler.load_state_dict(state["scaler"])
    rng.bit_generator.state = json.loads(state["rng"])
    generator.set_state(state["generator"])
    return {k: list(v) for k, v in state["history"].items()}, int(state["step"])


def train_network(
    network: DiffSTNetwork,
    scenes: list[SceneTensors],
    schedule: Schedule,
    *,
    steps: int,
    batch_size: int,
    patch_bins: int,
    learning_rate: float,
    ema_decay: float,
    device: torch.device,
    seed: int,
    disentangle_weight: float = 0.0,
    precision: str = "auto",
    compile: bool = False,
    checkpoint: Path | None = None,
    checkpoint_every: int = 100,
    fingerprint: str = "",
    callback: Callable[[int, dict[str, list[float]]], None] | None = None,
    show_progress_bar: bool = True,
) -> tuple[DiffSTNetwork, dict[str, list[float]]]:
    """Train the trainable parts of ``network`` in place.

    With ``checkpoint``, the whole training state (weights, their average, optimiser, schedule, random
    generators, losses) is written there every ``checkpoint_every`` steps and at the end, and a run finds it and
    goes on from where it stopped, to the same result as an uninterrupted run. ``fingerprint`` identifies the
    run's settings; a checkpoint of other settings is refused. ``callback(step, losses)`` is called after every
    step.

    Returns
    -------
    The exponential moving average of the network, and per step the diffusion loss (``"denoiser"``) and the
    disentangling loss (``"disentangle"``).
    """
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    network.to(device).train()
    ema = copy.deepcopy(network).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    parameters = [p for p in network.parameters() if p.requires_grad]
    optimiser = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step / max(steps, 1), 1.0)))
    )
    # fp16 gradients underflow without loss scaling; bf16 and fp32 need none.
    scaler = torch.amp.GradScaler(device.type, enabled=compute_dtype(device, precision) == torch.float16)
    forward = torch.compile(network) if compile else network
    history, start = {"denoiser": [], "disentangle": []}, 0
    if checkpoint is not None and checkpoint.is_file():
        state = load_checkpoint(checkpoint, fingerprint)
        history, start = _resume(state, network, ema, optimiser, scheduler, scaler, rng, generator)
    logger.info("Training the denoiser: %d steps%s.", steps, f" (from step {start})" if start else "")
    bar = progress_bar(
        range(start, steps), desc="Training", unit="step", disable=not show_progress_bar, initial=start, total=steps
    )
    for step in bar:
        cond, x0, mask, *cells = _batch(scenes, rng, batch_size=batch_size, patch_bins=patch_bins, device=device)
        t = torch.randint(0, schedule.timesteps, (batch_size,), generator=generator).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        x_t = schedule.noisy(x0, t, noise)
        with autocast(device, precision):
            output, disentangle = forward(x_t, t.float() / schedule.timesteps, cond, *cells, mask=mask)
        error = (output.float() - schedule.target(x0, t, noise)) ** 2 * mask
        diffusion = error.sum() / (mask.sum() * x0.shape[1]).clamp(min=1.0)
        loss = diffusion + disentangle_weight * disentangle.float()
        optimiser.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.unscale_(optimiser)
        torch.nn.utils.clip_grad_norm_(parameters, 1.0)
        scaler.step(optimiser)
        scaler.update()
        scheduler.step()
        # Warm-up keeps the average from being dominated by the random initial weights on short runs.
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), network.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)
        history["denoiser"].append(diffusion.item())
        history["disentangle"].append(float(disentangle.detach()))
        if not (math.isfinite(history["denoiser"][-1]) and math.isfinite(history["disentangle"][-1])):
            msg = (
                f"Training diverged at step {step + 1} of {steps}: the loss became {history['denoiser'][-1]}. Lower "
                f"the learning rate (now {learning_rate:g}), e.g. `config={{..., 'learning_rate': "
                f"{learning_rate / 10:g}}}`, or train with another `seed`."
            )
            raise FloatingPointError(msg)
        if step % 20 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{np.mean(history['denoiser'][-20:]):.4f}")
        if checkpoint is not None and ((step + 1) % checkpoint_every == 0 or step + 1 == steps):
            save_checkpoint(
                checkpoint,
                fingerprint,
                step=step + 1,
                network=network.state_dict(),
                ema=ema.state_dict(),
                optimiser=optimiser.state_dict(),
                scheduler=scheduler.state_dict(),
                scaler=scaler.state_dict(),
                rng=json.dumps(rng.bit_generator.state),
                generator=generator.get_state(),
                history=history,
            )
        if callback is not None:
            callback(step, history)
    bar.close()
    network.eval()
    return ema, history
