"""Folders a call writes kept apart from the user's slide and from each other, judged on real paths.

Two path strings can differ and still name one folder (``./slide.zarr`` and ``slide.zarr/``, a symbolic link, a
folder inside the other), so every comparison here is between :func:`os.path.realpath` of both. An output
inside the slide deletes or buries part of it; an output around the slide replaces the slide with it.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["check_apart", "enclosing_zarr", "real", "relation"]


def real(path: str | os.PathLike) -> Path:
    """The absolute path with every symbolic link of its existing part resolved (``~`` expanded)."""
    return Path(os.path.realpath(os.path.expanduser(os.fspath(path))))


def relation(path: str | os.PathLike, other: str | os.PathLike) -> str | None:
    """How ``path`` lies to ``other``: ``"is"``, ``"is inside"``, ``"holds"`` (around it) or ``None`` (apart)."""
    path, other = real(path), real(other)
    if path == other:
        return "is"
    if other in path.parents:
        return "is inside"
    if path in other.parents:
        return "holds"
    return None


def check_apart(named: dict[str, str | os.PathLike | None], *, inputs: tuple[str, ...] = ()) -> None:
    """Raise ``ValueError`` if two of the ``named`` folders are one folder, or one lies inside the other.

    ``named`` maps how the user named each folder (``"--out"``, ```image_store```) to its path, or ``None`` where
    not given; the folders named in ``inputs`` are only read, so two inputs may overlap. Checked before any work.
    """
    given = [(name, path) for name, path in named.items() if path is not None]
    for i, (name, path) in enumerate(given):
        for other, other_path in given[i + 1 :]:
            if name in inputs and other in inputs:
                continue
            if name in inputs:  # said of the folder written: "--out ... is inside SLIDE ..."
                name, path, other, other_path = other, other_path, name, path
            how = relation(path, other_path)
            if how is None:
                continue
            msg = (
                f"{name} {_shown(path)} {how} {other} {_shown(other_path)}; writing {name} there would change or "
                f"delete {other}. Pass as {name} a folder outside {other} and not holding it, e.g. a new one beside it."
            )
            raise ValueError(msg)


def _shown(path: str | os.PathLike) -> str:
    """The path as given, and its real path where a link or ``..`` makes them differ."""
    given = os.path.abspath(os.path.expanduser(os.fspath(path)))
    return repr(os.fspath(path)) + ("" if str(real(path)) == given else f" (really {str(real(path))!r})")


def enclosing_zarr(path: str | os.PathLike) -> Path | None:
    """The zarr store ``path`` is or lies inside (a folder with ``zarr.json`` or ``.zgroup``), else ``None``."""
    for folder in (real(path), *real(path).parents):
        if (folder / "zarr.json").is_file() or (folder / ".zgroup").is_file():
            return folder
    return None
