"""Writes that leave the user's files as they were when interrupted: staged beside, then moved into place.

A new element of a slide is first written into a hidden folder of the slide's own store (``.sr_spatial_partial``,
on the same file system, so a move is one rename) and moved to ``<kind>/<name>`` only once complete; the elements
it replaces are moved aside first and back again if the move fails or is interrupted (Ctrl-C). What a run killed
outright is undone by the next run (:func:`recover`: the earlier elements are put back unless the killed run had
marked all its moves done), and an element folder the store's metadata does not list (written by an older version
without staging, or moved in by a killed run) is a half-written one, replaced without asking.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import defaultdict
from pathlib import Path

__all__ = ["PARTIAL", "add_elements", "half_written", "recover", "write_store"]

#: Hidden folder of a slide's zarr store where new elements are staged.
PARTIAL = ".sr_spatial_partial"
#: Marks a staging folder whose moves all completed: what it still holds is only to be removed.
_DONE = "done"
#: Elements are moved in tables first: the table records which elements a run wrote, so a run stopped between two
#: moves leaves elements an ``--overwrite`` rerun recognises as its own.
_ORDER = {"tables": 0, "shapes": 1, "points": 2, "labels": 3, "images": 4}


def half_written(store: Path, elements: list[tuple[str, str]], listed: set[str]) -> list[tuple[str, str]]:
    """The ``(kind, name)`` of ``elements`` whose folder is in ``store`` though its metadata does not list it.

    ``listed`` holds ``"kind/name"`` of the elements the store's metadata lists; spatialdata lists an element only
    once it is completely written, so a folder it does not list was left by an interrupted write.
    """
    return [
        (kind, name) for kind, name in elements if (store / kind / name).exists() and f"{kind}/{name}" not in listed
    ]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True


def recover(store: Path) -> None:
    """Remove the staging folders of runs no longer running, first undoing the moves of one killed midway.

    A run killed before it marked its moves done (``DONE``) may have moved elements aside and new ones into their
    places: the new ones are removed and the earlier ones put back, so the store holds the earlier result whole.
    """
    base = store / PARTIAL
    if not base.is_dir():
        return
    for folder in base.iterdir():
        pid = folder.name.split("-", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        if not (folder / _DONE).exists():
            for aside in sorted((folder / "old").glob("*/*")):
                place = store / aside.parent.name / aside.name
                if place.exists():  # the killed run's new element, moved in after this one was moved aside
                    shutil.rmtree(place)
                os.replace(aside, place)
        shutil.rmtree(folder, ignore_errors=True)
    _remove_if_empty(base)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty: another run is staging there
        pass


def _move_all(moves: list[tuple[Path, Path]]) -> None:
    """Rename each ``(source, target)`` in turn; if one fails or is interrupted, undo the ones done, then raise."""
    done = []
    try:
        for source, target in moves:
            if not target.parent.exists():
                target.parent.mkdir(parents=True)
                group = source.parent / "zarr.json"
                if group.is_file():  # the element type's group (e.g. ``shapes``), new in this store
                    shutil.copyfile(group, target.parent / "zarr.json")
            os.replace(source, target)
            done.append((source, target))
    except BaseException:
        for source, target in reversed(done):
            os.replace(target, source)
        raise


def add_elements(sdata, store: Path, elements: list[tuple[str, str]], *, replace: list[tuple[str, str]]) -> None:
    """Write the in-memory ``elements`` (``(kind, name)``) of ``sdata`` into the slide's zarr ``store``.

    ``replace`` names the elements in the store they replace (earlier outputs, with ``--overwrite``, and
    half-written leftovers, see :func:`half_written`; call :func:`recover` first); they are removed only once the
    new ones are in place. Every other element, and the store's other files, stay as they are; a failure or an
    interrupt leaves the store as it was.
    """
    import spatialdata as sd

    base = store / PARTIAL
    base.mkdir(exist_ok=True)
    run = Path(tempfile.mkdtemp(prefix=f"{os.getpid()}-", dir=base))
    try:
        by_kind: dict[str, dict] = defaultdict(dict)
        for kind, name in elements:
            by_kind[kind][name] = sdata[name]
        staged = run / "new.zarr"
        sd.SpatialData(**by_kind).write(staged)
        ordered = sorted(elements, key=lambda element: _ORDER[element[0]])
        aside = [(store / kind / name, run / "old" / kind / name) for kind, name in replace]
        _move_all(aside + [(staged / kind / name, store / kind / name) for kind, name in ordered])
        (run / _DONE).touch()
    finally:
        shutil.rmtree(run, ignore_errors=True)
        _remove_if_empty(base)
    # spatialdata reads a store through its consolidated metadata: list the new elements there.
    if sdata.has_consolidated_metadata():
        sdata.write_consolidated_metadata()


def write_store(sdata, path: Path, *, replace: bool) -> None:
    """Write ``sdata`` as a new zarr store at ``path``, replacing the store there (``replace``) only once complete.

    The store is written under a hidden name beside ``path`` and renamed into place; an earlier store at ``path``
    is moved aside first and removed last, or moved back if the rename fails.
    """
    path = Path(os.path.abspath(path))
    partial = path.parent / f".{path.name}.sr_spatial-partial-{os.getpid()}"
    old = path.parent / f".{path.name}.sr_spatial-old-{os.getpid()}"
    try:
        sdata.write(partial)
        moves = [(path, old)] if replace and path.exists() else []
        _move_all([*moves, (partial, path)])
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
