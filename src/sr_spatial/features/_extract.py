"""Features of a slide's bins: chosen by name or object, read band by band, cached for the next call."""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np

from sr_spatial._logging import progress_bar
from sr_spatial.features._base import HistologyFeatures
from sr_spatial.features._encoder import EncoderFeatures
from sr_spatial.features._morphology import MorphologyFeatures
from sr_spatial.features._nuclei import NucleiFeatures

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sr_spatial._adapter._elements import BinGrid, SpotData

logger = logging.getLogger("sr_spatial")

__all__ = ["bin_features", "resolve_features"]

#: Pixels of H&E read at once (a square tile of bins); bounds the memory of the pixel planes on large slides: about
#: 26 float32 planes plus float64 temporaries, some 0.5 GB at 2**20 (2**22 peaked at 3.1 GB on a Visium-size slide).
TILE_PIXELS = 2**20
#: Feature tables kept in memory, so a second call on the same slide and grid does not recompute them.
CACHE_SIZE = 4
_cache: OrderedDict[str, np.ndarray] = OrderedDict()


def resolve_features(features, *, image_um_per_px: float | None = None) -> HistologyFeatures:
    """The extractor ``features`` names: ``"morphology"`` (also ``"auto"``), ``"nuclei"``, a timm id, a module or one.

    ``"auto"`` reads as a single slide's features; a model fitted on references resolves it to ``"nuclei"`` first
    (:meth:`~sr_spatial.model.HistologyConfig.for_references`).
    """
    if isinstance(features, HistologyFeatures):
        return features
    if features is None or features in ("morphology", "auto"):
        return MorphologyFeatures()
    if features == "nuclei":
        return NucleiFeatures()
    if isinstance(features, str) or callable(features):
        if image_um_per_px is None:
            msg = (
                f"An image encoder ({features!r}) reads patches at its own magnification, so it needs the H&E's "
                "pixel size: pass `image_um_per_px` (micrometres per full-resolution pixel, from the scanner's "
                "metadata), or use `features='morphology'`."
            )
            raise ValueError(msg)
        return EncoderFeatures(features, image_um_per_px=image_um_per_px)
    msg = (
        "`features` must be 'morphology', a timm model id, a torch module or callable, or a "
        f"`sr_spatial.features.HistologyFeatures`; got {type(features).__name__}."
    )
    raise TypeError(msg)


#: Values of the coarsest pyramid level hashed whole into an image's fingerprint; larger levels are sampled.
FINGERPRINT_VALUES = 2**24


def _image_token(spots: SpotData) -> str:
    """A fingerprint of the H&E's content as it is read now: never a name that survives a change of the pixels.

    The coarsest pyramid level is hashed (whole up to :data:`FINGERPRINT_VALUES` values, else a strided sample of
    about that many), with every level's shape and dtype, the transformations and how the intensities are read
    (``white``, ``inverted``, ``alpha``). An H&E replaced on disk under the same element, path or dask name
    therefore gets features of its own; reading a small level costs milliseconds beside computing features.
    """
    from sr_spatial._adapter._elements import image_levels

    levels = image_levels(spots.image)
    coarsest = levels[-1]
    size = int(np.prod(coarsest.shape))
    step = max(1, int(np.ceil(np.sqrt(size / FINGERPRINT_VALUES))))
    pixels = coarsest[:, ::step, ::step] if step > 1 else coarsest
    # Read here even when a dask cluster is the default scheduler: a small level, or a sample of one.
    values = np.ascontiguousarray(np.asarray(pixels.compute(scheduler="threads").values))
    digest = hashlib.sha256(values.tobytes())
    shapes = [(tuple(level.shape), str(level.dtype)) for level in levels]
    transformations = sorted((cs, repr(tf)) for cs, tf in spots.image_transformations.items())
    reading = (spots.white, spots.inverted, getattr(spots, "alpha", False))
    digest.update(repr((shapes, transformations, reading, step)).encode())
    return digest.hexdigest()


def _tiles(grid: BinGrid, k: int, *, margin: int) -> Iterator[tuple[tuple[slice, slice], tuple[slice, slice], BinGrid]]:
    """Square tiles of bins covering ``grid``, each read at ``k`` pixels per bin within :data:`TILE_PIXELS`.

    Yields the tile's own bins (rows and columns of ``grid``), where they lie in what is read, and the grid of
    the bins read: the tile plus ``margin`` bins around it, where the grid has them. Tiles rather than
    full-width bands: a band of a wide slide holds few rows, and its margins, read twice, cost more the wider
    the slide (a 4x larger slide took 5.8x the time); a tile's share of margin does not depend on the slide.
    """
    side = max(1, int(np.sqrt(TILE_PIXELS)) // k)
    if side <= 4 * margin:
        # Read finely (64 pixels a bin), a tile of TILE_PIXELS was 16 bins across with 4-bin margins and read four
        # times the pixels it kept: six margins wide it reads 2.25 times.
        side = 6 * margin
    # The margin is read twice; keep at least half of a tile for its own bins.
    core = max(side - 2 * margin, side // 2, 1)
    for top in range(0, grid.height, core):
        for left in range(0, grid.width, core):
            lo, hi = max(top - margin, 0), min(top + core + margin, grid.height)
            west, east = max(left - margin, 0), min(left + core + margin, grid.width)
            tile = type(grid)(
                x0=grid.x0 + west * grid.size,
                y0=grid.y0 + lo * grid.size,
                size=grid.size,
                height=hi - lo,
                width=east - west,
            )
            rows, cols = min(core, grid.height - top), min(core, grid.width - left)
            own = (slice(top, top + rows), slice(left, left + cols))
            within = (slice(top - lo, top - lo + rows), slice(left - west, left - west + cols))
            yield own, within, tile


def bin_features(
    spots: SpotData,
    grid: BinGrid,
    extractor: HistologyFeatures,
    *,
    max_px_per_bin: int | None = None,
    show_progress_bar: bool = True,
    points: np.ndarray | None = None,
) -> np.ndarray:
    """Features of every bin of ``grid``, ``(n_features, height, width)``, from the H&E under it.

    The H&E is read in square tiles of bins (with the extractor's context as margin) at the extractor's
    :meth:`~HistologyFeatures.px_per_bin`, at most ``max_px_per_bin`` (so slides of different resolutions are read
    alike; not for extractors of a :attr:`~HistologyFeatures.fixed_resolution`), so memory does not grow with the
    slide. Results are cached in memory by a fingerprint of the image's pixels (:func:`_image_token`), grid and
    extractor settings.
    """
    from sr_spatial._adapter._read import read_histology

    k = extractor.px_per_bin(grid.size)
    if max_px_per_bin is not None and not extractor.fixed_resolution:
        k = min(k, int(max_px_per_bin))
    if points is not None and not hasattr(extractor, "point_features"):
        points = None  # bin-level extractors: each point takes its bin's features, read below
    at_points = "" if points is None else hashlib.sha256(np.ascontiguousarray(points, dtype=np.float64)).hexdigest()
    key = "|".join([_image_token(spots), repr(grid), str(k), extractor.cache_key(), at_points])
    if key in _cache:
        _cache.move_to_end(key)
        logger.info("Reusing the %s features of this slide computed earlier.", extractor.name)
        return _cache[key]
    if hasattr(extractor, "fit"):
        extractor.fit(read_histology(spots, tile, px_per_bin=kk) for kk, tile in _overview(extractor, grid, k))
    # Two more bins than the context, so pixel filters (blob bands up to 8 px wide) see past the tile's edge.
    margin = extractor.context_bins + 2
    features = None
    for own, within, tile in progress_bar(
        list(_tiles(grid, k, margin=margin)),
        desc=f"Features ({extractor.name})",
        unit="tile",
        disable=not show_progress_bar,
    ):
        rgb = read_histology(spots, tile, px_per_bin=k)
        if points is not None:
            features = _point_features(extractor, rgb, tile, own, grid, points, k, features)
            continue
        read = extractor.bin_features(rgb, px_per_bin=k)
        if features is None:
            features = np.empty((len(read), grid.height, grid.width), dtype=np.float32)
        features[:, own[0], own[1]] = read[:, within[0], within[1]]
    if points is None:
        n_features = features.shape[0]
        reduced = extractor.reduce(features.reshape(n_features, -1))
        features = reduced.reshape(-1, grid.height, grid.width).astype(np.float32)
    _cache[key] = features
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return features


#: Pixels read at most to set a slide-wide level at the features' own resolution (:func:`_overview`).
OVERVIEW_PIXELS = 2**24


def _overview(extractor: HistologyFeatures, grid: BinGrid, k: int) -> list[tuple[int, BinGrid]]:
    """The tiles (and pixels per bin) read to fit an extractor's slide-wide levels before its features.

    Most read one coarse overview, at most 8 pixels a bin. An extractor that segments at its own resolution
    (:attr:`~HistologyFeatures.levels_at_read_resolution`, the nuclei's stain threshold) reads at ``k``, on tiles
    spread evenly over the slide up to :data:`OVERVIEW_PIXELS`: a threshold set on blurred pixels would not
    separate the sharp ones it is applied to.
    """
    if not getattr(extractor, "levels_at_read_resolution", False):
        overview_k = max(1, min(k, 8))
        return [(overview_k, tile) for *_, tile in _tiles(grid, overview_k, margin=0)]
    tiles = [tile for *_, tile in _tiles(grid, k, margin=0)]
    per_tile = max(1, int(np.mean([t.height * t.width for t in tiles])) * k * k)
    stride = max(1, int(np.ceil(len(tiles) * per_tile / OVERVIEW_PIXELS)))
    return [(k, tile) for tile in tiles[::stride]]


def _point_features(extractor, rgb, tile, own, grid, points, k, features):
    """Fill ``features`` ``(n_features, n_points)`` for the points whose bin is among the tile's own bins."""
    bins = grid.index_of(points)
    rows, cols = own
    inside = (bins[:, 0] >= rows.start) & (bins[:, 0] < rows.stop)
    inside &= (bins[:, 1] >= cols.start) & (bins[:, 1] < cols.stop)
    if not inside.any():
        return features
    pixel_rows = (points[inside, 1] - tile.y0) / tile.size * k
    pixel_cols = (points[inside, 0] - tile.x0) / tile.size * k
    read = extractor.point_features(rgb, pixel_rows, pixel_cols, px_per_bin=k)
    if features is None:
        features = np.zeros((len(read), len(points)), dtype=np.float32)
    features[:, inside] = read
    return features
