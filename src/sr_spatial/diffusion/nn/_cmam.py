"""Multi-modal disentangling network and cross-modal adaptive modulation (CMAM)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["CMAM", "Disentangler", "disentangling_loss"]


def _branch(in_channels: int, channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, channels, 3, padding=1),
        nn.SiLU(),
        nn.Conv2d(channels, channels, 3, padding=1),
        nn.SiLU(),
    )


class Disentangler(nn.Module):
    """Expression and histology encoders whose features split into a modality-shared and a specific part.

    Parameters
    ----------
    expression_channels
        Input channels of the expression branch (the measurement maps at the output grid).
    histology_channels
        Input channels of the histology branch (histology features pooled to the output grid).
    channels
        Width of each part.
    """

    def __init__(self, *, expression_channels: int, histology_channels: int, channels: int):
        super().__init__()
        self.expression = _branch(expression_channels, channels)
        self.histology = _branch(histology_channels, channels)
        self.expression_split = nn.Conv2d(channels, 2 * channels, 1)
        self.histology_split = nn.Conv2d(channels, 2 * channels, 1)

    def forward(self, expression: torch.Tensor, histology: torch.Tensor) -> dict[str, torch.Tensor]:
        """Shared and specific features of both modalities, each ``(batch, channels, h, w)``."""
        shared_x, specific_x = self.expression_split(self.expression(expression)).chunk(2, dim=1)
        shared_h, specific_h = self.histology_split(self.histology(histology)).chunk(2, dim=1)
        return {"shared_x": shared_x, "specific_x": specific_x, "shared_h": shared_h, "specific_h": specific_h}


def disentangling_loss(features: dict[str, torch.Tensor], mask: torch.Tensor) -> torch.Tensor:
    """Similarity of the shared parts plus orthogonality of each modality's shared and specific parts.

    Per bin in ``mask`` ``(batch, 1, h, w)``: ``1 - cos(shared_x, shared_h)`` pulls the shared parts together;
    ``cos(shared, specific)^2`` for each modality keeps the specific parts apart from what is shared.
    """

    def cos(a, b):
        return F.cosine_similarity(a, b, dim=1, eps=1e-6)[:, None]

    similarity = 1 - cos(features["shared_x"], features["shared_h"])
    orthogonality = cos(features["shared_x"], features["specific_x"]) ** 2
    orthogonality = orthogonality + cos(features["shared_h"], features["specific_h"]) ** 2
    return ((similarity + orthogonality) * mask).sum() / mask.sum().clamp(min=1.0)


class CMAM(nn.Module):
    """Cross-modal adaptive modulation of one UNet resolution.

    Each modality proposes a per-channel scale and shift from its shared and specific features; a gate computed
    from both decides, per location, how much each modality contributes. The proposals start at zero, so the
    block begins as the identity.

    Parameters
    ----------
    feature_channels
        Width of each of the four disentangled parts.
    channels
        Channels of the UNet features being modulated.
    """

    def __init__(self, *, feature_channels: int, channels: int):
        super().__init__()
        self.from_expression = nn.Conv2d(2 * feature_channels, 2 * channels, 3, padding=1)
        self.from_histology = nn.Conv2d(2 * feature_channels, 2 * channels, 3, padding=1)
        self.gate = nn.Conv2d(4 * feature_channels, 1, 3, padding=1)
        for layer in (self.from_expression, self.from_histology):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, h: torch.Tensor, features: dict[str, torch.Tensor]) -> torch.Tensor:
        size = h.shape[-2:]

        def at_size(x):
            return x if x.shape[-2:] == size else F.adaptive_avg_pool2d(x, size)

        fx = at_size(torch.cat([features["shared_x"], features["specific_x"]], dim=1))
        fh = at_size(torch.cat([features["shared_h"], features["specific_h"]], dim=1))
        gate = torch.sigmoid(self.gate(torch.cat([fx, fh], dim=1)))
        modulation = gate * self.from_expression(fx) + (1 - gate) * self.from_histology(fh)
        scale, shift = modulation.chunk(2, dim=1)
        return h * (1 + scale) + shift
