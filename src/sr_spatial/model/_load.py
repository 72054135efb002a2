"""Load whichever kind of model a folder holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from sr_spatial.core._saved import CONFIG_FILE
from sr_spatial.diffusion._model import DiffST
from sr_spatial.histology._io import KIND as HISTOLOGY_KIND
from sr_spatial.histology._model import HistologyModel

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch

__all__ = ["load"]


def load(
    path: str | Path, *, device: str | torch.device = "auto", genes: Sequence[str] | None = None
) -> DiffST | HistologyModel:
    """Load a saved model, whichever kind the folder holds.

    Reads folders written by :meth:`DiffST.save <sr_spatial.model.DiffST.save>` and
    :meth:`HistologyModel.save <sr_spatial.model.HistologyModel.save>`.

    Parameters
    ----------
    path
        The model's folder.
    device
        Where to put a diffusion model (a histology model runs on the CPU).
    genes
        If given, check the model predicts exactly these genes.

    Returns
    -------
    The model.
    """
    path = Path(path)
    if not path.is_dir():
        msg = (
            f"{str(path)!r} is not a saved sr_spatial model: the folder does not exist. Pass the folder that "
            "`model.save(...)` wrote."
        )
        raise FileNotFoundError(msg)
    kind = None
    config_file = path / CONFIG_FILE
    if config_file.is_file():
        try:
            kind = json.loads(config_file.read_text()).get("kind")
        except (ValueError, AttributeError):
            kind = None
    if kind == HISTOLOGY_KIND:
        return HistologyModel.load(path, genes=genes)
    return DiffST.load(path, device=device, genes=genes)
