"""The training loop: random crops of scenes, DDPM noise-prediction loss, EMA weights."""

from __future__ import annotations

import copy
import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from tqdm.auto import tqdm

from sr_spatial._logging import ETA

if TYPE_CHECKING:
    from sr_spatial.model._diffusion import Schedule
    from sr_spatial.model._model import DiffSTNetwork

__all__ = ["SceneTensors", "train_network"]


class SceneTensors:
    """One training scene as standardised CPU tensors (condition incl. histology, target, mask), padded to a crop."""

    def __init__(self, cond, x0, mask, min_size: int):
        _, height, width = x0.shape
        pad_h, pad_w = max(min_size - height, 0), max(min_size - width, 0)

        def pad(a):
            return torch.nn.functional.pad(a, (0, pad_w, 0, pad_h))

        self.cond = pad(cond)
        self.x0 = pad(x0)
        self.mask = pad(mask[None])

    def crop(self, size: int, rng: np.random.Generator, *, min_tissue: float = 0.2, tries: int = 20):
        _, height, width = self.x0.shape
        for _ in range(tries):
            i = int(rng.integers(0, height - size + 1))
            j = int(rng.integers(0, width - size + 1))
            mask = self.mask[:, i : i + size, j : j + size]
            if mask.mean() >= min_tissue:
                break
        return self.cond[:, i : i + size, j : j + size], self.x0[:, i : i + size, j : j + size], mask


def _augment(tensors: list[torch.Tensor], rng: np.random.Generator) -> list[torch.Tensor]:
    # Tissue has no preferred orientation: the 8 symmetries of the square multiply the few training pairs.
    turns = int(rng.integers(0, 4))
    flip = bool(rng.integers(0, 2))
    out = []
    for t in tensors:
        t = torch.rot90(t, turns, dims=(-2, -1))
        out.append(torch.flip(t, dims=(-1,)) if flip else t)
    return out


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
    show_progress_bar: bool = True,
) -> tuple[DiffSTNetwork, list[float]]:
    """Train the denoiser of ``network`` in place; return its exponential moving average and the loss per step."""
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    network.to(device).train()
    ema = copy.deepcopy(network).eval()
    for p in ema.parameters():
        p.requires_grad_(False)
    optimiser = torch.optim.AdamW(network.unet.parameters(), lr=learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(step / max(steps, 1), 1.0)))
    )
    autocast = torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    losses = []
    bar = tqdm(range(steps), desc="Training", unit="step", disable=not show_progress_bar)
    eta = ETA("Training the denoiser", steps)
    for step in bar:
        batch = []
        for _ in range(batch_size):
            scene = scenes[int(rng.integers(0, len(scenes)))]
            batch.append(_augment(list(scene.crop(patch_bins, rng)), rng))
        cond, x0, mask = (torch.stack(parts).to(device) for parts in zip(*batch, strict=True))
        t = torch.randint(0, schedule.timesteps, (batch_size,), generator=generator).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        x_t = schedule.noisy(x0, t, noise)
        with autocast:
            output = network(x_t, t.float() / schedule.timesteps, cond)
        error = (output.float() - schedule.target(x0, t, noise)) ** 2 * mask
        loss = error.sum() / (mask.sum() * x0.shape[1]).clamp(min=1.0)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(network.unet.parameters(), 1.0)
        optimiser.step()
        scheduler.step()
        # Warm-up keeps the average from being dominated by the random initial weights on short runs.
        decay = min(ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), network.parameters(), strict=True):
                p_ema.lerp_(p, 1 - decay)
        losses.append(loss.item())
        eta.step()
        if step % 20 == 0 or step == steps - 1:
            bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    bar.close()
    network.eval()
    return ema, losses
