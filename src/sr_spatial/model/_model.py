"""DiffST: the conditional diffusion model with its standardisation, training, sampling, save and load."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm.auto import tqdm

from sr_spatial._groups import group_means
from sr_spatial._logging import ETA
from sr_spatial.model._cmam import Disentangler, disentangling_loss
from sr_spatial.model._config import ABLATIONS, ModelConfig, resolve_config
from sr_spatial.model._denoiser import UNet
from sr_spatial.model._diffusion import Schedule
from sr_spatial.model._gene_graph import build_gene_graph
from sr_spatial.model._histology import (
    HISTOLOGY_INPUTS,
    HistologyEncoder,
    cell_channels,
    histology_inputs,
    pretrain_encoder,
    spot_means,
)
from sr_spatial.model._precision import autocast
from sr_spatial.model._training import SceneTensors, load_checkpoint, save_checkpoint, train_network

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sr_spatial.model._scene import Scene

logger = logging.getLogger("sr_spatial")

__all__ = ["DiffST", "DiffSTNetwork", "resolve_device"]

WEIGHTS_FILE = "model.pt"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 2
ENCODER_CHECKPOINT = "encoder.pt"
TRAINING_CHECKPOINT = "training.pt"


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to :class:`torch.device`."""
    if isinstance(device, torch.device):
        return device
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        msg = f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps'."
        raise ValueError(msg) from err
    if resolved.type == "cuda" and not torch.cuda.is_available():
        msg = f"Device {device!r} was asked for but this PyTorch sees no CUDA GPU; use device='auto' or 'cpu'."
        raise ValueError(msg)
    if resolved.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        msg = f"Device {device!r} was asked for but Apple MPS is not available; use device='auto' or 'cpu'."
        raise ValueError(msg)
    return resolved


def weights_checksum(state: dict[str, torch.Tensor], genes: Sequence[str]) -> str:
    """SHA-256 of the gene list (in channel order) and every tensor of ``state`` (names, dtypes, shapes, bytes)."""
    digest = hashlib.sha256(json.dumps(list(genes)).encode())
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def non_finite_weights(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` holding NaN or infinite values."""
    return [
        name for name, tensor in state.items() if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]


def _nonnegative_ridge(design: np.ndarray, target: np.ndarray, *, alpha: float = 1e-2) -> np.ndarray:
    """Least squares with a light ridge on all but the last (offset) column, and non-negative weights.

    A negative weight on the measurement or on the histology has no physical reading; such a column is
    dropped and the rest refitted.
    """
    keep = list(range(design.shape[1]))
    while True:
        sub = design[:, keep]
        penalty = np.diag([alpha * len(target)] * (len(keep) - 1) + [0.0])
        weights = np.linalg.solve(sub.T @ sub + penalty, sub.T @ target)
        negative = [k for k, w in zip(keep[:-1], weights[:-1], strict=True) if w < 0]
        if not negative:
            out = np.zeros(design.shape[1])
            out[keep] = weights
            return out
        keep.remove(min(negative, key=lambda k: weights[keep.index(k)]))


def _split_spots(n_spots: int, seed: int, *, held_out: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Spots the encoder learns from, and the held-out spots the blend weights are fitted on.

    Fitting the blend on spots the encoder has seen would overrate the histology, which can fit them by heart.
    Slides with fewer than 20 spots are too small to hold any out; all spots then serve both.
    """
    order = np.random.default_rng(seed).permutation(n_spots)
    n_held = int(round(held_out * n_spots)) if n_spots >= 20 else 0
    if n_held == 0:
        return order, order
    return np.sort(order[n_held:]), np.sort(order[:n_held])


def _held_out_bins(shape: tuple[int, int], seed: int, *, block: int = 4, held_out: float = 0.2) -> np.ndarray:
    """Bins whose target the denoiser never learns from: a random ``held_out`` share of ``block``-wide squares.

    Whole squares rather than single bins, so a held-out bin's neighbours are mostly held out too and the
    denoiser cannot fill it in from targets it has learned next to it.
    """
    rows, cols = -(-shape[0] // block), -(-shape[1] // block)
    squares = np.random.default_rng([int(seed), 1]).random((rows, cols)) < held_out
    return np.kron(squares, np.ones((block, block), dtype=bool))[: shape[0], : shape[1]]


def _within_measurement(values: np.ndarray, owner: np.ndarray | None, mask: np.ndarray) -> np.ndarray:
    """``values`` minus their mean over the bins of the same measurement, 0 outside ``mask``."""
    out = np.zeros_like(values)
    if owner is None or not mask.any():
        return out
    cells = owner[mask]
    in_tissue = values[:, mask]
    cell_means, _ = group_means(in_tissue, cells, cells.max() + 1)
    out[:, mask] = in_tissue - cell_means[:, cells]
    return out


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start of each tile along an axis of ``length`` bins: tiles of ``tile`` overlapping by at least ``overlap``."""
    if length <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, length - tile, stride))
    return [*starts, length - tile]


#: Held-out training bins needed to fit the residual's weight; on smaller slides it stays 1.
MIN_HELD_OUT_BINS = 20
#: Draws averaged when fitting the residual's weight: :func:`sr_spatial.tl.superresolve`'s default ``n_samples``.
CALIBRATION_DRAWS = 8

#: Side, in bins, of the cells the initial noise is drawn in: each cell's noise depends only on the seed, the
#: draw and the cell's position, so any region of a slide (a block, a tile) gets the same noise on its own.
NOISE_CELL = 32


def positional_noise(
    seed: int, n_samples: int, n_genes: int, *, top: int, left: int, height: int, width: int
) -> torch.Tensor:
    """Standard normal noise ``(n_samples, n_genes, height, width)`` for the bins at ``top, left`` of a slide."""
    if top < 0 or left < 0:
        msg = f"`offset` must be non-negative (row, column) of the scene in its slide, got ({top}, {left})."
        raise ValueError(msg)
    out = np.empty((n_samples, n_genes, height, width), dtype=np.float32)
    rows = range(top // NOISE_CELL, (top + height - 1) // NOISE_CELL + 1)
    cols = range(left // NOISE_CELL, (left + width - 1) // NOISE_CELL + 1)
    for draw in range(n_samples):
        for ci in rows:
            for cj in cols:
                cell = np.random.default_rng([int(seed), draw, ci, cj]).standard_normal(
                    (n_genes, NOISE_CELL, NOISE_CELL), dtype=np.float32
                )
                y0, x0 = ci * NOISE_CELL, cj * NOISE_CELL
                ys = slice(max(top, y0), min(top + height, y0 + NOISE_CELL))
                xs = slice(max(left, x0), min(left + width, x0 + NOISE_CELL))
                out[draw, :, ys.start - top : ys.stop - top, xs.start - left : xs.stop - left] = cell[
                    :, ys.start - y0 : ys.stop - y0, xs.start - x0 : xs.stop - x0
                ]
    return torch.from_numpy(out)


def _blend_ramp(size: int, overlap: int) -> np.ndarray:
    """Weights along a tile: rising linearly over ``overlap`` bins at each edge, so overlaps cross-fade."""
    position = np.arange(size, dtype=np.float32)
    return np.minimum(1.0, np.minimum(position + 1, size - position) / (overlap + 1)).astype(np.float32)


class DiffSTNetwork(nn.Module):
    """Histology encoder, disentangling network and UNet denoiser; statistics and gene graph as saved buffers.

    The denoiser sees ``x_t`` and, per bin: the nearest-spot and smooth measurement, the histology encoder's
    expression estimate, that estimate minus its mean over the bin's measurement (what histology adds within a
    spot), and the tissue mask; all standardised per gene. With CMAM, a disentangling network encodes the
    measurement and the cell-level histology (pooled to bins) into shared and specific features that modulate
    every UNet resolution; with cross-attention, the bins attend to the cell-level histology and the tissue
    around them; with the gene graph, co-expressed genes modulate each other's channels.
    """

    def __init__(self, n_genes: int, config: ModelConfig):
        super().__init__()
        self.n_genes = n_genes
        self.encoder = HistologyEncoder(width=config.histology_width, n_genes=n_genes)
        cells = cell_channels(config.histology_width)
        self.disentangler = (
            Disentangler(
                expression_channels=2 * n_genes + 1,
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
            in_channels=5 * n_genes + 1,
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
        # Per gene: how much of the draws' mean residual the posterior mean keeps (see DiffST._fit_residual_weight).
        self.register_buffer("residual_weight", torch.ones(n_genes))
        # Per gene: weights of the smooth measurement and of the histology estimate in the base map, and offset.
        self.register_buffer("blend", torch.tensor([[1.0, 0.0, 0.0]]).repeat(n_genes, 1))
        self.register_buffer("histology_mean", torch.zeros(HISTOLOGY_INPUTS))
        self.register_buffer("histology_std", torch.ones(HISTOLOGY_INPUTS))
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

        ``cond`` is ``(b, 5 * n_genes + 1, h, w)`` (see :meth:`DiffST._inputs`), ``cells`` the standardised
        cell-level histology ``(b, cell_channels, 2h, 2w)``, needed when :attr:`needs_cells`.
        """
        if self.needs_cells and cells is None:
            msg = "This network reads cell-level histology features; pass `cells`."
            raise ValueError(msg)
        features = None
        if self.disentangler is not None:
            g = self.n_genes
            expression = torch.cat([cond[:, : 2 * g], cond[:, -1:]], dim=1)
            histology = torch.cat([F.avg_pool2d(cells, 2), cond[:, 2 * g : 4 * g]], dim=1)
            features = self.disentangler(expression, histology)
        output = self.unet(torch.cat([x_t, cond], dim=1), t, features=features, cells=cells)
        if mask is None:
            return output
        aux = disentangling_loss(features, mask) if features is not None else output.new_zeros(())
        return output, aux


class DiffST:
    """Histology-guided conditional diffusion model for spatial transcriptomics super-resolution.

    A histology encoder, fitted so its per-pixel expression averages to each spot, estimates expression from the
    H&E; a per-gene blend of that estimate and the smooth measurement is the base map; a UNet denoiser generates
    the residual of all ``n_genes`` maps over it, conditioned on the measurement and the histology estimate.
    Train it with :meth:`train` (usually through :func:`sr_spatial.tl.train`), draw maps with :meth:`sample`,
    keep it with :meth:`save` / :meth:`load`.

    Parameters
    ----------
    genes
        Genes the model generates, in channel order.
    config
        A preset name (``"tiny"``, ``"base"``), a :class:`~sr_spatial.model.ModelConfig` or a dict.
    scale
        The super-resolution factor the model is trained for.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), or a torch device.
    seed
        Seeds weight initialisation and training.
    """

    def __init__(
        self,
        genes: Sequence[str],
        *,
        config: str | ModelConfig | dict | None = "base",
        scale: int = 4,
        device: str | torch.device = "auto",
        seed: int = 0,
    ):
        genes = [str(g) for g in genes]
        if not genes:
            msg = "A model needs at least one gene."
            raise ValueError(msg)
        if len(set(genes)) != len(genes):
            msg = "Gene names must be unique."
            raise ValueError(msg)
        self.genes = genes
        self.config = resolve_config(config)
        self.scale = int(scale)
        self.seed = int(seed)
        self.device = resolve_device(device)
        self.schedule = Schedule(self.config.timesteps, prediction=self.config.prediction)
        torch.manual_seed(self.seed)
        self.network = DiffSTNetwork(len(genes), self.config).to(self.device)
        self.is_trained = False
        self.history: dict[str, list[float]] = {}

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        return f"DiffST({len(self.genes)} genes, scale={self.scale}, {state}, device={self.device.type})"

    # --- inputs --------------------------------------------------------------------------------------------
    def _inputs(
        self, scene: Scene, maps: tuple[np.ndarray, np.ndarray | None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
        """The denoiser's condition, the standardised cell-level histology, and the base map.

        The condition is ``(5 * n_genes + 1, h, w)``; the cell-level features ``(cell_channels, 2h, 2w)`` or
        ``None`` when no module reads them. The base blends, per gene, the smooth measurement and the histology
        estimate with the weights of :meth:`_fit_blend`; the denoiser generates the remaining residual, so an
        untrained denoiser returns it. ``maps`` is the scene's :meth:`_histology_maps` when already computed.
        """
        mean = self.network.gene_mean.cpu().numpy()[:, None, None]
        std = self.network.gene_std.cpu().numpy()[:, None, None]
        blend = self.network.blend.cpu().numpy()[:, :, None, None]
        mask = scene.mask.astype(np.float32)
        histology, cells = self._histology_maps(scene) if maps is None else maps
        detail = _within_measurement(histology, scene.owner, scene.mask)
        standardised = [(m - mean) / std * mask for m in (scene.nearest, scene.smooth, histology)]
        cond = np.concatenate([*standardised, detail / std, mask[None]]).astype(np.float32)
        base = (blend[:, 0] * scene.smooth + blend[:, 1] * histology + blend[:, 2]) * mask
        if cells is not None:
            cell_mean = self.network.cell_mean.cpu().numpy()[:, None, None]
            cell_std = self.network.cell_std.cpu().numpy()[:, None, None]
            cells = torch.from_numpy(((cells - cell_mean) / cell_std).astype(np.float32))
        return torch.from_numpy(cond), cells, base.astype(np.float32)

    def histology_expression(self, scene: Scene) -> np.ndarray:
        """The histology encoder's log-normalised expression estimate per bin, ``(n_genes, height, width)``."""
        return self._histology_maps(scene, cells=False)[0]

    @torch.no_grad()
    def _histology_maps(self, scene: Scene, *, cells: bool | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Per-bin expression estimate and (unstandardised) cell-level features of ``scene``'s histology.

        ``cells`` defaults to whether the network reads them.
        """
        if cells is None:
            cells = self.network.needs_cells
        encoder = self.network.encoder.eval().to(self.device)
        inputs = self._histology(scene)
        k = scene.px_per_bin
        # Rows of bins at a time bound the memory of the full-resolution activations on large slides.
        rows = max(1, 2**21 // max(inputs.shape[-1] * k * self.config.histology_width, 1))
        expression, features = [], []
        for start in range(0, scene.shape[0], rows):
            chunk = inputs[:, start * k : (start + rows) * k][None].to(self.device)
            bins, cell_features = encoder.bin_maps(chunk, k, cells=cells)
            expression.append(bins[0].float().cpu())
            if cells:
                features.append(cell_features[0].float().cpu())
        return (
            torch.cat(expression, dim=1).numpy(),
            torch.cat(features, dim=1).numpy() if cells else None,
        )

    def _histology(self, scene: Scene) -> torch.Tensor:
        inputs = torch.from_numpy(histology_inputs(scene.histology))
        mean = self.network.histology_mean.cpu()[:, None, None]
        std = self.network.histology_std.cpu()[:, None, None]
        return (inputs - mean) / std

    def _fit_statistics(self, scenes: Sequence[Scene], reference: Scene) -> None:
        values = np.concatenate([s.target[:, s.mask] for s in scenes], axis=1)
        inputs = histology_inputs(reference.histology).reshape(HISTOLOGY_INPUTS, -1)
        net = self.network
        net.gene_mean.copy_(torch.from_numpy(values.mean(axis=1)))
        net.gene_std.copy_(torch.from_numpy(np.maximum(values.std(axis=1), 1e-3)))
        net.histology_mean.copy_(torch.from_numpy(inputs.mean(axis=1)))
        net.histology_std.copy_(torch.from_numpy(np.maximum(inputs.std(axis=1), 1e-3)))

    def _fit_blend(self, reference: Scene, held_out: np.ndarray, histology: np.ndarray) -> None:
        """Per gene, how to weigh the measurement around a place against the H&E at it.

        On spots the encoder never saw, each spot's value is regressed (least squares) on its neighbours' mean
        (``reference.spot_context``) and on the histology estimate over its disk. Genes the H&E predicts get
        histology weight; genes only the measurement knows (e.g. smooth gradients) get measurement weight.
        ``histology`` is the reference's :meth:`histology_expression`.
        """
        n_genes = len(self.genes)
        at_spots = spot_means(histology, reference.spot_pixels, len(reference.spot_values), reference.px_per_bin)
        blend = np.zeros((n_genes, 3))
        for gene in range(n_genes):
            design = np.column_stack(
                [reference.spot_context[held_out, gene], at_spots[held_out, gene], np.ones(len(held_out))]
            )
            blend[gene] = _nonnegative_ridge(design, reference.spot_values[held_out, gene])
        self.network.blend.copy_(torch.from_numpy(blend))

    def _fit_residual_scale(self, residuals: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> None:
        std = self.network.gene_std.cpu().numpy()
        pooled = np.concatenate([r[:, m] for r, m in zip(residuals, masks, strict=True)], axis=1) / std[:, None]
        # A floor keeps genes the base already explains from being blown up into noise.
        self.network.residual_scale.copy_(torch.from_numpy(np.maximum(pooled.std(axis=1), 0.05)))

    # --- training ------------------------------------------------------------------------------------------
    def train(
        self,
        scenes: Sequence[Scene],
        *,
        reference: Scene,
        steps: int | None = None,
        checkpoint_dir: str | Path | None = None,
        checkpoint_every: int = 100,
        callback: Callable[[int, dict[str, list[float]]], None] | None = None,
        show_progress_bar: bool = True,
    ) -> DiffST:
        """Fit the histology encoder to the spots, then the denoiser to generate each scene's ``target``.

        Parameters
        ----------
        scenes
            Training pairs with ``target`` set.
        reference
            The slide at the output resolution with ``spot_pixels`` and ``spot_values`` set: the encoder learns to
            reproduce each spot from the H&E under it.
        steps
            Optimiser steps; default ``config.train_steps``.
        checkpoint_dir
            A directory to keep the training state in (the fitted encoder, then the denoiser's state every
            ``checkpoint_every`` steps). Training interrupted there goes on from its last checkpoint when called
            again with the same directory and data, to the same model as an uninterrupted run.
        checkpoint_every
            Denoiser steps between checkpoints.
        callback
            Called as ``callback(step, losses)`` after every denoiser step (e.g. to log or plot the losses).
        show_progress_bar
            Show a tqdm bar.

        Returns
        -------
        The model itself, trained.
        """
        scenes = list(scenes)
        if not scenes or any(s.target is None for s in scenes):
            msg = "Training needs at least one scene, each with a `target`."
            raise ValueError(msg)
        if reference.spot_pixels is None or reference.spot_values is None or reference.spot_context is None:
            msg = "The reference scene needs `spot_pixels`, `spot_values` and `spot_context` to fit the encoder."
            raise ValueError(msg)
        if any(s.nearest.shape[0] != len(self.genes) for s in [*scenes, reference]):
            msg = f"Scenes must have {len(self.genes)} genes, like the model."
            raise ValueError(msg)
        cfg = self.config
        steps = cfg.train_steps if steps is None else int(steps)
        checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        fingerprint = self._fingerprint(scenes, reference, steps)
        encoder_file = checkpoint_dir / ENCODER_CHECKPOINT if checkpoint_dir is not None else None
        resumed = encoder_file is not None and encoder_file.is_file()
        if resumed:
            state = load_checkpoint(encoder_file, fingerprint)
            self.network.load_state_dict(state["network"])
            self.network.encoder.requires_grad_(False)
            encoder_losses = list(state["encoder_losses"])
        else:
            encoder_losses = self._fit_encoder(scenes, reference, show_progress_bar=show_progress_bar)
        # Scenes from shifted poolings of one slide share their H&E: run the encoder once per image.
        maps = {}
        for s in [reference, *scenes]:
            if id(s.histology) not in maps:
                maps[id(s.histology)] = self._histology_maps(s)
        reference_histology, reference_cells = maps[id(reference.histology)]
        if not resumed:
            held_out = _split_spots(len(reference.spot_values), self.seed)[1]
            self._fit_blend(reference, held_out, reference_histology)
        if reference_cells is not None:
            flat = reference_cells.reshape(len(reference_cells), -1)
            self.network.cell_mean.copy_(torch.from_numpy(flat.mean(axis=1)))
            self.network.cell_std.copy_(torch.from_numpy(np.maximum(flat.std(axis=1), 1e-3)))
        inputs = [self._inputs(s, maps[id(s.histology)]) for s in scenes]
        residuals = [(s.target - base) * s.mask for s, (*_, base) in zip(scenes, inputs, strict=True)]
        self._fit_residual_scale(residuals, [s.mask for s in scenes])
        if encoder_file is not None and not resumed:
            save_checkpoint(encoder_file, fingerprint, network=self.network.state_dict(), encoder_losses=encoder_losses)
        scale = (self.network.gene_std * self.network.residual_scale).cpu().numpy()[:, None, None]
        held = [_held_out_bins(s.shape, self.seed) & s.mask for s in scenes]
        if sum(int(h.sum()) for h in held) < MIN_HELD_OUT_BINS:
            held = [np.zeros_like(s.mask) for s in scenes]
        tensors = [
            SceneTensors(
                cond,
                torch.from_numpy(r / scale),
                # The loss skips the held-out bins, so the residual's weight can be fitted on them honestly.
                torch.from_numpy((s.mask & ~h).astype(np.float32)),
                cfg.patch_bins,
                cells=cells,
            )
            for s, (cond, cells, _), r, h in zip(scenes, inputs, residuals, held, strict=True)
        ]
        ema, losses = train_network(
            self.network,
            tensors,
            self.schedule,
            steps=steps,
            batch_size=cfg.batch_size,
            patch_bins=cfg.patch_bins,
            learning_rate=cfg.learning_rate,
            ema_decay=cfg.ema_decay,
            disentangle_weight=cfg.disentangle_weight,
            precision=cfg.precision,
            compile=cfg.compile,
            device=self.device,
            seed=self.seed,
            checkpoint=checkpoint_dir / TRAINING_CHECKPOINT if checkpoint_dir is not None else None,
            checkpoint_every=checkpoint_every,
            fingerprint=fingerprint,
            callback=callback,
            show_progress_bar=show_progress_bar,
        )
        self.network = ema
        self.history = {"encoder": encoder_losses, **losses}
        self.check_finite()
        self.is_trained = True
        self._fit_residual_weight(scenes, [base for *_, base in inputs], held)
        return self

    def _fit_residual_weight(self, scenes: Sequence[Scene], bases: Sequence[np.ndarray], held: Sequence[np.ndarray]):
        """Per gene, the share of the draws' mean residual that predicts the target on held-out bins.

        The posterior mean is ``base + weight * (mean of the draws - base)``: where the generated residual is
        mostly noise, or does not carry over to bins the denoiser never learned, averaging a few draws leaves
        most of that noise in, and the least-squares weight (clipped to ``[0, 1]``) shrinks it toward the base.
        Fitted on the mean of :data:`CALIBRATION_DRAWS` draws, the number :func:`sr_spatial.tl.superresolve`
        averages by default. Without held-out bins (tiny slides) the weight stays 1.
        """
        numerator = np.zeros(len(self.genes))
        denominator = np.zeros(len(self.genes))
        for scene, base, bins in zip(scenes, bases, held, strict=True):
            if not bins.any():
                continue
            draws = self.sample(scene, n_samples=CALIBRATION_DRAWS, seed=self.seed, show_progress_bar=False)
            generated = (draws.mean(axis=0) - base)[:, bins]
            wanted = (scene.target - base)[:, bins]
            numerator += (generated * wanted).sum(axis=1)
            denominator += (generated**2).sum(axis=1)
        if not denominator.any():
            return
        weight = np.clip(numerator / np.maximum(denominator, 1e-12), 0.0, 1.0)
        self.network.residual_weight.copy_(torch.from_numpy(weight.astype(np.float32)))

    def _fingerprint(self, scenes: Sequence[Scene], reference: Scene, steps: int) -> str:
        """What a checkpoint must match: settings, genes and (a digest of) the training data."""
        digest = hashlib.sha256()
        for scene in [reference, *scenes]:
            for array in (scene.nearest, scene.target, scene.spot_values):
                if array is not None:
                    digest.update(np.ascontiguousarray(array).tobytes())
        settings = {"config": self.config.to_dict(), "genes": self.genes, "seed": self.seed, "steps": steps}
        return json.dumps(settings, sort_keys=True) + digest.hexdigest()

    def _fit_encoder(self, scenes: Sequence[Scene], reference: Scene, *, show_progress_bar: bool) -> list[float]:
        """Fit the statistics, the histology encoder (on the spots not held out) and the gene graph."""
        cfg = self.config
        self._fit_statistics(scenes, reference)
        torch.manual_seed(self.seed)
        learn, _ = _split_spots(len(reference.spot_values), self.seed)
        encoder_losses = pretrain_encoder(
            self.network.encoder,
            self._histology(reference),
            reference.spot_pixels,
            reference.spot_values,
            steps=cfg.encoder_steps,
            batch_size=cfg.encoder_batch_size,
            learning_rate=3e-3,
            device=self.device,
            seed=self.seed,
            spots=learn,
            show_progress_bar=show_progress_bar,
        )
        if not np.isfinite(encoder_losses).all():
            msg = (
                f"Fitting the histology encoder diverged (its loss became {encoder_losses[-1]}). Check that the H&E "
                "holds finite values, or retrain with another `seed`."
            )
            raise FloatingPointError(msg)
        self.network.encoder.requires_grad_(False)
        if self.network.unet.gene_graph is not None:
            self.network.unet.gene_graph.set_graph(build_gene_graph(reference.spot_values, k=cfg.gene_graph_k))
        return encoder_losses

    # --- sampling ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(
        self,
        scene: Scene,
        *,
        n_samples: int = 4,
        steps: int | None = None,
        eta: float = 0.0,
        seed: int = 0,
        offset: tuple[int, int] = (0, 0),
        return_mean: bool = False,
        show_progress_bar: bool = True,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Draw high-resolution expression maps for ``scene``.

        Parameters
        ----------
        scene
            The measurement and histology; its ``px_per_bin`` must equal ``config.px_per_bin``.
        n_samples
            Independent draws.
        steps
            Sampling steps; default ``config.sampling_steps``. With ``eta=1`` and ``steps=config.timesteps``
            this is ancestral DDPM sampling.
        eta
            DDIM stochasticity: 0 is deterministic given the initial noise.
        seed
            Seeds the initial noise (and the noise added when ``eta > 0``).
        offset
            Row and column of the scene's first bin in the slide it was cut from. The initial noise is drawn per
            bin position, so blocks of one slide sampled separately get the noise the whole slide would.
        return_mean
            Also return the posterior mean: the base map plus the draws' mean residual, shrunk per gene by the
            weight fitted on held-out training bins (the residual's noise does not average away over a few
            draws, and where it predicts nothing the mean stays at the base).
        show_progress_bar
            Show a tqdm bar over denoising steps.

        Returns
        -------
        Log-normalised expression, shape ``(n_samples, n_genes, height, width)``; 0 outside ``scene.mask``.
        With ``return_mean``, also the posterior mean ``(n_genes, height, width)``.
        """
        if not self.is_trained:
            msg = "The model is not trained; call `train` first or load a trained model with `DiffST.load`."
            raise RuntimeError(msg)
        if n_samples < 1:
            msg = f"`n_samples` must be at least 1, got {n_samples}."
            raise ValueError(msg)
        if scene.nearest.shape[0] != len(self.genes):
            msg = f"The scene has {scene.nearest.shape[0]} genes; the model generates {len(self.genes)}."
            raise ValueError(msg)
        steps = self.config.sampling_steps if steps is None else int(steps)
        cfg = self.config
        net = self.network.eval().to(self.device)
        denoiser = torch.compile(net) if cfg.compile else net
        height, width = scene.shape
        multiple = 2 ** (len(cfg.channel_mult) - 1)
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        cond, cells, base = self._inputs(scene)
        cond = F.pad(cond, (0, pad_w, 0, pad_h))
        if cells is not None:
            cells = F.pad(cells, (0, 2 * pad_w, 0, 2 * pad_h))
        generator = torch.Generator().manual_seed(int(seed))
        # Noise for the whole scene, cropped per tile, so overlapping tiles start from the same noise.
        noise = positional_noise(
            seed, n_samples, len(self.genes), top=offset[0], left=offset[1], height=height + pad_h, width=width + pad_w
        )
        tiles = [
            (top, left)
            for top in _tile_starts(height + pad_h, cfg.tile_bins, cfg.tile_overlap)
            for left in _tile_starts(width + pad_w, cfg.tile_bins, cfg.tile_overlap)
        ]
        tile_h, tile_w = min(cfg.tile_bins, height + pad_h), min(cfg.tile_bins, width + pad_w)
        ramp = torch.from_numpy(_blend_ramp(tile_h, cfg.tile_overlap)[:, None] * _blend_ramp(tile_w, cfg.tile_overlap))
        jobs = [(tile, draw) for tile in tiles for draw in range(n_samples)]
        per_batch = max(1, min(len(jobs), 2**22 // max(tile_h * tile_w * cond.shape[0], 1)))
        batches = [jobs[i : i + per_batch] for i in range(0, len(jobs), per_batch)]
        total = torch.zeros(noise.shape)
        weight = torch.zeros(noise.shape[-2:])
        bar = tqdm(total=steps * len(batches), desc="Sampling", unit="step", disable=not show_progress_bar)
        timer = ETA(f"Sampling {n_samples} draws", steps * len(batches))

        def progress():
            bar.update()
            timer.step()

        for batch in batches:

            def crop(a, top, left, factor=1):
                return a[..., factor * top : factor * (top + tile_h), factor * left : factor * (left + tile_w)]

            x = torch.stack([crop(noise[draw], *tile) for tile, draw in batch]).to(self.device)
            cond_batch = torch.stack([crop(cond, *tile) for tile, _ in batch]).to(self.device)
            cells_batch = (
                torch.stack([crop(cells, *tile, factor=2) for tile, _ in batch]).to(self.device)
                if cells is not None
                else None
            )

            def denoise(x_t, t, cond_batch=cond_batch, cells_batch=cells_batch):
                with autocast(self.device, cfg.precision):
                    return denoiser(x_t, t, cond_batch, cells_batch)

            x0 = self.schedule.sample(denoise, x, steps=steps, eta=eta, generator=generator, progress=progress)
            for ((top, left), draw), drawn in zip(batch, x0.float().cpu(), strict=True):
                crop(total[draw], top, left).add_(drawn * ramp)
                if draw == 0:
                    crop(weight, top, left).add_(ramp)
        bar.close()
        residual = (total / weight)[..., :height, :width].numpy()
        std = self.network.gene_std.cpu().numpy()[None, :, None, None]
        scale = self.network.residual_scale.cpu().numpy()[None, :, None, None]
        maps = (base[None] + residual * scale * std) * scene.mask[None, None]
        if not return_mean:
            return maps.astype(np.float32)
        weight = self.network.residual_weight.cpu().numpy()[:, None, None]
        mean = (base + weight * (maps.mean(axis=0) - base)) * scene.mask
        return maps.astype(np.float32), mean.astype(np.float32)

    # --- persistence ---------------------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save weights (``model.pt``), configuration, genes and package version (``config.json``) in a directory.

        Parameters
        ----------
        path
            Directory to create.
        overwrite
            Replace the model files if the directory already holds a model.

        Returns
        -------
        The directory.
        """
        from sr_spatial import __version__

        path = Path(path)
        if (path / WEIGHTS_FILE).exists() and not overwrite:
            msg = f"{path} already holds a model; pass `overwrite=True` to replace it."
            raise FileExistsError(msg)
        path.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.network.state_dict().items()}
        torch.save(state, path / WEIGHTS_FILE)
        meta = {
            "format_version": FORMAT_VERSION,
            "sr_spatial_version": __version__,
            "config": self.config.to_dict(),
            "genes": self.genes,
            "scale": self.scale,
            "seed": self.seed,
            "is_trained": self.is_trained,
            # Verified on load: a reordered gene list or changed weights would mislabel channels silently.
            "checksum": weights_checksum(state, self.genes),
        }
        (path / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        return path

    @classmethod
    def load(
        cls, path: str | Path, *, device: str | torch.device = "auto", genes: Sequence[str] | None = None
    ) -> DiffST:
        """Load a model saved with :meth:`save`.

        Parameters
        ----------
        path
            The model directory.
        device
            Where to put the model; ``"auto"`` as in :class:`DiffST`.
        genes
            If given, check the model generates exactly these genes and say which differ.

        Returns
        -------
        The model.
        """
        path = Path(path)
        config_file, weights_file = path / CONFIG_FILE, path / WEIGHTS_FILE
        if not config_file.is_file() or not weights_file.is_file():
            msg = (
                f"{path} is not a saved sr_spatial model (needs {CONFIG_FILE} and {WEIGHTS_FILE}). "
                "Save one with `DiffST.save` or train with `sr_spatial.tl.train`."
            )
            raise FileNotFoundError(msg)
        try:
            meta = json.loads(config_file.read_text())
            state = torch.load(weights_file, map_location="cpu", weights_only=True)
        except Exception as err:
            msg = f"Could not read the model in {path} ({type(err).__name__}: {err}). Re-save or re-train it."
            raise ValueError(msg) from err
        _check_saved_meta(meta, path)
        if meta.get("format_version", 0) > FORMAT_VERSION:
            msg = (
                f"The model in {path} was saved by sr_spatial {meta.get('sr_spatial_version')} in a newer format; "
                "upgrade sr_spatial to load it."
            )
            raise ValueError(msg)
        config = meta["config"]
        if meta.get("format_version", 1) < 2:
            # Models saved before the paper's modules existed are the first version: all modules off.
            config = {**ABLATIONS["first_version"], **config}
        _check_saved_weights(state, meta, path)
        model = cls(meta["genes"], config=config, scale=meta["scale"], device=device, seed=meta["seed"])
        # Models saved before the residual's weight was fitted keep the mean of their draws.
        state.setdefault("residual_weight", torch.ones(len(meta["genes"])))
        try:
            model.network.load_state_dict(state)
        except RuntimeError as err:
            msg = f"The weights in {path} do not fit its configuration ({err}). Re-save or re-train the model."
            raise ValueError(msg) from err
        model.network.to(model.device).eval()
        model.is_trained = bool(meta.get("is_trained", True))
        if genes is not None:
            model.check_genes(genes)
        return model

    def check_finite(self) -> None:
        """Raise if any weight or statistic is NaN or infinite, e.g. after a diverged training run."""
        bad = non_finite_weights(self.network.state_dict())
        if bad:
            msg = (
                f"The model holds NaN or infinite weights ({bad[:3]}), e.g. from a training run that diverged. "
                "Retrain it with a smaller `learning_rate` in `config`, or load an intact copy."
            )
            raise ValueError(msg)

    def check_genes(self, genes: Sequence[str]) -> None:
        """Raise a clear error unless ``genes`` are exactly the model's genes, in order."""
        genes = [str(g) for g in genes]
        if genes == self.genes:
            return
        missing = [g for g in self.genes if g not in set(genes)]
        extra = [g for g in genes if g not in set(self.genes)]
        if not missing and not extra:
            msg = "The genes match the model's but in another order; pass them in the model's order (`model.genes`)."
        else:
            msg = (
                f"The model was trained on {len(self.genes)} genes that differ from the {len(genes)} requested: "
                f"missing from the data {missing[:10]}, not in the model {extra[:10]}. Pass `genes=model.genes` "
                "or train a model on these genes."
            )
        raise ValueError(msg)


def _check_saved_meta(meta, path: Path) -> None:
    """Refuse a ``config.json`` that lacks what a model needs or holds values of the wrong type."""
    if not isinstance(meta, dict):
        msg = f"{path / CONFIG_FILE} does not hold a saved model's settings. Re-save or re-train the model."
        raise ValueError(msg)
    version = meta.get("format_version", 1)
    if not isinstance(version, int) or isinstance(version, bool):
        msg = (
            f"{path / CONFIG_FILE} has `format_version` {version!r}, not an integer; the file was edited or written "
            "by another program. Re-save the model with `DiffST.save`, or re-train it."
        )
        raise ValueError(msg)
    missing = [key for key in ("config", "genes", "scale", "seed") if key not in meta]
    if missing:
        msg = f"{path / CONFIG_FILE} lacks {missing}; it is not a complete saved model. Re-save or re-train it."
        raise ValueError(msg)
    genes = meta["genes"]
    if not isinstance(genes, list) or not genes or not all(isinstance(g, str) for g in genes):
        msg = f"{path / CONFIG_FILE} has no list of gene names under 'genes'. Re-save or re-train the model."
        raise ValueError(msg)


def _check_saved_weights(state: dict, meta: dict, path: Path) -> None:
    """Verify the checksum of the weights and gene list, and that every weight is finite."""
    expected = meta.get("checksum")
    if expected is None:
        logger.warning("The model in %s was saved without a checksum (before sr_spatial 0.2); not verified.", path)
    elif weights_checksum(state, meta["genes"]) != expected:
        msg = (
            f"The model in {path} does not match its checksum: {WEIGHTS_FILE} or the gene list in {CONFIG_FILE} "
            "changed after saving (e.g. genes reordered), so its channels would be mislabelled. Re-save the model "
            "from its DiffST with `model.save(path, overwrite=True)`, or re-train it."
        )
        raise ValueError(msg)
    bad = non_finite_weights(state)
    if bad:
        msg = (
            f"The model in {path} holds NaN or infinite weights ({bad[:3]}), e.g. saved from a training run that "
            "diverged. Retrain it with a smaller `learning_rate` in `config`."
        )
        raise ValueError(msg)
