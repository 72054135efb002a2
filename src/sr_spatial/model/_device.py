"""Which torch device a model runs on."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


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
