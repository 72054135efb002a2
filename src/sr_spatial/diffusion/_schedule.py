"""Noise schedule, training targets and samplers (DDPM training, DDIM or ancestral DDPM sampling)."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["Schedule"]


class Schedule:
    """Cosine noise schedule (Nichol & Dhariwal 2021) with ``timesteps`` discrete steps."""

    def __init__(self, timesteps: int, *, prediction: str = "v"):
        steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
        f = torch.cos((steps + 0.008) / 1.008 * math.pi / 2) ** 2
        alpha_bar = (f / f[0]).clamp(min=1e-5)
        self.timesteps = timesteps
        self.prediction = prediction
        self.alpha_bar = alpha_bar[1:].float()  # alpha_bar[t] for t = 0 .. T-1

    def _ab(self, t: torch.Tensor) -> torch.Tensor:
        return self.alpha_bar.to(t.device)[t][:, None, None, None]

    def noisy(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Sample ``x_t`` from ``q(x_t | x_0)``."""
        ab = self._ab(t)
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def target(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """What the denoiser learns to output at ``t``."""
        if self.prediction == "epsilon":
            return noise
        ab = self._ab(t)
        return ab.sqrt() * noise - (1 - ab).sqrt() * x0

    def split(self, x_t: torch.Tensor, t: torch.Tensor, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The denoiser's output at ``t`` as estimates ``(x0, epsilon)``."""
        ab = self._ab(t)
        if self.prediction == "epsilon":
            eps = output
            x0 = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
        else:
            x0 = ab.sqrt() * x_t - (1 - ab).sqrt() * output
            eps = (1 - ab).sqrt() * x_t + ab.sqrt() * output
        return x0, eps

    def sample(
        self,
        denoise: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        noise: torch.Tensor,
        *,
        steps: int,
        eta: float = 0.0,
        generator: torch.Generator | None = None,
        clip: float = 6.0,
        progress: Callable[[], None] | None = None,
    ) -> torch.Tensor:
        """DDIM sampling (Song et al. 2021) from ``noise`` over ``steps`` evenly spaced timesteps.

        ``eta=0`` is deterministic DDIM; ``eta=1`` with ``steps == timesteps`` is ancestral DDPM sampling.
        ``x0`` estimates are clipped to ``[-clip, clip]`` (standardised units) to keep few-step sampling stable.
        """
        steps = max(1, min(steps, self.timesteps))
        times = torch.linspace(self.timesteps - 1, 0, steps).round().long().tolist()
        x = noise
        for index, t in enumerate(times):
            t_batch = torch.full((x.shape[0],), t, device=x.device, dtype=torch.long)
            output = denoise(x, t_batch.float() / self.timesteps)
            x0, eps = self.split(x, t_batch, output.float())
            x0 = x0.clamp(-clip, clip)
            if index == len(times) - 1:
                x = x0
            else:
                ab = self.alpha_bar[t].item()
                ab_next = self.alpha_bar[times[index + 1]].item()
                sigma = eta * math.sqrt((1 - ab_next) / (1 - ab) * (1 - ab / ab_next))
                # Re-derive eps from the clipped x0 so both estimates agree.
                eps = (x - math.sqrt(ab) * x0) / math.sqrt(1 - ab)
                x = math.sqrt(ab_next) * x0 + math.sqrt(max(1 - ab_next - sigma**2, 0.0)) * eps
                if sigma > 0:
                    z = torch.randn(x.shape, generator=generator, device="cpu").to(x.device)
                    x = x + sigma * z
            if progress is not None:
                progress()
        return x
