"""The ST map: measured spots rendered onto a regular grid of bins registered to the H&E."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
from scipy.spatial import cKDTree

from sr_spatial._adapter._elements import BinGrid, SpotData
from sr_spatial._adapter._read import read_spots
from sr_spatial._docs import doc_params, doc_slide
from sr_spatial.core._groups import group_means, lattice_groups
from sr_spatial.pp._genes import select_genes
from sr_spatial.pp._lattice import TISSUE_REACH, make_grid, spot_pitch, spot_reach

if TYPE_CHECKING:
    from collections.abc import Sequence

    from spatialdata import SpatialData

logger = logging.getLogger("sr_spatial")

__all__ = [
    "STMap",
    "build_st_map",
    "coarsen_spots",
    "map_of_spots",
    "nearest_spot",
    "render_spots",
    "render_whole",
    "spot_grid",
    "spot_pixel_map",
    "tissue_triangles",
]


@dataclass(frozen=True)
class STMap:
    """Spots of one slide rendered on a grid of bins; every array is in the full-resolution image's pixel space.

    Attributes
    ----------
    grid
        The bins.
    genes
        Gene names, the order of every gene axis.
    values
        Log-normalised expression of the spots, shape ``(n_spots, n_genes)``.
    centres, radius
        Spot centres ``(x, y)`` and radii in image pixels.
    pitch
        Centre-to-centre distance of neighbouring spots in image pixels.
    nearest
        Each bin takes the value of its nearest spot, shape ``(n_genes, height, width)``.
    smooth
        Cubic (Clough-Tocher) interpolation of the spots, ``nearest`` where it is undefined.
    mask
        Bins in the tissue: within a spot's reach (``0.75`` local lattice spacings,
        :func:`~sr_spatial.pp._lattice.spot_reach`), or inside a triangle of spots that lie within their local
        spacings of each other (:func:`tissue_triangles`).
    footprint
        Index of the spot whose disk holds the bin centre, ``-1`` for none; the bins each spot averages over.
    spots
        The spots as read from the SpatialData (``None`` for derived maps).
    """

    grid: BinGrid
    genes: list[str]
    values: np.ndarray
    centres: np.ndarray
    radius: np.ndarray
    pitch: float
    nearest: np.ndarray | None
    smooth: np.ndarray | None
    mask: np.ndarray | None
    footprint: np.ndarray | None
    spots: SpotData | None = None


def tissue_triangles(centres: np.ndarray, reach: np.ndarray):
    """The spots' Delaunay triangulation and which of its triangles lie in the tissue, or ``None``.

    A triangle is tissue when every two of its corners lie within their local lattice spacings of each other (edge
    length at most the sum of both spacings, each reach over :data:`TISSUE_REACH`): between spots that are
    lattice neighbours, the tissue continues. On a jittered or irregular lattice, a bin can lie farther than its
    nearest spot's reach although spots surround it on every side (a hole in the mask, written as no tissue); the
    triangles fill it, and a single spot missing inside the tissue with them. Wider gaps (a tear, a missing
    region) stay outside, as do bins beyond the outer spots' reach.
    """
    from scipy.spatial import Delaunay, QhullError

    if len(centres) < 3:
        return None
    try:
        triangulation = Delaunay(centres)
    except (QhullError, ValueError):
        return None
    corners = triangulation.simplices
    tissue = np.ones(len(corners), dtype=bool)
    for a, b in ((0, 1), (1, 2), (2, 0)):
        length = np.linalg.norm(centres[corners[:, a]] - centres[corners[:, b]], axis=1)
        tissue &= length <= (reach[corners[:, a]] + reach[corners[:, b]]) / TISSUE_REACH
    return triangulation, tissue


class SpotRenderer:
    """Renders one set of spots onto any grid of bins, e.g. block by block of a large output grid.

    The nearest-spot tree and the cubic interpolant are built once for all spots, so a block renders exactly as
    the same bins of the whole grid would.
    """

    def __init__(
        self, centres: np.ndarray, values: np.ndarray, *, pitch: float, radius: np.ndarray | None = None
    ) -> None:
        self.centres = centres
        self.values = values
        self.pitch = pitch
        self.radius = radius
        self.reach = spot_reach(centres, pitch=pitch, radius=radius)
        self._tree = cKDTree(centres)
        self._triangles = tissue_triangles(centres, self.reach)
        self._cubic = None
        self._cubic_built = False

    def _interpolator(self):
        from scipy.interpolate import CloughTocher2DInterpolator
        from scipy.spatial import QhullError

        if not self._cubic_built:
            self._cubic_built = True
            try:
                self._cubic = CloughTocher2DInterpolator(self.centres, self.values)
            except (QhullError, ValueError):
                logger.debug("Too few or collinear spots for cubic interpolation; using nearest.")
        return self._cubic

    def render(
        self, grid: BinGrid, *, expression: bool = True
    ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray, np.ndarray]:
        """``(nearest, smooth, mask, footprint)`` on ``grid``, as described in :class:`STMap`.

        With ``expression=False`` only the mask and footprint are rendered (``nearest`` and ``smooth`` are
        ``None``): the cubic interpolation of every gene is most of the cost on a slide of many spots.
        """
        xy = grid.centres().reshape(-1, 2)
        distance, owner = self._tree.query(xy)
        mask = distance <= self.reach[owner]
        if self._triangles is not None:
            triangulation, tissue = self._triangles
            simplex = triangulation.find_simplex(xy)
            mask |= (simplex >= 0) & tissue[np.maximum(simplex, 0)]
        if not expression:
            return None, None, mask.reshape(grid.shape), self._footprint(grid, distance, owner, mask)
        n_genes = self.values.shape[1]
        nearest = np.zeros((len(xy), n_genes), dtype=np.float32)
        nearest[mask] = self.values[owner[mask]]
        smooth = nearest.copy()
        cubic_of = self._interpolator()
        if cubic_of is not None and mask.any():
            cubic = cubic_of(xy[mask])
            defined = np.isfinite(cubic).all(axis=1)
            # Cubic interpolation overshoots; expression below zero has no meaning in log-normalised units.
            smooth[np.flatnonzero(mask)[defined]] = np.clip(cubic[defined], 0.0, None)

        def to_map(a):
            return np.ascontiguousarray(a.T.reshape(n_genes, grid.height, grid.width))

        footprint = self._footprint(grid, distance, owner, mask)
        return to_map(nearest), to_map(smooth), mask.reshape(grid.shape), footprint

    def _footprint(self, grid: BinGrid, distance: np.ndarray, owner: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """Each bin's spot where the bin lies in its disk, else ``-1``, ``(height, width)``."""
        footprint = np.full(len(owner), -1, dtype=np.int64)
        if self.radius is not None:
            inside = mask & (distance <= self.radius[owner])
            footprint[inside] = owner[inside]
            # A spot narrower than a bin still owns the bin under its centre, so that every spot constrains the map.
            ij = grid.index_of(self.centres)
            on_grid = (ij[:, 0] >= 0) & (ij[:, 0] < grid.height) & (ij[:, 1] >= 0) & (ij[:, 1] < grid.width)
            flat = ij[:, 0] * grid.width + ij[:, 1]
            for spot in np.flatnonzero(on_grid):
                if footprint[flat[spot]] < 0:
                    footprint[flat[spot]] = spot
        return footprint.reshape(grid.shape)

    def owner(self, grid: BinGrid) -> np.ndarray:
        """Index of the spot nearest to each bin centre, ``(height, width)``."""
        _, owner = self._tree.query(grid.centres().reshape(-1, 2))
        return owner.reshape(grid.shape)


def render_spots(
    centres: np.ndarray, values: np.ndarray, grid: BinGrid, *, pitch: float, radius: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Render spot values on ``grid``.

    Returns
    -------
    ``(nearest, smooth, mask, footprint)`` as described in :class:`STMap`. ``footprint`` is all ``-1`` when
    ``radius`` is ``None``.
    """
    return SpotRenderer(centres, values, pitch=pitch, radius=radius).render(grid)


def render_whole(st_map: STMap, renderer: SpotRenderer | None = None) -> STMap:
    """``st_map`` with its whole grid rendered: the one render state a method fitting on the slide reads.

    Returned as it is where already rendered, so a slide is never rendered twice; otherwise rendered by ``renderer``
    (the call's, whose interpolant the blocks reuse), or a new one.
    """
    if st_map.nearest is not None and st_map.mask is not None:
        return st_map
    if renderer is None:
        renderer = SpotRenderer(st_map.centres, st_map.values, pitch=st_map.pitch, radius=st_map.radius)
    nearest, smooth, mask, footprint = renderer.render(st_map.grid)
    return replace(st_map, nearest=nearest, smooth=smooth, mask=mask, footprint=footprint)


def nearest_spot(centres: np.ndarray, grid: BinGrid) -> np.ndarray:
    """Index of the spot nearest to each bin centre, ``(height, width)``."""
    _, owner = cKDTree(centres).query(grid.centres().reshape(-1, 2))
    return owner.reshape(grid.shape)


def coarsen_spots(
    centres: np.ndarray, values: np.ndarray, *, factor: int, pitch: float, offset: tuple[float, float] = (0.0, 0.0)
) -> tuple[np.ndarray, np.ndarray]:
    """Pool spots into pseudo-spots ``factor`` pitches wide, as a ``factor``-times coarser measurement would.

    Spots are grouped by the cell of a square lattice of side ``factor * pitch`` (shifted by ``offset`` pixels)
    they fall in. Expression is averaged in linear normalised space, as pooled counts would be.

    Returns
    -------
    Pseudo-spot centres ``(m, 2)`` and their log-normalised values ``(m, n_genes)``.
    """
    group = lattice_groups(centres, side=factor * pitch, offset=offset)
    n_groups = group.max() + 1
    pooled_xy, _ = group_means(centres.T.astype(np.float64), group, n_groups)
    pooled, _ = group_means(np.expm1(values.astype(np.float64)).T, group, n_groups)
    return pooled_xy.T, np.log1p(pooled.T).astype(np.float32)


def normalised_values(spots: SpotData, genes: list[str], target_sum: float) -> np.ndarray:
    """The spots' log-normalised expression of ``genes`` ``(n_spots, n_genes)``, as :func:`build_st_map` reads it."""
    import anndata as ad

    from sr_spatial.pp._genes import normalize

    adata = ad.AnnData(X=spots.counts.copy())
    adata.var_names = spots.var_names
    normalize(adata, target_sum=target_sum)
    idx = spots.var_names.get_indexer(genes)
    return np.asarray(adata.X[:, idx].todense(), dtype=np.float32)


@doc_params(doc_slide=doc_slide)
def build_st_map(
    sdata: SpatialData,
    image_key: str,
    *,
    table_key: str = "table",
    shapes_key: str | None = None,
    genes: Sequence[str] | None = None,
    n_top_genes: int = 50,
    scale: int = 4,
    target_sum: float = 1e4,
    coordinate_system: str | None = None,
    stain: Literal["auto", "brightfield", "fluorescence"] = "auto",
) -> STMap:
    """Build the ST map of a slide: its spots' normalised expression on bins ``scale`` times finer than the spots.

    The spots are placed on the image through the elements' own transformations; Visium's hexagonal lattice,
    the square lattice of legacy ST and square bins all work, since the grid is derived from the measured spot
    pitch rather than from array coordinates. ``sdata`` is not changed.

    Parameters
    ----------
    {doc_slide}
    genes
        Genes to keep; default: the ``n_top_genes`` most highly variable (:func:`sr_spatial.pp.select_genes`).
    target_sum
        Library-size normalisation target (:func:`sr_spatial.pp.normalize`).

    Returns
    -------
    The :class:`STMap`.
    """
    return spot_map(
        sdata,
        image_key,
        table_key=table_key,
        shapes_key=shapes_key,
        genes=genes,
        n_top_genes=n_top_genes,
        scale=scale,
        target_sum=target_sum,
        coordinate_system=coordinate_system,
        render=True,
        stain=stain,
    )


def spot_map(
    sdata: SpatialData,
    image_key: str,
    *,
    table_key: str,
    shapes_key: str | None,
    genes: Sequence[str] | None,
    n_top_genes: int,
    scale: int,
    target_sum: float = 1e4,
    coordinate_system: str | None,
    render: bool,
    stain: str = "auto",
) -> STMap:
    """:func:`build_st_map`, optionally without rendering the whole grid.

    With ``render=False`` the whole-grid maps are left ``None`` (rendered block by block later), so memory does
    not grow with the grid.
    """
    if scale < 1:
        msg = f"`scale` must be a positive integer, got {scale}."
        raise ValueError(msg)
    spots = read_spots(
        sdata, image_key, table_key=table_key, shapes_key=shapes_key, coordinate_system=coordinate_system, stain=stain
    )
    return map_of_spots(spots, genes=genes, n_top_genes=n_top_genes, scale=scale, target_sum=target_sum, render=render)


def spot_grid(spots: SpotData, *, scale: int) -> tuple[BinGrid, float]:
    """The output grid of bins ``scale`` times finer than the spots, and their pitch: from their geometry alone."""
    pitch = spot_pitch(spots.centres)
    reach = spot_reach(spots.centres, pitch=pitch, radius=spots.radius)
    return make_grid(spots.centres, bin_size=pitch / scale, pitch=pitch, reach=float(reach.max())), pitch


def map_of_spots(
    spots: SpotData,
    *,
    genes: Sequence[str] | None,
    n_top_genes: int,
    scale: int,
    target_sum: float = 1e4,
    render: bool,
) -> STMap:
    """:func:`spot_map` of spots already read (:func:`~sr_spatial._adapter._read.read_spots`): nothing is read again."""
    import anndata as ad

    counts_view = ad.AnnData(X=spots.counts)
    counts_view.var_names = spots.var_names
    genes = select_genes(counts_view, genes=genes, n_top_genes=n_top_genes, target_sum=target_sum)
    values = normalised_values(spots, genes, target_sum)
    grid, pitch = spot_grid(spots, scale=scale)
    if render:
        nearest, smooth, mask, footprint = render_spots(spots.centres, values, grid, pitch=pitch, radius=spots.radius)
    else:
        nearest = smooth = mask = footprint = None
    return STMap(
        grid=grid,
        genes=genes,
        values=values,
        centres=spots.centres,
        radius=spots.radius,
        pitch=pitch,
        nearest=nearest,
        smooth=smooth,
        mask=mask,
        footprint=footprint,
        spots=spots,
    )


def spot_pixel_map(st_map: STMap, px_per_bin: int) -> np.ndarray:
    """Spot index of every histology pixel of the output grid (``-1`` outside every spot's disk)."""
    grid = st_map.grid
    pixel = grid.size / px_per_bin
    xs = grid.x0 + (np.arange(grid.width * px_per_bin) + 0.5) * pixel
    ys = grid.y0 + (np.arange(grid.height * px_per_bin) + 0.5) * pixel
    tree = cKDTree(st_map.centres)
    # One value per H&E pixel of the output grid: int32 halves what int64 holds, and spots never number 2**31.
    out = np.empty((len(ys), len(xs)), dtype=np.int32)
    for row, y in enumerate(ys):
        distance, owner = tree.query(np.column_stack([xs, np.full_like(xs, y)]))
        out[row] = np.where(distance <= st_map.radius[owner], owner, -1)
    return out
