"""Transcripts of imaging-based platforms (Xenium) counted in square bins: spots that any slide function takes."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sr_spatial._adapter._elements import shallow_copy
from sr_spatial._adapter._transcript_bins import bin_points
from sr_spatial._validate import check_name

if TYPE_CHECKING:
    from spatialdata import SpatialData

__all__ = ["bin_transcripts"]


def bin_transcripts(
    sdata: SpatialData,
    points_key: str = "transcripts",
    *,
    bin_size: float,
    min_qv: float | None = 20.0,
    key_added: str | None = None,
    overwrite: bool = False,
    inplace: bool = True,
) -> SpatialData | None:
    """Count transcripts per gene in square bins, turning points into a measurement of square spots.

    The bins then serve as spots for :func:`sr_spatial.tl.superresolve` (a coarse measurement to refine) or as
    the high-resolution truth of :func:`sr_spatial.tl.train` with ``reference=True``. Bins are axis-aligned in
    the points' own coordinates and placed on any image through the elements' transformations, e.g. the H&E
    ``he_image`` that :func:`spatialdata_io.xenium` registers with the alignment file's affine. Control probes
    and codewords (``NegControlProbe_``, ``BLANK_``, ...) are not counted.

    Parameters
    ----------
    sdata
        A slide with transcripts, e.g. from :func:`spatialdata_io.xenium`.
    points_key
        The points element; its ``feature_key`` column names each transcript's gene.
    bin_size
        Side of a bin in the points' units (µm for Xenium). 25 µm bins are what Visium's 100 µm spot pitch
        becomes at ``scale=4``.
    min_qv
        Drop transcripts with a ``qv`` (Phred quality) below this, where the points have a ``qv`` column; 20 is
        10x Genomics' threshold. ``None`` keeps all.
    key_added
        Name of the bins; default ``f"{points_key}_bins"``.
    overwrite
        Replace bins written earlier under the same name.
    inplace
        Write into ``sdata``; otherwise into a copy that is returned.

    Returns
    -------
    ``None`` if ``inplace``, else the copy. Written (``key = key_added``):

    - ``sdata.shapes[key]``: one square per bin holding transcripts, with the points' transformations.
    - ``sdata.tables[f"{key}_table"]``: raw counts (bins x genes) annotating the squares (``region``,
      ``bin_id``), ``obs[["array_row", "array_col"]]``, ``obsm["spatial"]`` (bin centres in the points' units)
      and ``uns[key]["params"]``.
    """
    key = key_added or f"{points_key}_bins"
    check_name(key)
    target = sdata if inplace else shallow_copy(sdata)
    bin_points(target, points_key, bin_size=bin_size, key=key, min_qv=min_qv, overwrite=overwrite)
    return None if inplace else target
