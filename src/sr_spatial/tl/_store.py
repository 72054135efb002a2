"""The zarr store that :func:`~sr_spatial.tl.superresolve` streams its images into.

Nothing here writes over or deletes what sr_spatial did not write. The store's root group is marked as
sr_spatial's (attribute :data:`MARK`); a folder or store holding anything else, or the slide's own zarr store,
is refused. Every call writes a new group ``<key_added>/<n>`` holding the arrays ``mean`` and ``std``, so calls
with other keys share the store without touching each other's images; a call that fails removes only its own
group, and a successful ``overwrite=True`` removes the earlier groups of its key once the new images are in place.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

__all__ = ["MARK", "ImageStore", "check_image_store"]

#: Root-group attribute that marks a store as written by sr_spatial.
MARK = "sr_spatial"


def _as_path(store) -> Path | None:
    """The folder of a path or of a local zarr store; ``None`` for other stores (memory, remote)."""
    if isinstance(store, str | Path):
        return Path(store)
    root = getattr(store, "root", None)
    return Path(root) if isinstance(root, str | Path) else None


def _inside(path: Path, folder: Path) -> bool:
    path, folder = path.resolve(), folder.resolve()
    return path == folder or folder in path.parents


def _read_root(store):
    """The store's root group, or ``None`` if the store holds no zarr group."""
    import zarr

    try:
        return zarr.open_group(store, mode="r")
    except (FileNotFoundError, ValueError):
        return None


def _is_empty(store) -> bool:
    path = _as_path(store)
    if path is not None:
        return not path.exists() or (path.is_dir() and not any(path.iterdir()))
    from zarr.core.sync import sync

    return sync(store.is_empty(""))


def check_image_store(store, key: str, *, overwrite: bool, slide_path: str | Path | None = None) -> None:
    """Raise before any work if ``store`` cannot receive the images of ``key``; leaves nothing behind.

    Refused: a read-only store; the slide's own zarr store (or a folder inside it); a folder or store holding
    data sr_spatial did not write; a store already holding images of ``key`` unless ``overwrite``.
    """
    if not isinstance(store, str | Path) and not hasattr(store, "read_only"):
        msg = f"`image_store` must be a folder path or a zarr store, got {type(store).__name__}."
        raise TypeError(msg)
    if getattr(store, "read_only", False):
        msg = "The zarr store passed as `image_store` is read-only; open it writable or pass a folder path."
        raise ValueError(msg)
    path = _as_path(store)
    if path is not None and slide_path is not None and _inside(path, Path(slide_path)):
        msg = (
            f"`image_store` {str(path)!r} is the slide's own zarr store ({str(slide_path)!r}); writing there would "
            "destroy the slide. Pass a new folder, e.g. 'slide_superres.zarr'."
        )
        raise ValueError(msg)
    if path is not None and path.exists() and not path.is_dir():
        msg = f"`image_store` {str(path)!r} is a file. Pass a new folder, e.g. 'slide_superres.zarr'."
        raise ValueError(msg)
    if not _is_empty(store):
        root = _read_root(store)
        where = repr(str(path)) if path is not None else "passed"
        if root is None or MARK not in root.attrs:
            msg = (
                f"`image_store` {where} holds data sr_spatial did not write; it is never overwritten. Pass a new "
                "or empty folder, or a store an earlier `superresolve` call wrote."
            )
            raise ValueError(msg)
        if key in root and not overwrite:
            msg = (
                f"`image_store` {where} already holds the images of {key!r}. Pass another `key_added`, or "
                "`overwrite=True` to replace them."
            )
            raise ValueError(msg)
    if path is None:
        return
    if path.exists():
        if not os.access(path, os.W_OK):
            msg = f"`image_store` {str(path)!r} is read-only. Pass a folder you can write to."
            raise ValueError(msg)
        return
    try:
        path.mkdir(parents=True)
    except OSError as err:
        msg = f"Cannot create `image_store` {str(path)!r} ({err.strerror}). Pass a folder you can write to."
        raise ValueError(msg) from err
    path.rmdir()


class ImageStore:
    """The group one :func:`~sr_spatial.tl.superresolve` call writes its images into: ``<key>/<n>``."""

    def __init__(self, store, key: str) -> None:
        import zarr

        from sr_spatial._version import __version__

        path = _as_path(store)
        self._store = store
        self._path = path
        # What to remove on failure: the whole store if this call made it (or found it empty), else its own group.
        self._new_store = _is_empty(store)
        self._folder_existed = path is not None and path.exists()
        try:
            self.root = zarr.open_group(store, mode="a")
            if self._new_store:
                self.root.attrs[MARK] = {"version": __version__}
            group = self.root.require_group(key)
            runs = [int(name) for name in group.group_keys() if name.isdigit()]
            self.name = str(max(runs, default=0) + 1)
            self.key = key
            self.group = group.create_group(self.name)
        except (PermissionError, OSError) as err:
            self.discard()
            msg = f"Cannot write the super-resolved images to {store!r} ({err}). Pass a folder you can write to."
            raise ValueError(msg) from err

    def finish(self, *, drop_earlier: bool) -> None:
        """Mark this call's images complete; with ``drop_earlier``, remove the earlier groups of the same key."""
        self.group.attrs["complete"] = True
        if not drop_earlier:
            return
        group = self.root[self.key]
        for name in list(group.group_keys()):
            if name != self.name:
                del group[name]

    def discard(self) -> None:
        """Remove what this call wrote, after a failure; an earlier call's images stay."""
        if self._new_store:
            if self._path is not None:
                shutil.rmtree(self._path, ignore_errors=True)
                if self._folder_existed:
                    self._path.mkdir(exist_ok=True)
            else:
                from zarr.core.sync import sync

                sync(self._store.clear())
            return
        if getattr(self, "group", None) is not None:
            del self.root[self.key][self.name]
            if not list(self.root[self.key].group_keys()):
                del self.root[self.key]
