"""Gene selection and normalisation, delegated to scanpy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

__all__ = ["DETECTION_FLOOR", "normalize", "select_genes", "units"]


def units(target_sum: float = 1e4) -> str:
    """The units of every expression value sr_spatial writes: ``"log1p(counts per 10,000)"`` by default.

    A spot's (or bin's) counts of a gene over its total counts, times ``target_sum``, then ``log1p`` (natural
    log), as :func:`normalize` computes them; a standard deviation is in the same log units.
    """
    return f"log1p(counts per {target_sum:,.0f})"


def normalize(adata: AnnData, *, target_sum: float = 1e4, copy: bool = False) -> AnnData | None:
    """Library-size normalise raw counts and take ``log1p``, via :func:`scanpy.pp.normalize_total` and ``log1p``.

    Parameters
    ----------
    adata
        Raw counts in ``.X``.
    target_sum
        Counts per spot after normalisation. A fixed value (not the median library size) keeps maps from
        different slides and from the model on the same scale.
    copy
        Return a normalised copy instead of changing ``adata``.

    Returns
    -------
    The normalised copy if ``copy=True``, else ``None`` and ``adata.X`` is replaced by log-normalised values.
    """
    import scanpy as sc

    adata = adata.copy() if copy else adata
    sc.pp.normalize_total(adata, target_sum=target_sum)
    sc.pp.log1p(adata)
    return adata if copy else None


#: The fraction of spots a gene must be detected in to be chosen by default: ``1 - 1/e`` (63 %), the detection of a
#: gene that averages one count per spot under Poisson sampling. Below it most spots hold no count of the gene, and
#: what a map shows within a spot is mostly which spots happened to catch a molecule.
DETECTION_FLOOR = 1.0 - float(np.exp(-1.0))


def select_genes(
    adata: AnnData, *, genes: Sequence[str] | None = None, n_top_genes: int = 50, target_sum: float = 1e4
) -> list[str]:
    """Choose the genes to super-resolve: a given list, or the variable genes detected in most spots.

    Without ``genes``, the candidates are the genes detected (at least one count) in at least
    :data:`DETECTION_FLOOR` (``1 - 1/e``, 63 %) of the spots: the detection of a gene that averages one count per
    spot, below which most spots measure nothing of it. Where fewer than ``n_top_genes`` genes pass, the floor
    is lowered to the detection of the ``n_top_genes``-th most detected gene. Among the candidates the
    ``n_top_genes`` most variable are taken by their Pearson residual variance on the raw counts
    (:func:`scanpy.experimental.pp.highly_variable_genes`, ``flavor="pearson_residuals"``), which ranks a gene by
    how much more it varies between spots than its depth alone explains. That keeps abundant markers of a tissue
    (in a HER2+ breast section ERBB2, CD74, the immunoglobulins) and leaves out genes seen in a few spots, which
    dispersion-based rankings (``flavor="seurat"``, ``"seurat_v3"``) put first. The same rule chooses the genes of
    :func:`sr_spatial.tl.superresolve`, :func:`sr_spatial.tl.train` (on references: among the genes every slide
    shares, ranked on the target) and the command line.

    Parameters
    ----------
    adata
        Raw counts in ``.X``; ``adata`` is not changed.
    genes
        Gene names to use, in this order. Every name must be in ``adata.var_names``.
    n_top_genes
        Used when ``genes`` is ``None``: how many genes to take. All genes detected anywhere are taken when the
        table has fewer.
    target_sum
        Kept for callers that pass it; the ranking reads raw counts, whose depth it models itself.

    Returns
    -------
    The selected gene names, the most variable first.
    """
    var_names = adata.var_names.astype(str)
    if var_names.has_duplicates:
        dups = var_names[var_names.duplicated()].unique()[:5].tolist()
        msg = f"Gene names are duplicated (e.g. {dups}). Make them unique first with `adata.var_names_make_unique()`."
        raise ValueError(msg)
    if genes is not None:
        genes = [genes] if isinstance(genes, str) else list(genes)
        if not genes:
            msg = "`genes` is empty; pass at least one gene name or `genes=None` to pick highly variable genes."
            raise ValueError(msg)
        missing = [g for g in genes if g not in var_names]
        if missing:
            msg = (
                f"{len(missing)} of {len(genes)} genes are not in the table: {missing[:10]}. "
                f"Genes available include {var_names[:10].tolist()}."
            )
            raise KeyError(msg)
        if len(set(genes)) != len(genes):
            msg = "`genes` lists a gene more than once; pass each gene once."
            raise ValueError(msg)
        return genes
    if n_top_genes < 1:
        msg = f"`n_top_genes` must be at least 1, got {n_top_genes}."
        raise ValueError(msg)
    detected = np.asarray((adata.X > 0).mean(axis=0)).ravel()
    if n_top_genes >= (detected > 0).sum():
        return var_names[detected > 0].tolist()
    floor = min(DETECTION_FLOOR, float(np.sort(detected)[::-1][n_top_genes - 1]))
    candidates = np.flatnonzero(detected >= floor)
    if len(candidates) == n_top_genes:
        return var_names[candidates].tolist()
    return var_names[candidates[_rank_by_residual_variance(adata, candidates)[:n_top_genes]]].tolist()


def _rank_by_residual_variance(adata: AnnData, candidates: np.ndarray) -> np.ndarray:
    """Positions in ``candidates``, most variable first by analytic Pearson residuals (Lause et al. 2021)."""
    import anndata as ad
    import scanpy as sc
    from scipy import sparse

    counts = adata.X[:, candidates]
    counts = sparse.csr_matrix(counts, dtype=np.float32) if sparse.issparse(counts) else np.asarray(counts, np.float32)
    # A spot with no count among the candidates (a 1-UMI spot) has no depth to model and would make every
    # residual NaN.
    has_counts = np.asarray(counts.sum(axis=1)).ravel() > 0
    view = ad.AnnData(X=counts[has_counts])
    # Residuals are computed densely a chunk of genes at a time: keep a chunk near 64 MiB on slides of many bins.
    chunksize = int(np.clip(2**24 // max(view.n_obs, 1), 1, 1000))
    sc.experimental.pp.highly_variable_genes(
        view, flavor="pearson_residuals", n_top_genes=min(len(candidates), view.n_vars), chunksize=chunksize
    )
    residual = np.nan_to_num(view.var["residual_variances"].to_numpy(dtype=float), nan=-np.inf)
    return np.argsort(-residual, kind="stable")
