"""Which elements of a SpatialData sr_spatial wrote: ``overwrite=True`` replaces those and nothing else.

Each call that writes elements records them in its table's ``uns[MARK]``; tables travel with the SpatialData
through ``write`` / ``read_zarr``, so the record outlives the session.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from anndata import AnnData
    from spatialdata import SpatialData

__all__ = ["MARK", "mark_written", "writers_of", "written_by_sr_spatial"]

#: Key of the record in a table's ``uns``.
MARK = "sr_spatial"


def mark_written(table: AnnData, *, writer: str, key: str, elements: dict[str, list[str]]) -> None:
    """Record in ``table`` that ``writer`` wrote ``elements`` (``{"images": [...], "tables": [...], ...}``)."""
    from sr_spatial._version import __version__

    table.uns[MARK] = {
        "writer": writer,
        "version": __version__,
        "key": key,
        "elements": {kind: list(names) for kind, names in elements.items()},
    }


def _legacy(name: str, table: AnnData) -> tuple[str | None, dict[str, list[str]]]:
    """Writer and elements of a call of sr_spatial 0.1, which wrote ``uns[key]["params"]`` but no record."""
    if not name.endswith("_table"):
        return None, {}
    key = name[: -len("_table")]
    params = table.uns.get(key, {}).get("params", {}) if isinstance(table.uns.get(key), dict) else {}
    if params.get("key_added") == key:
        return "superresolve", {"images": [key, f"{key}_std"], "shapes": [f"{key}_bins"], "tables": [name]}
    if "points_key" in params and "bin_size" in params:
        return "bin_transcripts", {"shapes": [key], "tables": [name]}
    return None, {}


def writers_of(sdata: SpatialData) -> dict[tuple[str, str], str]:
    """``{(kind, name): writer}`` of every element of ``sdata`` that a call of sr_spatial recorded as its own."""
    owned = {}
    for name, table in sdata.tables.items():
        record = table.uns.get(MARK)
        elements = record.get("elements") if isinstance(record, dict) else None
        if isinstance(elements, dict):
            by = str(record.get("writer"))
        else:
            by, elements = _legacy(name, table)
        for kind, names in elements.items():
            owned.update({(kind, str(n)): by for n in names})
    return owned


def written_by_sr_spatial(sdata: SpatialData, *, writer: str | None = None) -> set[tuple[str, str]]:
    """``(kind, name)`` of every element of ``sdata`` that a call of sr_spatial (of ``writer``, if given) wrote."""
    return {where for where, by in writers_of(sdata).items() if writer is None or by == writer}
