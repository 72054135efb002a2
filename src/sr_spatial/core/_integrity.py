"""What a saved model's folder must still hold when loaded: checksums of every file, and where it may be saved.

``config.json`` carries ``"checksums"``: a SHA-256 of each file saved beside it and one per field of
``config.json`` itself (configuration, genes, scale, seed, version, ...), since an edited field changes the maps
as surely as an edited weight. Loading names the file, and the fields, that changed. Folders saved before these
checksums existed have no ``"checksums"`` and load as before.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from sr_spatial._paths import enclosing_zarr

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

__all__ = ["CHECKSUMS", "check_save_folder", "seal", "verify"]

#: Field of ``config.json`` holding the checksums.
CHECKSUMS = "checksums"
_CONFIG_FILE = "config.json"


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _field_digests(meta: dict) -> dict[str, str]:
    """A digest per field of ``meta`` (as JSON reads it back), the checksums themselves aside."""
    meta = json.loads(json.dumps(meta))
    return {
        name: hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()
        for name, value in meta.items()
        if name != CHECKSUMS
    }


def seal(meta: dict, folder: Path, files: Sequence[str]) -> dict:
    """``meta`` with the checksums of ``files`` (already written in ``folder``) and of its own fields."""
    checksums = {name: _file_digest(folder / name) for name in files}
    checksums[_CONFIG_FILE] = _field_digests(meta)
    return {**meta, CHECKSUMS: checksums}


def verify(meta: dict, folder: Path) -> None:
    """Raise ``ValueError`` naming the file (and the fields of ``config.json``) changed since the model was saved."""
    checksums = meta.get(CHECKSUMS)
    if checksums is None:  # saved before the checksums existed
        return
    if not isinstance(checksums, dict) or not isinstance(checksums.get(_CONFIG_FILE), dict):
        changed, detail = _CONFIG_FILE, " (its checksums)"
    else:
        saved, now = checksums[_CONFIG_FILE], _field_digests(meta)
        fields = sorted(name for name in saved.keys() | now.keys() if saved.get(name) != now.get(name))
        changed, detail = (_CONFIG_FILE, f" (fields {fields})") if fields else (None, "")
        for name, expected in checksums.items():
            if changed is None and name != _CONFIG_FILE:
                present = (folder / name).is_file()
                if not present or _file_digest(folder / name) != expected:
                    changed, detail = name, "" if present else " (it is missing)"
    if changed is not None:
        msg = (
            f"The model in {folder} does not match its checksum: {changed} changed after saving{detail}, so the "
            "model would not give the maps it was saved to give. Re-save or re-train the model (or undo the edit); "
            "settings are changed by fitting a new model, not by editing its files."
        )
        raise ValueError(msg)


def check_save_folder(path: Path, files: Sequence[str], *, ours: Callable[[Path], bool], overwrite: bool) -> None:
    """Refuse, before writing, a folder where saving would replace or bury files sr_spatial did not write.

    Refused: a file; a folder inside a zarr store (a slide's, say); a folder holding any of ``files`` unless
    ``ours(path)`` says an sr_spatial model is saved there, and even then without ``overwrite``.
    """
    if path.exists() and not path.is_dir():
        msg = f"{path} is a file; a model is saved as a directory. Pass a new directory, e.g. 'my_model'."
        raise NotADirectoryError(msg)
    store = enclosing_zarr(path)
    if store is not None:
        msg = (
            f"{path} lies in the zarr store {store} (compared as real paths); a model is saved in a folder of its "
            "own, never inside a store such as a slide's. Pass a directory outside it, e.g. 'my_model'."
        )
        raise FileExistsError(msg)
    present = [name for name in files if (path / name).exists()]
    if not present:
        return
    if not ours(path):
        msg = (
            f"{path} already holds {' and '.join(present)} that sr_spatial did not write (no saved model's "
            f"{_CONFIG_FILE} beside them); nothing was written and they are left alone. Pass another directory, "
            "e.g. 'my_model'."
        )
        raise FileExistsError(msg)
    if not overwrite:
        msg = (
            f"{path} already holds a saved model ({', '.join(present)}); nothing was written. Pass another "
            "directory, or `overwrite=True` to replace it."
        )
        raise FileExistsError(msg)
