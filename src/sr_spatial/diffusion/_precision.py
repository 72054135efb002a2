"""Mixed precision: reduced precision on CUDA, full precision everywhere else."""

from __future__ import annotations

import torch

__all__ = ["autocast", "compute_dtype"]

_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def compute_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """The dtype matrix products run in: ``precision`` on CUDA (``"auto"``: bf16 where supported, else fp16).

    CPU and MPS always compute in fp32: bf16 on CPU is slow on most processors and gains nothing here.
    """
    if device.type != "cuda":
        return torch.float32
    if precision == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return _DTYPES[precision]


def autocast(device: torch.device, precision: str = "auto") -> torch.autocast:
    """An autocast context for ``device`` at :func:`compute_dtype`; disabled (fp32) where that is fp32."""
    dtype = compute_dtype(device, precision)
    return torch.autocast(device_type=device.type, dtype=dtype, enabled=dtype != torch.float32)
