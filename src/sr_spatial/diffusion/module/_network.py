"""The network DiffST trains: histology encoder, disentangling network and UNet, with its fitted buffers."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.nn import functional as F

from sr_spatial.diffusion.module._layout import ConditionLayout
from sr_spatial.diffusion.nn._cmam import Disentangler, disentangling_loss
from sr_spatial.diffusion.nn._denoiser import UNet
from sr_spatial.diffusion.nn._registry import build_encoder

if TYPE_CHECKING:
    from sr_spatial.core._image_encoder import Encoder
    from sr_spatial.diffusion._config import ModelConfig

__all__ = ["DiffSTNetwork"]


class DiffSTNetwork(nn.Module):
    """Histology encoder, disentangling network and UNet denoiser; statistics and gene graph as saved buffers.

    ``encoder`` is any :class:`~sr_spatial.core._image_encoder.Encoder` that estimates expression from the scene's
    pixels; by default the one ``config.histology_encoder`` names.

    The denoiser sees ``x_t`` and the condition laid out by :class:`ConditionLayout`: per bin, the nearest-spot
    and smooth measurement, the histology encoder's expression estimate, that estimate minus its mean over the
    bin's measurement (what histology adds within a spot), and the tissue mask; all standardised per gene. With
    CMAM, a disentangling network encodes the measurement and the cell-level histology (pooled to bins) into
    shared and specific features that modulate every UNet resolution; with cross-attention, the bins attend to
    the cell-level histology and the tissue around them; with the gene graph, co-expressed genes modulate each
    other's channels.
    """

    def __init__(self, n_genes: int, config: ModelConfig, *, encoder: Encoder | None = None):
        super().__init__()
        if encoder is None:
            encoder = build_encoder(config.histology_encoder, n_genes=n_genes, width=config.histology_width)
        if not encoder.estimates_expression or encoder.out_channels != n_genes or encoder.um_per_px is not None:
            msg = (
                f"DiffSTNetwork needs an encoder that estimates each of the {n_genes} genes from the scene's own "
                f"pixels; {type(encoder).__name__} does not."
            )
            raise ValueError(msg)
        self.n_genes = n_genes
        self.layout = ConditionLayout(n_genes)
        self.encoder = encoder
        cells = encoder.cell_channels
        self.disentangler = (
            Disentangler(
                expression_channels=self.layout.measurement.stop + 1,
                histology_channels=cells + 2 * n_genes,
                channels=config.cmam_channels,
            )
            if config.use_cmam
            else None
        )
        attention = (
            {
                "token_channels": cells,
                "window": config.attention_window,
                "heads": config.attention_heads,
            }
            if config.use_cross_attention
            else None
        )
        self.unet = UNet(
            in_channels=self.layout.denoiser_channels,
            out_channels=n_genes,
            channels=config.channels,
            channel_mult=config.channel_mult,
            cmam_channels=config.cmam_channels if config.use_cmam else None,
            attention=attention,
            gene_graph_dim=config.gene_embedding_dim if config.use_gene_graph else None,
        )
        self.register_buffer("gene_mean", torch.zeros(n_genes))
        self.register_buffer("gene_std", torch.ones(n_genes))
        self.register_buffer("residual_scale", torch.ones(n_genes))
        # Per gene: how much of the draws' mean residual the posterior mean keeps (see fit_residual_weight).
        self.register_buffer("residual_weight", torch.ones(n_genes))
        # Per gene: the factor on the projected draws' spread that gives nominal coverage (see fit_spread_scale).
        self.register_buffer("spread_scale", torch.ones(n_genes))
        # Per gene: held-out errors' mean square over the calibrated spread's (see finer_spread_factor).
        self.register_buffer("spread_error_ratio", torch.ones(n_genes))
        # Per gene: weights of the smooth measurement and of the histology estimate in the base map, and offset.
        self.register_buffer("blend", torch.tensor([[1.0, 0.0, 0.0]]).repeat(n_genes, 1))
        self.register_buffer("histology_mean", torch.zeros(encoder.in_channels))
        self.register_buffer("histology_std", torch.ones(encoder.in_channels))
        if self.needs_cells:
            self.register_buffer("cell_mean", torch.zeros(cells))
            self.register_buffer("cell_std", torch.ones(cells))

    @property
    def needs_cells(self) -> bool:
        """Whether the network reads the cell-level histology features."""
        return self.disentangler is not None or self.unet.attention is not None

    def forward(
        self,
        x_t: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        cells: torch.Tensor | None = None,
        *,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The denoiser's output; with ``mask`` (training), also the disentangling loss over the masked bins.

        ``cond`` is ``(b, 4 * n_genes + 1, h, w)`` laid out by :class:`ConditionLayout` (see
        :func:`~sr_spatial.diffusion.module._condition.condition`), ``cells`` the standardised cell-level histology
        ``(b, cell_channels, 2h, 2w)``, needed when :attr:`needs_cells`.
        """
        if self.needs_cells and cells is None:
            msg = "This network reads cell-level histology features; pass `cells`."
            raise ValueError(msg)
        features = None
        if self.disentangler is not None:
            layout = self.layout
            expression = torch.cat([cond[:, layout.measurement], cond[:, layout.mask]], dim=1)
            histology = torch.cat([F.avg_pool2d(cells, 2), cond[:, layout.histology]], dim=1)
            features = self.disentangler(expression, histology)
        output = self.unet(torch.cat([x_t, cond], dim=1), t, features=features, cells=cells)
        if mask is None:
            return output
        aux = disentangling_loss(features, mask) if features is not None else output.new_zeros(())
        return output, aux
