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

if TYPE_CHECKING:
    from collections.abc import Iterator

    from sr_spatial._adapter._elements import BinGrid, SpotData

logger = logging.getLogger("sr_spatial")

__all__ = ["bin_features", "resolve_features"]

#: Pixels of H&E read at once (a band of bin rows); bounds the memory of the pixel planes on large slides: about
#: 26 float32 planes plus float64 temporaries, some 0.5 GB at 2**20 (2**22 peaked at 3.1 GB on a Visium-size slide).
BAND_PIXELS = 2**20
#: Feature tables kept in memory, so a second call on the same slide and grid does not recompute them.
CACHE_SIZE = 4
_cache: OrderedDict[str, np.ndarray] = OrderedDict()


def resolve_features(features, *, image_um_per_px: float | None = None) -> HistologyFeatures:
    """The extractor ``features`` names: ``"morphology"``, a timm id, a torch module, a callable or an extractor."""
    if isinstance(features, HistologyFeatures):
        return features
    if features is None or features == "morphology":
        return MorphologyFeatures()
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


def _image_token(spots: SpotData) -> str:
    """Identifies the H&E's content cheaply: dask's name for lazy images, else a digest of a strided sample."""
    from sr_spatial._adapter._elements import _image_levels

    data = _image_levels(spots.image)[0].data
    name = getattr(data, "name", None)
    if name is not None:
        return str(name)
    sample = np.ascontiguousarray(np.asarray(data)[:, ::97, ::89])
    return hashlib.sha256(sample.tobytes()).hexdigest() + str(np.shape(data))


def _bands(grid: BinGrid, k: int, *, margin: int) -> Iterator[tuple[int, int, int, BinGrid]]:
    """Bands of bin rows covering ``grid``, read at ``k`` pixels per bin within :data:`BAND_PIXELS`.

    Yields the band's first row, its number of rows, the first row read (``margin`` rows above it, where the
    grid has them) and the grid of the rows read (``margin`` more below too).
    """
    rows = max(1, BAND_PIXELS // max(grid.width * k * k, 1))
    for top in range(0, grid.height, rows):
        lo, hi = max(top - margin, 0), min(top + rows + margin, grid.height)
        band = type(grid)(x0=grid.x0, y0=grid.y0 + lo * grid.size, size=grid.size, height=hi - lo, width=grid.width)
        yield top, min(rows, grid.height - top), lo, band


def bin_features(
    spots: SpotData, grid: BinGrid, extractor: HistologyFeatures, *, show_progress_bar: bool = True
) -> np.ndarray:
    """Features of every bin of ``grid``, ``(n_features, height, width)``, from the H&E under it.

    The H&E is read in bands of bin rows (with the extractor's context as margin) at the extractor's
    :meth:`~HistologyFeatures.px_per_bin`, so memory does not grow with the slide. Results are cached in memory
    by image content, grid and extractor settings.
    """
    from sr_spatial._adapter._read import read_histology

    k = extractor.px_per_bin(grid.size)
    key = "|".join([_image_token(spots), repr(grid), str(k), extractor.cache_key()])
    if key in _cache:
        _cache.move_to_end(key)
        logger.info("Reusing the %s features of this slide computed earlier.", extractor.name)
        return _cache[key]
    if hasattr(extractor, "fit"):
        # Slide-wide levels (e.g. the nuclear stain threshold) come from one coarse overview, read in bands.
        overview_k = max(1, min(k, 8))
        extractor.fit(
            read_histology(spots, band, px_per_bin=overview_k) for *_, band in _bands(grid, overview_k, margin=0)
        )
    # Two more rows than the context, so pixel filters (blob bands up to 8 px wide) see past the band's edge.
    margin = extractor.context_bins + 2
    bands = []
    for top, rows, lo, band in progress_bar(
        list(_bands(grid, k, margin=margin)),
        desc=f"Features ({extractor.name})",
        unit="band",
        disable=not show_progress_bar,
    ):
        features = extractor.bin_features(read_histology(spots, band, px_per_bin=k), px_per_bin=k)
        bands.append(features[:, top - lo : top - lo + rows])
    features = np.concatenate(bands, axis=1)
    n_features = features.shape[0]
    reduced = extractor.reduce(features.reshape(n_features, -1))
    features = reduced.reshape(-1, grid.height, grid.width).astype(np.float32)
    _cache[key] = features
    while len(_cache) > CACHE_SIZE:
        _cache.popitem(last=False)
    return features
