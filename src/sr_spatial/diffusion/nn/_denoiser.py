"""Conditional UNet denoiser over G-gene maps."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sr_spatial.diffusion.nn._attention import DynamicCrossAttention
from sr_spatial.diffusion.nn._cmam import CMAM
from sr_spatial.diffusion.nn._gene_graph import GeneGraphModulation

__all__ = ["UNet", "timestep_embedding"]


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of diffusion times ``t`` in ``[0, 1]``."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1)


class ChannelNorm(nn.Module):
    """RMS normalisation over channels at each bin.

    Unlike GroupNorm it uses no spatial statistics, so a small training crop and a whole slide (with empty
    glass around the tissue) are normalised alike.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + 1e-6) * self.weight


def _norm(channels: int) -> ChannelNorm:
    return ChannelNorm(channels)


class ResBlock(nn.Module):
    """Residual block whose features are scaled and shifted by the time embedding."""

    def __init__(self, in_channels: int, out_channels: int, emb_channels: int):
        super().__init__()
        self.norm1 = _norm(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.emb = nn.Linear(emb_channels, 2 * out_channels)
        self.norm2 = _norm(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return h + self.skip(x)


class UNet(nn.Module):
    """A small UNet: ``x_t`` and the condition maps in, the prediction for ``n_genes`` channels out.

    Parameters
    ----------
    in_channels
        Channels of ``x_t`` and every condition map, concatenated.
    out_channels
        Genes.
    channels
        Width of the first level.
    channel_mult
        Width multiplier per level; each further level halves the resolution.
    cmam_channels
        Width of the disentangled features; when given, a :class:`~sr_spatial.diffusion.nn._cmam.CMAM` block modulates
        the output of every residual block.
    attention
        Keyword arguments of :class:`~sr_spatial.diffusion.nn._attention.DynamicCrossAttention` (``token_channels``,
        ``window``, ...); when given, the full-resolution features attend to the histology before the output.
    gene_graph_dim
        Width of the gene embeddings; when given, a :class:`~sr_spatial.diffusion.nn._gene_graph.GeneGraphModulation`
        modulates the gene channels of the output.
    """

    def __init__(
        self,
        *,
        in_channels: int,
        out_channels: int,
        channels: int,
        channel_mult: tuple[int, ...],
        cmam_channels: int | None = None,
        attention: dict | None = None,
        gene_graph_dim: int | None = None,
    ):
        super().__init__()
        emb = 4 * channels
        self.channels = channels
        self.time = nn.Sequential(nn.Linear(channels, emb), nn.SiLU(), nn.Linear(emb, emb))
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        widths = [channels * m for m in channel_mult]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        previous = channels
        for level, width in enumerate(widths):
            self.down.append(ResBlock(previous, width, emb))
            previous = width
            if level < len(widths) - 1:
                self.downsample.append(nn.Conv2d(width, width, 3, stride=2, padding=1))
        self.middle = ResBlock(previous, previous, emb)
        self.up = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.up.append(ResBlock(previous + width, width, emb))
            previous = width
        blocks = [*self.down, self.middle, *self.up]
        self.cmam = (
            nn.ModuleList(CMAM(feature_channels=cmam_channels, channels=block.conv2.out_channels) for block in blocks)
            if cmam_channels
            else None
        )
        self.attention = (
            DynamicCrossAttention(channels=previous, emb_channels=emb, **attention) if attention is not None else None
        )
        self.gene_graph = (
            GeneGraphModulation(out_channels, dim=gene_graph_dim, emb_channels=emb) if gene_graph_dim else None
        )
        self.out = nn.Sequential(_norm(previous), nn.SiLU(), nn.Conv2d(previous, out_channels, 3, padding=1))
        # Start from "predict zero": the sampler then returns the smooth measurement until training says otherwise.
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        *,
        features: dict[str, torch.Tensor] | None = None,
        cells: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predict from ``x`` ``(b, in_channels, h, w)`` at times ``t`` ``(b,)`` in ``[0, 1]``.

        ``features`` are the disentangled features (needed with CMAM), ``cells`` the cell-level histology
        ``(b, token_channels, 2h, 2w)`` (needed with attention).
        """
        emb = self.time(timestep_embedding(t, self.channels))
        modulate = iter(self.cmam) if self.cmam is not None else None

        def block(module, h):
            h = module(h, emb)
            return next(modulate)(h, features) if modulate is not None else h

        h = self.stem(x)
        skips = []
        for level, down in enumerate(self.down):
            h = block(down, h)
            if level < len(self.downsample):
                skips.append(h)
                h = self.downsample[level](h)
        h = block(self.middle, h)
        for up in self.up:
            skip = skips.pop()
            h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(up, torch.cat([h, skip], dim=1))
        if self.attention is not None:
            h = self.attention(h, cells, emb)
        out = self.out(h)
        return self.gene_graph(out, emb) if self.gene_graph is not None else out
