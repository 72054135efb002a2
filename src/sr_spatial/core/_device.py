"""Which torch device a model runs on."""

from __future__ import annotations

import torch

__all__ = ["resolve_device"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to :class:`torch.device`.

    A device this machine lacks (CUDA without a GPU, a GPU index beyond the ones present, MPS off a Mac) is refused
    here, whether given as a string or as a :class:`torch.device`, rather than deep inside PyTorch later.
    """
    if isinstance(device, str) and device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if isinstance(device, torch.device):
        resolved = device
    elif isinstance(device, str):
        try:
            resolved = torch.device(device)
        except RuntimeError as err:
            msg = f"Unknown device {device!r}; use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps'."
            raise ValueError(msg) from err
    else:
        msg = f"`device` must be 'auto', a device name such as 'cpu' or 'cuda:0', or a torch.device; got {device!r}."
        raise TypeError(msg)
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            msg = f"Device {device!r} was asked for but this PyTorch sees no CUDA GPU; use device='auto' or 'cpu'."
            raise ValueError(msg)
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            msg = (
                f"Device {device!r} was asked for but this machine has {torch.cuda.device_count()} CUDA GPU(s) "
                f"(cuda:0 to cuda:{torch.cuda.device_count() - 1}); use one of them, or device='auto'."
            )
            raise ValueError(msg)
    elif resolved.type == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            msg = f"Device {device!r} was asked for but Apple MPS is not available; use device='auto' or 'cpu'."
            raise ValueError(msg)
    elif resolved.type != "cpu":
        msg = f"Device {device!r} is not supported; use 'auto', 'cpu', 'cuda', 'cuda:0' or 'mps'."
        raise ValueError(msg)
    return resolved
