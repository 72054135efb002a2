"""What the model's layers need from a model: its genes, settings, device, schedule and network."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import torch

    from sr_spatial.diffusion._config import ModelConfig
    from sr_spatial.diffusion._schedule import Schedule
    from sr_spatial.diffusion.module._network import DiffSTNetwork

__all__ = ["ModelParts"]


class ModelParts(Protocol):
    """The attributes of :class:`~sr_spatial.model.DiffST` that the condition, fits, sampler and training read.

    Typed as a protocol so those layers need not import the user-facing class that imports them.
    """

    genes: list[str]
    config: ModelConfig
    seed: int
    device: torch.device
    schedule: Schedule
    network: DiffSTNetwork
    is_trained: bool
    history: dict[str, list[float]]
