"""The output grid cut into blocks: each block's core and the padded region computed to fill it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Block", "plan_blocks"]


@dataclass(frozen=True)
class Block:
    """A block of the output grid: its core and the padded region computed to fill it.

    The core is rows ``top:top + height`` and columns ``left:left + width``; the padded region the same with
    the ``pad_`` fields.
    """

    top: int
    left: int
    height: int
    width: int
    pad_top: int
    pad_left: int
    pad_height: int
    pad_width: int

    @property
    def region(self) -> tuple[slice, slice]:
        return slice(self.pad_top, self.pad_top + self.pad_height), slice(self.pad_left, self.pad_left + self.pad_width)


def plan_blocks(shape: tuple[int, int], *, block_bins: int, halo: int) -> list[Block]:
    """Blocks of at most ``block_bins`` square covering ``shape``, each padded by ``halo`` bins within the grid."""
    height, width = shape
    blocks = []
    for top in range(0, height, block_bins):
        for left in range(0, width, block_bins):
            h, w = min(block_bins, height - top), min(block_bins, width - left)
            pad_top, pad_left = max(top - halo, 0), max(left - halo, 0)
            pad_bottom, pad_right = min(top + h + halo, height), min(left + w + halo, width)
            blocks.append(Block(top, left, h, w, pad_top, pad_left, pad_bottom - pad_top, pad_right - pad_left))
    return blocks
