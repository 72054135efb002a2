"""The zarr store that :func:`~sr_spatial.tl.superresolve` streams its images into.

Nothing here writes over or deletes what sr_spatial did not write. The store's root group is marked as
sr_spatial's (attribute :data:`MARK`); a folder or store holding anything else, or the slide's own zarr store,
is refused. Every call writes a new group ``<key_added>/<n>`` holding the arrays ``mean`` and ``std``, so calls
with other keys share the store without touching each other's images; a call that fails removes only its own
group (and the store's root or folder only if it made them and nothing else is there), and a successful
``overwrite=True`` removes the earlier complete groups of its key once the new images are in place; an element
still reading a removed group then fails loudly instead of reading NaN.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from sr_spatial._paths import relation

if TYPE_CHECKING:
    import dask.array as da

__all__ = ["MARK", "ImageStore", "check_image_store", "guarded_dask"]

#: Root-group attribute that marks a store as written by sr_spatial.
MARK = "sr_spatial"


def _as_path(store) -> Path | None:
    """The folder of a path or of a local zarr store; ``None`` for other stores (memory, remote)."""
    if isinstance(store, str | Path):
        return Path(store)
    root = getattr(store, "root", None)
    return Path(root) if isinstance(root, str | Path) else None


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
    how = relation(path, slide_path) if path is not None and slide_path is not None else None
    if how is not None:
        msg = (
            f"`image_store` {str(path)!r} {how} the slide's own zarr store ({str(slide_path)!r}, compared as real "
            "paths); writing there would destroy the slide. Pass a new folder outside the slide, e.g. "
            "'slide_superres.zarr'."
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
    """The group one :func:`~sr_spatial.tl.superresolve` call writes its images into: ``<key>/<n>``.

    The call owns that group only. After a failure it removes the group, the group ``<key>`` if it made it and
    nothing else is there, and the store's root (and folder) if it made them and nothing else is there: images
    another call wrote meanwhile, and any file of the user's, stay.
    """

    def __init__(self, store, key: str) -> None:
        import zarr
        from zarr.errors import ContainsGroupError

        from sr_spatial._version import __version__

        path = _as_path(store)
        self._store = store
        self._path = path
        self.key = key
        self.group = None
        self._made_folder = path is not None and not path.exists()
        self._made_root = False
        self._made_key = False
        try:
            self.root = zarr.open_group(store, mode="a")
            if MARK not in self.root.attrs:
                self._made_root = True
                self.root.attrs[MARK] = {"version": __version__}
            self._made_key = key not in self.root
            group = self.root.require_group(key)
            # Another call may pick the same number meanwhile: the one that creates the group first owns it.
            for _ in range(1000):
                runs = [int(name) for name in group.group_keys() if name.isdigit()]
                name = str(max(runs, default=0) + 1)
                try:
                    self.group = group.create_group(name)
                except ContainsGroupError:
                    continue
                self.name = name
                break
        except (PermissionError, OSError) as err:
            self.discard()
            msg = f"Cannot write the super-resolved images to {store!r} ({err}). Pass a folder you can write to."
            raise ValueError(msg) from err
        except BaseException:
            self.discard()
            raise

    def finish(self, *, drop_earlier: bool) -> None:
        """Mark this call's images complete; with ``drop_earlier``, remove the complete earlier groups of the key.

        Groups of calls still running (not complete) and of later calls are left alone.
        """
        self.group.attrs["complete"] = True
        if not drop_earlier:
            return
        group = self.root[self.key]
        for name in list(group.group_keys()):
            if name.isdigit() and int(name) < int(self.name) and group[name].attrs.get("complete", False):
                del group[name]

    def discard(self) -> None:
        """Remove what this call wrote, after a failure; what other calls and the user put there stays."""
        root = getattr(self, "root", None)
        if root is None:
            self._remove_folder()
            return
        try:
            if self.group is not None:
                del root[self.key][self.name]
                self.group = None
            if self._made_key and self.key in root and not list(root[self.key].members()):
                del root[self.key]
            if self._made_root and not list(root.members()):
                self._remove_root()
        except (FileNotFoundError, KeyError):
            pass

    def _remove_root(self) -> None:
        from zarr.core.sync import sync

        if self._path is None:
            sync(self._store.delete("zarr.json"))
            return
        (self._path / "zarr.json").unlink(missing_ok=True)
        self._remove_folder()

    def _remove_folder(self) -> bool:
        """Remove the folder if this call made it and it is empty; whether it is gone."""
        if self._path is None or not self._made_folder:
            return False
        try:
            self._path.rmdir()
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True


class _Guarded:
    """A zarr array read through dask that raises once its group is removed, instead of reading as NaN.

    Chunks never written read as the fill value (NaN, the glass), so without this an element taken from a
    SpatialData before a later ``overwrite=True`` replaced its images would silently read all-NaN.
    """

    def __init__(self, array, *, key: str, where: str) -> None:
        self.array = array
        self.shape = array.shape
        self.dtype = array.dtype
        self.ndim = len(array.shape)
        self.key = key
        self.where = where

    def __getitem__(self, index):
        from zarr.core.sync import sync

        values = self.array[index]
        store_path = self.array.store_path
        if not sync(store_path.store.exists(f"{store_path.path}/zarr.json")):
            msg = (
                f"The images of {self.key!r} this element reads ({store_path.path!r} in the image store "
                f"{self.where}) were removed: a later `superresolve(..., key_added={self.key!r}, overwrite=True)` "
                "replaced them. Take the element from the SpatialData again, e.g. "
                f"`sdata.images[{self.key!r}]`."
            )
            raise FileNotFoundError(msg)
        return values


def guarded_dask(array, *, key: str, store) -> da.Array:
    """``array`` (a zarr array of an :class:`ImageStore` group) as a dask array that fails loudly once removed."""
    import uuid

    import dask.array as da
    import numpy as np

    path = _as_path(store)
    where = repr(str(path)) if path is not None else "passed"
    guarded = _Guarded(array, key=key, where=where)
    name = f"sr-spatial-{key}-{array.store_path.path.replace('/', '-')}-{uuid.uuid4().hex}"
    return da.from_array(
        guarded,
        chunks=array.chunks,
        name=name,
        lock=False,
        asarray=True,
        meta=np.empty((0,) * guarded.ndim, array.dtype),
    )
