"""DiffST: the user-facing model; its layers live in ``nn/``, ``module/``, ``train/`` and ``_persistence``."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from sr_spatial.core._device import resolve_device
from sr_spatial.diffusion._config import resolve_config
from sr_spatial.diffusion._io import check_genes, load_model, refuse_non_finite, save_model
from sr_spatial.diffusion._schedule import Schedule
from sr_spatial.diffusion.module._condition import condition
from sr_spatial.diffusion.module._network import DiffSTNetwork
from sr_spatial.diffusion.module._sampler import sample
from sr_spatial.diffusion.nn._registry import build_encoder
from sr_spatial.diffusion.train._checkpoint import check_checkpoint_dir
from sr_spatial.diffusion.train._fit import train_model

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sr_spatial.core._scene import Scene
    from sr_spatial.diffusion._config import ModelConfig

__all__ = ["DiffST"]


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
        encoder = build_encoder(self.config.histology_encoder, n_genes=len(genes), width=self.config.histology_width)
        self.network = DiffSTNetwork(len(genes), self.config, encoder=encoder).to(self.device)
        self.is_trained = False
        #: Trained on reference slides for a target (``tl.train(..., target=...)``): checked on each slide it is
        #: applied to (the guard), its detail shrunk per gene where that slide's own spots contradict it.
        self.trained_on_references = False
        self.history: dict[str, list[float]] = {}

    def __repr__(self) -> str:
        state = "trained" if self.is_trained else "untrained"
        return f"DiffST({len(self.genes)} genes, scale={self.scale}, {state}, device={self.device.type})"

    # --- inputs --------------------------------------------------------------------------------------------
    def _inputs(
        self, scene: Scene, maps: tuple[np.ndarray, np.ndarray | None] | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None, np.ndarray]:
        """The denoiser's condition, the cell-level histology and the base map (see ``module._condition``)."""
        return condition(self, scene, maps)

    def base_map(self, scene: Scene) -> np.ndarray:
        """The deterministic base map the denoiser generates the residual around, ``(n_genes, h, w)``.

        The per-gene blend of the measurement and the histology encoder's estimate (or a histology predictor's map,
        for a model trained with ``histology_base``), before any draw; not projected onto the spots.
        """
        return self._inputs(scene)[2]

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
        if checkpoint_dir is not None:
            check_checkpoint_dir(checkpoint_dir)
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
        train_model(
            self,
            scenes,
            reference=reference,
            steps=self.config.train_steps if steps is None else int(steps),
            checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
            checkpoint_every=checkpoint_every,
            callback=callback,
            show_progress_bar=show_progress_bar,
        )
        return self

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
        return sample(
            self,
            scene,
            n_samples=n_samples,
            steps=self.config.sampling_steps if steps is None else int(steps),
            eta=eta,
            seed=seed,
            offset=offset,
            return_mean=return_mean,
            show_progress_bar=show_progress_bar,
        )

    # --- persistence ---------------------------------------------------------------------------------------
    def save(self, path: str | Path, *, overwrite: bool = False) -> Path:
        """Save weights (``model.pt``), configuration, genes and package version (``config.json``) in a directory.

        Parameters
        ----------
        path
            Directory to create (or an existing one without a ``model.pt`` or ``config.json``).
        overwrite
            Replace ``model.pt`` and ``config.json`` if the directory already holds them; without it, either file
            present (a model's, or a file of the same name the user put there) is never replaced.

        Returns
        -------
        The directory.
        """
        from sr_spatial._version import __version__

        return save_model(self, path, scale=self.scale, version=__version__, overwrite=overwrite)

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
        return load_model(cls, path, device=device, genes=genes)

    def check_genes(self, genes: Sequence[str]) -> None:
        """Raise a clear error unless ``genes`` are exactly the model's genes, in order."""
        check_genes(self.genes, genes)

    def check_finite(self) -> None:
        """Raise if any weight or statistic is NaN or infinite, e.g. after a diverged training run."""
        refuse_non_finite(self.network.state_dict())
