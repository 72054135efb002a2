"""Dynamic cross-attention from expression features to cell- and tissue-level histology tokens."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["DynamicCrossAttention"]


def _windows(x: torch.Tensor, size: int) -> torch.Tensor:
    """``(b, c, h, w)`` with ``h``, ``w`` multiples of ``size`` to ``(b * n_windows, size * size, c)``."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // size, size, w // size, size)
    return x.permute(0, 2, 4, 3, 5, 1).reshape(-1, size * size, c)


def _unwindow(x: torch.Tensor, size: int, batch: int, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`_windows`."""
    c = x.shape[-1]
    x = x.reshape(batch, height // size, width // size, size, size, c)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, c, height, width)


class DynamicCrossAttention(nn.Module):
    """Bins attend to the histology under and around them, at two scales, weighted by the diffusion time.

    The output grid is cut into ``window`` x ``window`` bins. Each bin's UNet features query

    - *cell-level* tokens: the histology at full image resolution summarised on a grid twice as fine as the bins
      (pixel statistics of each quarter-bin and the histology encoder's features), for the window's own bins;
    - *tissue-level* tokens: the same features averaged over ``tissue_pool`` x ``tissue_pool`` bins, over the
      window and one window of context on each side.

    A gate computed from the time embedding weighs the two levels (coarse structure matters early in denoising,
    cell detail late). Attention runs per window with :func:`torch.nn.functional.scaled_dot_product_attention`,
    so memory grows with the number of windows, never with its square. The output projection starts at zero.

    Parameters
    ----------
    channels
        Channels of the UNet features (queries).
    token_channels
        Channels of the cell-level histology features.
    emb_channels
        Width of the time embedding.
    window
        Window side in bins; a multiple of ``tissue_pool``.
    tissue_pool
        Bins per tissue-level token side.
    heads
        Attention heads; must divide ``channels``.
    """

    def __init__(
        self,
        *,
        channels: int,
        token_channels: int,
        emb_channels: int,
        window: int = 8,
        tissue_pool: int = 4,
        heads: int = 2,
    ):
        super().__init__()
        if window % tissue_pool:
            msg = f"The attention window ({window}) must be a multiple of the tissue pooling ({tissue_pool})."
            raise ValueError(msg)
        if channels % heads:
            msg = f"The attention heads ({heads}) must divide the channels ({channels})."
            raise ValueError(msg)
        self.window, self.tissue_pool, self.heads = window, tissue_pool, heads
        self.norm = nn.LayerNorm(channels)
        self.query = nn.Linear(channels, channels)
        self.cell = nn.Linear(token_channels, 2 * channels)
        self.tissue = nn.Linear(token_channels, 2 * channels)
        self.level_gate = nn.Linear(emb_channels, 2)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def level_weights(self, emb: torch.Tensor) -> torch.Tensor:
        """Weights of the cell and tissue levels per sample, ``(batch, 2)``, summing to 1."""
        return torch.softmax(self.level_gate(F.silu(emb)), dim=-1)

    def _attend(self, queries: torch.Tensor, tokens: torch.Tensor, project: nn.Linear) -> torch.Tensor:
        keys, values = project(tokens).chunk(2, dim=-1)

        def heads(x):
            return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

        attended = F.scaled_dot_product_attention(heads(queries), heads(keys), heads(values))
        return attended.transpose(1, 2).reshape(queries.shape)

    def forward(self, h: torch.Tensor, cells: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Add the attended histology to ``h`` ``(b, c, H, W)``; ``cells`` is ``(b, d, 2H, 2W)``."""
        batch, _, height, width = h.shape
        w, p = self.window, self.tissue_pool
        pad_h, pad_w = (-height) % w, (-width) % w
        padded = F.pad(h, (0, pad_w, 0, pad_h))
        cells = F.pad(cells, (0, 2 * pad_w, 0, 2 * pad_h))
        full_h, full_w = padded.shape[-2:]
        queries = self.query(self.norm(_windows(padded, w)))
        cell_tokens = _windows(cells, 2 * w)
        # Tissue tokens of a window: its own pooled cells and one window of context around it.
        pooled = F.avg_pool2d(cells, 2 * p)
        span = w // p
        tissue_tokens = F.unfold(pooled, kernel_size=3 * span, stride=span, padding=span)
        tissue_tokens = tissue_tokens.reshape(batch, pooled.shape[1], (3 * span) ** 2, -1)
        tissue_tokens = tissue_tokens.permute(0, 3, 2, 1).reshape(-1, (3 * span) ** 2, pooled.shape[1])
        weights = self.level_weights(emb).repeat_interleave(queries.shape[0] // batch, dim=0)[:, None, :]
        attended = weights[..., :1] * self._attend(queries, cell_tokens, self.cell)
        attended = attended + weights[..., 1:] * self._attend(queries, tissue_tokens, self.tissue)
        out = _unwindow(self.out(attended), w, batch, full_h, full_w)
        return h + out[..., :height, :width]
