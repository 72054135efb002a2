"""Reference slides by name in refusals, and the genes every slide of a reference fit shares."""

from __future__ import annotations

import logging
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np

from sr_spatial._adapter._read import resolve_table_key, table_genes
from sr_spatial.pp._genes import select_genes

if TYPE_CHECKING:
    from collections.abc import Sequence

    from spatialdata import SpatialData

logger = logging.getLogger("sr_spatial")

__all__ = ["about_reference", "genes_of_request", "reference_name", "shared_genes"]


def reference_name(index: int, slide) -> str:
    """How a refusal names a reference: its place in the list passed, and the store it was read from."""
    path = getattr(slide, "path", None)
    return f"reference {index}" + (f" ({path})" if path is not None else "")


@contextmanager
def about_reference(index: int, slide):
    """Name the reference (:func:`reference_name`) at the start of any refusal raised about it inside."""
    try:
        yield
    except (ValueError, KeyError, TypeError) as err:
        message = err.args[0] if len(err.args) == 1 else None
        if not isinstance(message, str) or message.startswith("In reference "):
            raise
        raise type(err)(f"In {reference_name(index, slide)}: {message}") from err


def shared_genes(
    references: Sequence[SpatialData],
    target: SpatialData | None,
    genes: list[str] | None,
    *,
    table_key: str,
    n_top_genes: int = 50,
) -> list[str] | None:
    """Check ``genes`` are in every reference (and the target); without ``genes``, ``n_top_genes`` of those all share.

    A gene missing from a reference is refused with where it is missing, never filled with zeros. Without
    ``genes`` the shared genes are ranked as :func:`sr_spatial.pp.select_genes` ranks a slide's, on the target's
    spots (the slide the model is for), or the first reference's without a target. Returns the genes to read
    (``None``: choose among all, for a single reference without a target).
    """
    tables = []
    for index, reference in enumerate(references):
        with about_reference(index, reference):
            tables.append((reference_name(index, reference), table_genes(reference, table_key)))
    if target is not None:
        tables.append(("the target", table_genes(target, table_key)))
    if genes is not None:
        missing = {name: [g for g in genes if g not in set(names)] for name, names in tables}
        missing = {name: absent for name, absent in missing.items() if absent}
        if missing:
            detail = "; ".join(f"{name} lacks {absent[:10]}" for name, absent in missing.items())
            msg = f"Genes must be measured on every slide: {detail}. Pass genes all slides share."
            raise KeyError(msg)
        return genes
    if len(tables) == 1:
        return None
    common = set(tables[0][1]).intersection(*(set(names) for _, names in tables[1:]))
    if not common:
        measured = "; ".join(f"{name} measures {len(names)} genes, e.g. {list(names[:3])}" for name, names in tables)
        msg = (
            f"The slides share no gene: {measured}. A model learns genes measured on every reference and on the "
            "target; pass references of the target's gene panel (and species), or check the tables' gene names."
        )
        raise ValueError(msg)
    dropped = {name: len(set(names) - common) for name, names in tables}
    if any(dropped.values()):
        logger.info("Genes not measured on every slide are left out: %s.", dropped)
    ranked_on = target if target is not None else references[0]
    table = ranked_on.tables[resolve_table_key(ranked_on, table_key)]
    columns = np.flatnonzero(table.var_names.astype(str).isin(common))
    chosen = select_genes(table[:, columns], n_top_genes=n_top_genes)
    ranked = "the target" if target is not None else "reference 0"
    logger.info("Chose %d of the %d genes all slides measure, ranked on %s: %s.", len(chosen), len(common), ranked,
                ", ".join(chosen[:8]) + (", ..." if len(chosen) > 8 else ""))  # fmt: skip
    return chosen


def genes_of_request(request) -> list[str] | None:
    """:func:`shared_genes` of a :class:`~sr_spatial.core._method.TrainRequest` on references."""
    return shared_genes(
        request.slides,
        request.target,
        request.genes,
        table_key=request.slide.table_key,
        n_top_genes=request.n_top_genes,
    )
