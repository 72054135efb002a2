"""Gene selection and normalisation, delegated to scanpy."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Sequence

    from anndata import AnnData

__all__ = ["normalize", "select_genes"]


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


def select_genes(
    adata: AnnData, *, genes: Sequence[str] | None = None, n_top_genes: int = 50, target_sum: float = 1e4
) -> list[str]:
    """Choose the genes to super-resolve: a given list, or the top highly variable genes.

    Parameters
    ----------
    adata
        Raw counts in ``.X``; ``adata`` is not changed.
    genes
        Gene names to use, in this order. Every name must be in ``adata.var_names``.
    n_top_genes
        Used when ``genes`` is ``None``: how many highly variable genes to take
        (:func:`scanpy.pp.highly_variable_genes`, ``flavor="seurat"`` on log-normalised counts). All genes are
        taken when the table has fewer.
    target_sum
        Normalisation target used before ranking genes.

    Returns
    -------
    The selected gene names.
    """
    import scanpy as sc

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
    expressed = np.asarray((adata.X > 0).sum(axis=0)).ravel() > 0
    if n_top_genes >= expressed.sum():
        return var_names[expressed].tolist()
    lognorm = normalize(adata[:, expressed], target_sum=target_sum, copy=True)
    sc.pp.highly_variable_genes(lognorm, n_top_genes=n_top_genes, flavor="seurat")
    # Ties in normalised dispersion (genes alone in their mean bin) would let extra genes through the cut-off.
    ranked = lognorm.var.sort_values(["dispersions_norm", "dispersions"], ascending=False)
    return ranked.index[:n_top_genes].astype(str).tolist()
