"""Features from an image encoder: a pretrained pathology model by timm name, or any torch module or callable."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import numpy as np

from sr_spatial.features._base import HistologyFeatures

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch

logger = logging.getLogger("sr_spatial")

__all__ = ["EncoderFeatures", "load_timm_encoder"]

#: ImageNet statistics, which timm's pathology models (UNI, H-optimus-0) are normalised with too.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def load_timm_encoder(name: str, **kwargs) -> torch.nn.Module:
    """Create a timm model with pretrained weights and no classification head, or say what to do.

    ``name`` is a timm id such as ``"hf-hub:bioptimus/H-optimus-0"`` or ``"hf-hub:MahmoodLab/uni"``; gated
    models need the user's Hugging Face token (``huggingface-cli login``). ``kwargs`` go to
    :func:`timm.create_model` (e.g. ``pretrained=False`` for a randomly initialised model, ``init_values``).
    """
    try:
        import timm
    except ImportError as err:
        msg = (
            f"Encoder {name!r} needs timm: `pip install 'sr-spatial[encoders]'` (or `pip install timm`), "
            "or pass a loaded torch module as `features`."
        )
        raise ImportError(msg) from err
    kwargs.setdefault("pretrained", True)
    kwargs.setdefault("num_classes", 0)
    try:
        return timm.create_model(name, **kwargs).eval()
    except Exception as err:
        msg = (
            f"Could not create encoder {name!r} with pretrained weights ({type(err).__name__}: {err}). Without "
            "network access, download the weights on a machine that has it (gated models also need "
            "`huggingface-cli login` and accepted terms), then pass the loaded module: "
            "`features=sr.features.EncoderFeatures(timm.create_model(name, pretrained=True, "
            "pretrained_cfg_overlay=dict(file='path/to/weights')), image_um_per_px=...)`."
        )
        raise RuntimeError(msg) from err


class EncoderFeatures(HistologyFeatures):
    """Embeddings of an image encoder on a patch around every bin, reduced by PCA.

    Each bin's patch is ``patch_px`` pixels wide at the encoder's own ``um_per_px``, centred on the bin, read
    from the H&E whose pixel size ``image_um_per_px`` the user states (a pathology encoder only works at the
    magnification it was trained at). The embeddings of all bins are reduced to ``n_components`` principal
    components, so a light model on top sees few, dense features.

    Parameters
    ----------
    encoder
        A timm model id (loaded with pretrained weights by :func:`load_timm_encoder`), a :class:`torch.nn.Module`,
        or any callable mapping a float tensor ``(n, 3, patch_px, patch_px)`` (ImageNet-normalised) to
        ``(n, dim)`` embeddings.
    image_um_per_px
        Micrometres per full-resolution pixel of the slide's H&E (e.g. from the scanner's metadata).
    um_per_px
        The encoder's pixel size; 0.5 µm (20x) for UNI and H-optimus-0.
    patch_px
        The encoder's input size.
    n_components
        Principal components kept (at most the embedding size and the number of bins).
    batch_size
        Patches per forward pass.
    device
        ``"auto"`` (CUDA, then MPS, then CPU), or a torch device.
    """

    name = "encoder"

    def __init__(
        self,
        encoder: str | torch.nn.Module | Callable,
        *,
        image_um_per_px: float,
        um_per_px: float = 0.5,
        patch_px: int = 224,
        n_components: int = 32,
        batch_size: int = 64,
        device: str | torch.device = "auto",
    ) -> None:
        if image_um_per_px is None or not np.isfinite(image_um_per_px) or image_um_per_px <= 0:
            msg = (
                "`image_um_per_px` must be the H&E's positive pixel size in micrometres (from the scanner's "
                f"metadata; Visium full-resolution images are about 0.25-0.5 µm/px), got {image_um_per_px!r}."
            )
            raise ValueError(msg)
        if um_per_px <= 0 or patch_px < 8 or n_components < 1 or batch_size < 1:
            msg = "`um_per_px` must be positive, `patch_px` at least 8, `n_components` and `batch_size` positive."
            raise ValueError(msg)
        self.label = encoder if isinstance(encoder, str) else type(encoder).__name__
        self.encoder = load_timm_encoder(encoder) if isinstance(encoder, str) else encoder
        self.image_um_per_px = float(image_um_per_px)
        self.um_per_px = float(um_per_px)
        self.patch_px = int(patch_px)
        self.n_components = int(n_components)
        self.batch_size = int(batch_size)
        self.device = device
        self._bin_size_px = None

    def __repr__(self) -> str:
        return (
            f"EncoderFeatures({self.label!r}, image_um_per_px={self.image_um_per_px}, um_per_px={self.um_per_px}, "
            f"patch_px={self.patch_px}, n_components={self.n_components})"
        )

    fixed_resolution = True

    def px_per_bin(self, bin_size_px: float) -> int:
        """The bin's side in encoder pixels (at least 1)."""
        self._bin_size_px = float(bin_size_px)
        return max(int(round(bin_size_px * self.image_um_per_px / self.um_per_px)), 1)

    @property
    def context_bins(self) -> int:
        """Bins a patch reaches beyond its own bin on each side."""
        if self._bin_size_px is None:
            return 1
        k = self.px_per_bin(self._bin_size_px)
        return int(np.ceil((self.patch_px / 2) / k)) + 1

    def _embed(self, patches: torch.Tensor) -> np.ndarray:
        import torch

        from sr_spatial.core._device import resolve_device

        device = resolve_device(self.device)
        module = self.encoder
        if isinstance(module, torch.nn.Module):
            module = module.to(device).eval()
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        out = []
        with torch.no_grad():
            for start in range(0, len(patches), self.batch_size):
                batch = ((patches[start : start + self.batch_size] - mean) / std).to(device)
                embedding = module(batch)
                if isinstance(embedding, tuple | list):
                    embedding = embedding[0]
                out.append(embedding.float().reshape(len(batch), -1).cpu())
        return torch.cat(out).numpy()

    def bin_features(self, rgb: np.ndarray, *, px_per_bin: int) -> np.ndarray:
        """Embeddings of a patch centred on every bin, ``(dim, height, width)``."""
        import torch

        _, height_px, width_px = rgb.shape
        height, width = height_px // px_per_bin, width_px // px_per_bin
        half = self.patch_px // 2
        padded = torch.from_numpy(np.pad(rgb, [(0, 0), (half, half), (half, half)], constant_values=1.0))
        rows, cols = np.mgrid[0:height, 0:width]
        # Patch top-left corners in the padded image: the bin centre minus half a patch, plus the padding.
        tops = (rows.ravel() * px_per_bin + px_per_bin // 2).tolist()
        lefts = (cols.ravel() * px_per_bin + px_per_bin // 2).tolist()
        corners = list(zip(tops, lefts, strict=True))
        step = 4 * self.batch_size
        embeddings = []
        for start in range(0, len(corners), step):
            size = self.patch_px
            patches = [padded[:, t : t + size, c : c + size] for t, c in corners[start : start + step]]
            embeddings.append(self._embed(torch.stack(patches)))
        return np.concatenate(embeddings).T.reshape(-1, height, width).astype(np.float32)

    def reduce(self, features: np.ndarray) -> np.ndarray:
        """The embeddings' first ``n_components`` principal components over all bins, ``(n_components, n_bins)``."""
        return _principal_components(features.T, self.n_components).T.astype(np.float32)


def _principal_components(x: np.ndarray, n_components: int) -> np.ndarray:
    """Scores of ``x`` ``(n, dim)`` on its first ``n_components`` principal components."""
    centred = x - x.mean(axis=0)
    k = min(n_components, *centred.shape)
    u, s, _ = np.linalg.svd(centred, full_matrices=False)
    return u[:, :k] * s[:k]
