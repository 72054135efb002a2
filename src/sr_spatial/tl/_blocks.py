"""Block-wise inference over the output grid: bounded memory on large slides, and the unit of scale-out.

The output grid is cut into square blocks. Each block is computed from its own region plus a halo (so the
model sees context across the block's edge), reading only its part of the H&E, and owns the bins it writes:
the bins of every spot whose centre lies in the block, and the bins outside every spot that lie in the block.
A spot's bins therefore all come from one block, and its projection onto the measurement stays exact.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import sparse

from sr_spatial._adapter._elements import BinGrid
from sr_spatial.core._consistency import residual_sums
from sr_spatial.core._tiling import Block, plan_blocks
from sr_spatial.pp._lattice import spot_reach
from sr_spatial.pp._stmap import SpotRenderer
from sr_spatial.tl._store import ImageStore, guarded_dask

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sr_spatial._adapter._elements import SpotData
    from sr_spatial.model import DiffST
    from sr_spatial.pp._stmap import STMap

__all__ = [
    "Block",
    "BlockJob",
    "BlockResult",
    "BlockView",
    "MemorySink",
    "ZarrSink",
    "block_halo",
    "default_block_bins",
    "plan_blocks",
    "run_block",
]


def block_halo(st_map: STMap, *, context: int) -> int:
    """Halo, in bins, that holds every bin of a block's spots and of their nearest-spot cells, plus ``context``."""
    reach = float(spot_reach(st_map.centres, pitch=st_map.pitch, radius=st_map.radius).max())
    return int(math.ceil(reach / st_map.grid.size)) + 1 + context


#: Values (draws x genes x bins) a block may hold at once when the block size is chosen automatically: 256 MiB of
#: float32 draws, about a few times that at the peak of sampling and projection.
BLOCK_VALUES = 2**26


def default_block_bins(n_genes: int, n_draws: int, *, halo: int, largest: int = 256, smallest: int = 32) -> int:
    """Block side such that a padded block's draws hold about :data:`BLOCK_VALUES` values."""
    side = int(math.sqrt(BLOCK_VALUES / max(n_genes * n_draws, 1))) - 2 * halo
    return int(min(max(side // 16 * 16, smallest), largest))


@dataclass
class BlockJob:
    """Everything a block needs besides the model; small and picklable, so it can be sent to dask workers.

    ``spots`` carries the H&E (lazy where the slide was read from zarr) but not the counts; ``method`` is the
    fitted method's computation of a block.
    """

    spots: SpotData
    grid: BinGrid
    values: np.ndarray
    centres: np.ndarray
    radius: np.ndarray
    pitch: float
    #: The fitted method's computation of a block (a :class:`~sr_spatial.tl._methods.BlockMethod`).
    method: Any = None
    _renderer: SpotRenderer | None = field(default=None, repr=False)

    @classmethod
    def from_map(cls, st_map: STMap, **kwargs) -> BlockJob:
        n_spots = len(st_map.values)
        spots = replace(st_map.spots, counts=sparse.csr_matrix((n_spots, 0), dtype=np.float32))
        return cls(
            spots=spots,
            grid=st_map.grid,
            values=st_map.values,
            centres=st_map.centres,
            radius=st_map.radius,
            pitch=st_map.pitch,
            **kwargs,
        )

    def __getstate__(self):
        # The renderer's interpolant is rebuilt where the job runs rather than shipped to every worker.
        state = dict(self.__dict__)
        state["_renderer"] = None
        return state

    @property
    def renderer(self) -> SpotRenderer:
        if self._renderer is None:
            self._renderer = SpotRenderer(self.centres, self.values, pitch=self.pitch, radius=self.radius)
        return self._renderer

    @property
    def spot_bins(self) -> np.ndarray:
        return self.grid.index_of(self.centres)

    def sub_grid(self, block: Block) -> BinGrid:
        g = self.grid
        return BinGrid(
            x0=g.x0 + block.pad_left * g.size,
            y0=g.y0 + block.pad_top * g.size,
            size=g.size,
            height=block.pad_height,
            width=block.pad_width,
        )


@dataclass
class BlockView:
    """One block of the output grid, rendered: the maps a method starts from and the spots it owns.

    ``job`` is the slide's :class:`~sr_spatial.tl._blocks.BlockJob` (spots, their values and the H&E); ``in_block``
    marks the slide's spots whose bins this block writes.
    """

    job: BlockJob
    block: Block
    grid: BinGrid
    nearest: np.ndarray
    smooth: np.ndarray
    mask: np.ndarray
    footprint: np.ndarray
    in_block: np.ndarray

    def owner(self) -> np.ndarray:
        """Each bin's nearest spot."""
        return self.job.renderer.owner(self.grid)


@dataclass
class BlockResult:
    """A computed block: maps over its padded region, the bins it owns there, and its spots' residual sums."""

    block: Block
    mean: np.ndarray
    std: np.ndarray
    mask: np.ndarray
    owned: np.ndarray
    residual: tuple[np.ndarray, np.ndarray]
    residual_before: tuple[np.ndarray, np.ndarray] | None


def _owned(block: Block, footprint: np.ndarray, spot_bins: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bins of the padded region the block writes, and which spots (all of the slide's) belong to it."""
    rows = np.arange(block.pad_top, block.pad_top + block.pad_height)[:, None]
    cols = np.arange(block.pad_left, block.pad_left + block.pad_width)[None, :]
    in_core = (rows >= block.top) & (rows < block.top + block.height)
    in_core = in_core & (cols >= block.left) & (cols < block.left + block.width)
    spot_in_core = (
        (spot_bins[:, 0] >= block.top)
        & (spot_bins[:, 0] < block.top + block.height)
        & (spot_bins[:, 1] >= block.left)
        & (spot_bins[:, 1] < block.left + block.width)
    )
    owned = np.where(footprint >= 0, spot_in_core[np.clip(footprint, 0, None)], in_core)
    return owned, spot_in_core


def run_block(job: BlockJob, block: Block, model: DiffST | None, *, show_progress_bar: bool = False) -> BlockResult:
    """Compute one block with ``job.method``; ``model`` is the one the fitted method reads, if any."""
    grid = job.sub_grid(block)
    nearest, smooth, mask, footprint = job.renderer.render(grid)
    owned, spots = _owned(block, footprint, job.spot_bins)
    view = BlockView(job, block, grid, nearest, smooth, mask, footprint, in_block=spots)
    mean, std, residual_before = job.method.maps(view, model, show_progress_bar=show_progress_bar)
    residual = residual_sums(mean, footprint, job.values, spots=spots)
    return BlockResult(block, mean, std, mask, owned, residual, residual_before)


def iter_blocks(
    job: BlockJob, blocks: list[Block], model: DiffST | None, *, client=None, show_progress_bar: bool = True
) -> Iterator[BlockResult]:
    """Results of every block, computed here one after another or on a dask cluster through ``client``.

    On a cluster the job and the model are sent to each worker once; at most two blocks per worker are in
    flight, so results do not pile up in memory faster than they are written.
    """
    from sr_spatial._logging import progress_bar

    several = len(blocks) > 1
    bar = progress_bar(total=len(blocks), desc="Blocks", unit="block", disable=not (show_progress_bar and several))
    try:
        if client is None:
            for block in blocks:
                yield run_block(job, block, model, show_progress_bar=show_progress_bar and not several)
                bar.update()
            return
        yield from _iter_distributed(job, blocks, model, client, bar)
    finally:
        bar.close()


def _worker_run(job: BlockJob, block: Block, model: DiffST | None, device: str) -> BlockResult:
    """Run on a dask worker: the model arrives once per worker; it moves to the worker's own device once."""
    import dask

    from sr_spatial.core._device import resolve_device

    if model is not None:
        target = resolve_device(device)
        if model.device != target:
            model.device = target
            model.network.to(target)
    # Read the block's H&E here, in the worker, rather than sending its graph back to the cluster.
    with dask.config.set(scheduler="synchronous"):
        return run_block(job, block, model)


def _iter_distributed(job, blocks, model, client, bar) -> Iterator[BlockResult]:
    from distributed import as_completed

    n_workers = max(len(client.scheduler_info().get("workers", {})), 1)
    on_accelerator = model is not None and model.device.type != "cpu"
    # A model on the CPU goes wherever each worker finds best; one on a GPU asks for that kind on every worker.
    device = model.device.type if on_accelerator else "auto"
    if on_accelerator:
        # Ship CPU tensors: each worker moves its copy to its own GPU (or keeps it on the CPU).
        model = _on_cpu(model)
    job_f = client.scatter(job, broadcast=True)
    model_f = client.scatter(model, broadcast=True) if model is not None else None
    pending = list(blocks)
    window = 2 * n_workers
    running = as_completed(
        [client.submit(_worker_run, job_f, b, model_f, device, pure=False) for b in pending[:window]]
    )
    pending = pending[window:]
    for future in running:
        result = future.result()
        future.release()
        if pending:
            running.add(client.submit(_worker_run, job_f, pending.pop(0), model_f, device, pure=False))
        bar.update()
        yield result


def _on_cpu(model: DiffST) -> DiffST:
    import copy

    import torch

    clone = copy.copy(model)
    clone.network = copy.deepcopy(model.network).to("cpu")
    clone.device = torch.device("cpu")
    return clone


class _Sink:
    """Maps ``mean`` and ``std`` of the whole grid that blocks write their owned bins into; NaN outside the tissue.

    NaN rather than 0 outside the tissue: matplotlib draws NaN as transparent, so a map overlays the H&E without
    an opaque rectangle around the tissue, and colour scales and statistics skip the glass.
    """

    mean: np.ndarray
    std: np.ndarray

    def write(self, result: BlockResult) -> None:
        rows, cols = result.block.region
        for target, values in ((self.mean, result.mean), (self.std, result.std)):
            # Read, fill the owned bins, write back: zarr arrays hand out copies, not views.
            region = target[:, rows, cols]
            region[:, result.owned] = np.where(result.mask, values, np.float32(np.nan))[:, result.owned]
            target[:, rows, cols] = region


class MemorySink(_Sink):
    """Collects blocks into in-memory maps of the whole grid."""

    def __init__(self, n_genes: int, shape: tuple[int, int]) -> None:
        self.mean = np.full((n_genes, *shape), np.nan, dtype=np.float32)
        self.std = np.full((n_genes, *shape), np.nan, dtype=np.float32)

    def arrays(self):
        return self.mean, self.std

    def finish(self, *, replaced: bool) -> None:
        """Nothing to keep track of: the maps go with the object."""

    def discard(self) -> None:
        """Nothing to clean up: the maps go with the object."""


class ZarrSink(_Sink):
    """Writes blocks into zarr arrays ``mean`` and ``std`` of group ``<key>/<n>`` (:mod:`sr_spatial.tl._store`).

    Reads them back lazily as dask arrays.
    """

    def __init__(self, store, n_genes: int, shape: tuple[int, int], *, chunk_bins: int, key: str) -> None:
        self._images = ImageStore(store, key)
        self._store, self._key = store, key
        group = self._images.group
        chunks = (min(n_genes, 8), chunk_bins, chunk_bins)
        # Chunks no block writes (glass only) are never stored and read as the fill value, NaN like the glass.
        options = {"shape": (n_genes, *shape), "chunks": chunks, "dtype": "float32", "fill_value": np.nan}
        try:
            self.mean = group.create_array("mean", **options)
            self.std = group.create_array("std", **options)
        except BaseException:
            self._images.discard()
            raise

    def arrays(self):
        # Read through a guard: once a later overwrite removes this group, reading fails instead of giving NaN.
        return tuple(guarded_dask(array, key=self._key, store=self._store) for array in (self.mean, self.std))

    def finish(self, *, replaced: bool) -> None:
        """The images are in place; ``replaced``: the elements that read earlier images of the key are gone."""
        self._images.finish(drop_earlier=replaced)

    def discard(self) -> None:
        """Remove what this call wrote, after a failure; images of earlier calls stay."""
        self._images.discard()
