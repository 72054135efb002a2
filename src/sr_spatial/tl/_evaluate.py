"""Accuracy of a super-resolved map against a high-resolution truth map."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Sequence

    from spatialdata import SpatialData

__all__ = ["bin_values", "evaluate", "full_resolution", "masked_ssim", "regrid_to"]


def _affine(element, cs: str) -> np.ndarray:
    from spatialdata.transformations import get_transformation

    tf = get_transformation(element, to_coordinate_system=cs)
    return np.asarray(tf.to_affine_matrix(input_axes=("x", "y"), output_axes=("x", "y")), dtype=float)


def full_resolution(image):
    """The full-resolution level of an image element, multiscale or not, as a ``(c, y, x)`` DataArray."""
    from sr_spatial._adapter._elements import full_resolution_level

    return full_resolution_level(image)


def regrid_to(sdata: SpatialData, source_key: str, target_key: str, *, channels: Sequence[str]) -> np.ndarray:
    """Average ``source_key``'s pixels over each pixel of ``target_key`` (both images, sharing a coordinate system).

    Each target pixel takes the mean of the source pixels it covers (box average through an integral image),
    which is how a coarser measurement of the same tissue would see it. Not
    :func:`skimage.transform.downscale_local_mean`: the two grids may differ by a non-integer factor and an
    offset, which it cannot express.

    Returns
    -------
    Array ``(len(channels), target height, target width)``.
    """
    from spatialdata.transformations import get_transformation

    source, target = sdata.images[source_key], sdata.images[target_key]
    common = [cs for cs in get_transformation(target, get_all=True) if cs in get_transformation(source, get_all=True)]
    if not common:
        msg = f"Images {source_key!r} and {target_key!r} share no coordinate system; they cannot be compared."
        raise ValueError(msg)
    target_to_source = np.linalg.inv(_affine(source, common[0])) @ _affine(target, common[0])
    if abs(target_to_source[0, 1]) > 1e-9 or abs(target_to_source[1, 0]) > 1e-9:
        msg = "Comparing images that are rotated against each other is not supported."
        raise ValueError(msg)
    src = full_resolution(source)
    tgt = full_resolution(target)
    missing = [c for c in channels if c not in list(src.coords["c"].values)]
    if missing:
        msg = f"Image {source_key!r} lacks channels {missing[:10]}."
        raise KeyError(msg)
    height, width = tgt.sizes["y"], tgt.sizes["x"]
    sx, tx, sy, ty = target_to_source[0, 0], target_to_source[0, 2], target_to_source[1, 1], target_to_source[1, 2]

    def edges(n, s, t, limit):
        lo = np.clip(np.round(s * np.arange(n) + t).astype(int), 0, limit - 1)
        hi = np.clip(np.round(s * np.arange(1, n + 1) + t).astype(int) - 1, lo, limit - 1)
        return lo, hi

    x_lo, x_hi = edges(width, sx, tx, src.sizes["x"])
    y_lo, y_hi = edges(height, sy, ty, src.sizes["y"])
    area = np.outer(y_hi - y_lo + 1, x_hi - x_lo + 1).astype(np.float64)
    out = np.empty((len(channels), height, width), dtype=np.float32)
    for index, channel in enumerate(channels):
        plane = np.asarray(src.sel(c=channel).values, dtype=np.float64)
        # Summed-area table with a zero row and column in front: any box sum is four lookups, vectorised
        # over the whole target grid (skimage's integrate loops in Python, minutes on a large slide).
        table = np.zeros((plane.shape[0] + 1, plane.shape[1] + 1))
        table[1:, 1:] = plane.cumsum(axis=0).cumsum(axis=1)
        box = (
            table[np.ix_(y_hi + 1, x_hi + 1)]
            - table[np.ix_(y_lo, x_hi + 1)]
            - table[np.ix_(y_hi + 1, x_lo)]
            + table[np.ix_(y_lo, x_lo)]
        )
        out[index] = box / area
    return out


def masked_ssim(prediction: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    """SSIM of ``prediction`` against ``truth`` (2D maps) averaged over the bins of ``mask`` only.

    The maps are cropped to the mask's bounding box with 0 outside it, and the SSIM map is averaged over the tissue,
    so empty glass does not count as perfect agreement; ``NaN`` where the box is smaller than 3 x 3 bins.
    """
    from skimage.metrics import structural_similarity

    rows, cols = np.nonzero(mask)
    box = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    p, t = np.where(mask, prediction, 0.0)[box], np.where(mask, truth, 0.0)[box]
    win = min(7, *(s - (1 - s % 2) for s in p.shape))
    if win < 3:
        return float("nan")
    data_range = float(max(t.max() - t.min(), 1e-12))
    # Average the SSIM map over tissue only, so empty glass does not count as perfect agreement.
    _, ssim_map = structural_similarity(p, t, win_size=win, data_range=data_range, full=True)
    return float(ssim_map[mask[box]].mean())


def bin_values(
    sdata: SpatialData, key: str, *, truth_key: str, genes: Sequence[str] | None = None
) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """The super-resolved mean, its standard deviation and the truth (box-averaged) on the tissue's bins.

    Returns
    -------
    ``(genes, mean, std, truth)``, the arrays ``(n_bins, n_genes)``.
    """
    from sr_spatial._adapter._write import output_names

    table = sdata.tables[output_names(key)["table"]]
    genes = table.var_names.astype(str).tolist() if genes is None else list(genes)
    rows, cols = table.obs["array_row"].to_numpy(), table.obs["array_col"].to_numpy()
    truth = regrid_to(sdata, truth_key, key, channels=genes)[:, rows, cols].T
    mean = np.asarray(full_resolution(sdata.images[key]).sel(c=genes).values)[:, rows, cols].T
    std = np.asarray(full_resolution(sdata.images[f"{key}_std"]).sel(c=genes).values)[:, rows, cols].T
    return genes, mean.astype(np.float64), std.astype(np.float64), truth.astype(np.float64)


def evaluate(sdata: SpatialData, key: str, *, truth_key: str, genes: Sequence[str] | None = None) -> pd.DataFrame:
    """Score a super-resolved map against a high-resolution truth, gene by gene.

    The truth image is averaged over each super-resolved bin (box average), then compared on the bins in the
    tissue (those in ``sdata.tables[f"{key}_table"]``), all in log-normalised expression.

    Parameters
    ----------
    sdata
        Holds the output of :func:`sr_spatial.tl.superresolve` and the truth.
    key
        ``key_added`` of that call.
    truth_key
        Image element with the true expression (channels = genes), e.g. ``"demo_truth"`` from
        :func:`sr_spatial.datasets.demo`.
    genes
        Genes to score; default all super-resolved genes.

    Returns
    -------
    One row per gene with columns ``pearson`` (Pearson r), ``ssim`` (:func:`skimage.metrics.structural_similarity`),
    ``rmse``, ``spot_residual`` (relative disagreement with the measured spots, see
    :func:`sr_spatial.tl.spot_residual`), and, where the map has a spread (``f"{key}_std"``), the calibration of
    its uncertainty: ``coverage_50``, ``coverage_80``, ``coverage_90``, ``coverage_95`` (fraction of true bin
    values inside the central normal interval of that nominal level) and ``sd_error_spearman`` (rank correlation
    of the reported standard deviation with the absolute error; NaN where the spread is constant).
    """
    from sr_spatial._adapter._write import output_names
    from sr_spatial.core._uncertainty import LEVELS, interval_coverage, sd_error_rank

    table_key = output_names(key)["table"]
    for name, kind in ((key, "images"), (truth_key, "images"), (table_key, "tables")):
        if name not in getattr(sdata, kind):
            msg = f"{kind[:-1].capitalize()} {name!r} not found. Available: {sorted(getattr(sdata, kind).keys())}."
            raise KeyError(msg)
    table = sdata.tables[table_key]
    all_genes = table.var_names.astype(str).tolist()
    genes = all_genes if genes is None else list(genes)
    missing = [g for g in genes if g not in all_genes]
    if missing:
        msg = f"Genes {missing[:10]} were not super-resolved under {key!r}."
        raise KeyError(msg)
    prediction = full_resolution(sdata.images[key])
    truth = regrid_to(sdata, truth_key, key, channels=genes)
    mask = np.zeros((prediction.sizes["y"], prediction.sizes["x"]), dtype=bool)
    mask[table.obs["array_row"].to_numpy(), table.obs["array_col"].to_numpy()] = True
    per_gene_residual = dict(zip(all_genes, np.asarray(table.uns[key].get("spot_residual_per_gene")), strict=False))
    spread = full_resolution(sdata.images[f"{key}_std"]) if f"{key}_std" in sdata.images else None
    rows = []
    for index, gene in enumerate(genes):
        p = np.asarray(prediction.sel(c=gene).values, dtype=np.float64)
        t = truth[index].astype(np.float64)
        pm, tm = p[mask], t[mask]
        r = np.corrcoef(pm, tm)[0, 1] if pm.std() > 0 and tm.std() > 0 else np.nan
        rows.append(
            {
                "gene": gene,
                "pearson": float(r),
                "ssim": masked_ssim(p, t, mask),
                "rmse": float(np.sqrt(np.mean((pm - tm) ** 2))),
                "spot_residual": float(per_gene_residual.get(gene, np.nan)),
            }
        )
        sd = None if spread is None else np.asarray(spread.sel(c=gene).values, dtype=np.float64)[mask]
        if sd is not None and sd.max() > 0:
            coverage = interval_coverage(pm[:, None], sd[:, None], tm[:, None], levels=LEVELS)
            rows[-1].update({f"coverage_{round(100 * level)}": float(c[0]) for level, c in coverage.items()})
            rows[-1]["sd_error_spearman"] = sd_error_rank(pm, sd, tm)
    return pd.DataFrame(rows).set_index("gene")
