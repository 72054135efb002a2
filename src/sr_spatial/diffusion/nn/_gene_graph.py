"""Co-expression gene-correlation graph network (GCGN): genes generated jointly, informed by their co-expression."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["GeneGraphModulation", "build_gene_graph"]


def build_gene_graph(values: np.ndarray, *, k: int = 8) -> np.ndarray:
    """Symmetric-normalised co-expression graph of the genes in ``values``.

    Edges link each gene to the ``k`` genes it correlates with most strongly (absolute Pearson r across the
    observations), the graph is made symmetric, self-loops are added, and the adjacency is normalised as
    ``D^-1/2 (A + I) D^-1/2`` (Kipf & Welling 2017) so graph convolutions keep the scale of their input.

    Parameters
    ----------
    values
        Expression ``(n_observations, n_genes)``, e.g. the measured spots.
    k
        Neighbours kept per gene (fewer when there are fewer other genes).

    Returns
    -------
    The normalised adjacency, ``(n_genes, n_genes)``, float32.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        msg = f"`values` must be (n_observations, n_genes), got shape {values.shape}."
        raise ValueError(msg)
    n_genes = values.shape[1]
    adjacency = np.zeros((n_genes, n_genes))
    k = min(int(k), n_genes - 1)
    if k > 0 and values.shape[0] > 1:
        centred = values - values.mean(axis=0)
        norms = np.linalg.norm(centred, axis=0)
        # Constant genes correlate with nothing: leave them with only their self-loop.
        safe = np.where(norms > 0, norms, np.inf)
        strength = np.abs((centred.T @ centred) / np.outer(safe, safe))
        np.fill_diagonal(strength, -np.inf)
        strongest = np.argsort(-strength, axis=1)[:, :k]
        rows = np.repeat(np.arange(n_genes), k)
        adjacency[rows, strongest.ravel()] = np.maximum(strength[rows, strongest.ravel()], 0.0)
        adjacency = np.maximum(adjacency, adjacency.T)
    adjacency += np.eye(n_genes)
    inverse_sqrt_degree = 1.0 / np.sqrt(adjacency.sum(axis=1))
    return (adjacency * inverse_sqrt_degree[:, None] * inverse_sqrt_degree[None]).astype(np.float32)


class GeneGraphModulation(nn.Module):
    """Graph convolutions over learned gene embeddings that modulate the denoiser's gene channels.

    Two graph-convolution layers turn one embedding per gene into a code that knows its co-expressed
    neighbours (within two hops), so co-expressed genes get similar codes. With the time embedding, the code
    gives each gene channel a scale and shift. The output layer starts at zero: the module begins as the
    identity. (Mixing the neighbours' predictions into each channel as well was measured to lower accuracy:
    ``benchmarks/results/ablation_*.md``.)

    Parameters
    ----------
    n_genes
        Genes (channels) to modulate.
    dim
        Width of the gene embeddings.
    emb_channels
        Width of the time embedding.
    """

    def __init__(self, n_genes: int, *, dim: int, emb_channels: int):
        super().__init__()
        self.register_buffer("adjacency", torch.eye(n_genes))
        self.embedding = nn.Parameter(torch.randn(n_genes, dim) * 0.1)
        self.layers = nn.ModuleList([nn.Linear(dim, dim), nn.Linear(dim, dim)])
        self.time = nn.Linear(emb_channels, dim)
        self.film = nn.Linear(dim, 2)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def set_graph(self, adjacency: np.ndarray | torch.Tensor) -> None:
        """Use ``adjacency`` (from :func:`build_gene_graph`) as the gene graph; it is saved with the weights."""
        adjacency = torch.as_tensor(adjacency, dtype=torch.float32)
        if adjacency.shape != self.adjacency.shape:
            msg = f"The gene graph must be {tuple(self.adjacency.shape)}, got {tuple(adjacency.shape)}."
            raise ValueError(msg)
        self.adjacency.copy_(adjacency)

    def gene_codes(self, emb: torch.Tensor) -> torch.Tensor:
        """Per-sample, per-gene codes ``(batch, n_genes, dim)`` from the graph and the time embedding."""
        h = self.embedding
        for index, layer in enumerate(self.layers):
            h = self.adjacency @ layer(h)
            if index < len(self.layers) - 1:
                h = F.silu(h)
        return h[None] + self.time(F.silu(emb))[:, None]

    def forward(self, output: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """Modulate ``output`` ``(batch, n_genes, h, w)`` given the time embedding ``emb`` ``(batch, channels)``."""
        scale, shift = self.film(self.gene_codes(emb)).permute(0, 2, 1)[..., None, None].unbind(dim=1)
        return output * (1 + scale) + shift
