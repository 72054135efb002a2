"""The ``sr-spatial`` command: super-resolve your own slide, or the bundled demo slide, without writing Python."""

from __future__ import annotations

import argparse
import logging
import sys

from sr_spatial._cli import _demo, _superresolve
from sr_spatial._cli._common import UserError, in_flag_words

__all__ = ["main"]

logger = logging.getLogger("sr_spatial")

DESCRIPTION = """\
Histology-guided super-resolution of spatial transcriptomics, on SpatialData.

  sr-spatial superresolve SLIDE.zarr          super-resolve your own slide, written into its zarr store
  sr-spatial superresolve SPACERANGER/outs --out SLIDE.zarr
                                              read a Visium Space Ranger folder, write slide and result
  sr-spatial demo --out demo.zarr             run every method on the synthetic demo slide and score them

Run `sr-spatial COMMAND --help` for a command's options."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("sr-spatial")
    except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return "0.0.0+unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sr-spatial", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    _superresolve.add_parser(sub)
    _demo.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``sr-spatial`` command; returns the exit status (2 for a problem with the input)."""
    args = _parser().parse_args(argv)
    run = {"demo": _demo.run, "superresolve": _superresolve.run}[args.command]
    try:
        return run(args)
    except KeyboardInterrupt:
        import warnings

        # Work cut short leaves objects whose clean-up warns at exit (a coroutine never awaited): one line is enough.
        warnings.simplefilter("ignore")
        # The writes are staged and moved into place, so an interrupted run changed none of the user's files.
        print(f"sr-spatial {args.command}: interrupted; no file was changed.", file=sys.stderr)
        return 130
    except UserError as error:
        print(f"sr-spatial {args.command}: error: {error}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, TypeError, OSError) as error:
        # sr_spatial's own messages say what to do next; a traceback would bury them.
        if logger.isEnabledFor(logging.DEBUG):
            raise
        message = error.args[0] if isinstance(error, KeyError) and error.args else error
        flags = {name for name in vars(args) if name != "command"}
        print(f"sr-spatial {args.command}: error: {in_flag_words(str(message), flags)}", file=sys.stderr)
        return 2
