"""What the commands share: input errors, the help formatter, checking an output store."""

from __future__ import annotations

import argparse
import os
import re
import warnings
from contextlib import contextmanager
from pathlib import Path


class UserError(Exception):
    """A problem with the command's arguments or files: printed as one line, exit status 2."""


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions kept as written (line breaks, examples); a default, where there is one, after the help."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default not in (None, False, argparse.SUPPRESS) and "default" not in help_text:
            help_text += " (default: %(default)s)"
        return help_text


@contextmanager
def zarr_notice_hidden():
    """Hide the notice zarr gives on every array written about a future default; it says nothing about the store."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="zarr v3 autosharding", category=UserWarning)
        yield


def is_zarr(path: Path) -> bool:
    return (path / ".zgroup").exists() or (path / "zarr.json").exists()


def check_out(path: Path, *, overwrite: bool) -> None:
    """Before any work: --out must be new, or a zarr store that --overwrite may replace."""
    if not path.exists():
        parent = next((p for p in path.absolute().parents if p.exists()), None)
        if parent is not None and not os.access(parent, os.W_OK | os.X_OK):
            msg = f"{path} cannot be created ({parent} is read-only); choose an --out in a folder you can write to."
            raise UserError(msg)
        return
    if not overwrite:
        msg = f"{path} exists; pass --overwrite to replace it or choose another --out."
        raise UserError(msg)
    if not is_zarr(path):
        msg = f"{path} exists and is not a zarr store, so it is not replaced; choose another --out."
        raise UserError(msg)


def check_not_in_store(path: Path | None, flag: str) -> None:
    """Before any work: a new store ``path`` (given with ``flag``) may not lie inside another zarr store."""
    from sr_spatial._paths import enclosing_zarr

    store = enclosing_zarr(path.absolute().parent) if path is not None else None
    if store is not None:
        msg = (
            f"{flag} {str(path)!r} lies inside the zarr store {str(store)!r} (compared as real paths), which it would "
            f"change; choose a {flag} outside any zarr store, e.g. beside it."
        )
        raise UserError(msg)


def in_flag_words(message: str, flags: set[str]) -> str:
    """``message`` with the Python arguments it names written as the command's flags.

    sr_spatial's refusals name the arguments of its functions (`` `overwrite=True` ``, `` `key_added` ``); on the
    command line the same option is a flag (`` `--overwrite` ``, `` `--key-added` ``).
    """

    def flag(match: re.Match) -> str:
        name, value = match.group(1), match.group(2)
        if name not in flags:
            return match.group(0)
        option = "--" + name.replace("_", "-")
        if not value or value in ("True", "..."):
            return f"`{option}`"
        if value in ("None", "False"):
            return f"no `{option}`"
        plain = value.strip("'\"")
        return f"`{option} {plain}`"

    return re.sub(r"`(\w+)(?:=([^`]*))?`", flag, message)
