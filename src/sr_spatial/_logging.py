"""Verbosity (scanpy's levels 0-4), the progress bars, and the log line that ends each phase of a run."""

from __future__ import annotations

import functools
import importlib.util
import logging
import sys
import warnings

__all__ = ["HINT", "Settings", "hide_sharding_notice", "log_phase", "logger", "progress_bar", "settings"]

logger = logging.getLogger("sr_spatial")

#: Between INFO and DEBUG, as scanpy's ``hint``.
HINT = 15
logging.addLevelName(HINT, "HINT")

_LEVELS = {0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: HINT, 4: logging.DEBUG}
_NAMES = {"error": 0, "warning": 1, "info": 2, "hint": 3, "debug": 4}


class _Handler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` at each call, so notebooks that swap the stream still see messages."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        # StreamHandler assigns its stream at construction; the property always reads sys.stderr instead.
        pass

    def emit(self, record: logging.LogRecord) -> None:
        # Through tqdm, so a message printed while a progress bar runs gets its own line, above the bar.
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
        except Exception:  # noqa: BLE001 (logging must never raise; report as logging does)
            self.handleError(record)


def _install_handler() -> None:
    if not any(isinstance(h, _Handler) for h in logger.handlers):
        logger.addHandler(_Handler())


class Settings:
    """Package-wide settings, read as ``sr_spatial.settings``.

    Attributes
    ----------
    verbosity
        How much ``sr_spatial`` logs, with scanpy's levels: ``0`` errors, ``1`` warnings, ``2`` info (default:
        a line per phase of a run with its duration, where results were written), ``3`` hints, ``4`` debug.
        Names (``"error"``, ``"warning"``, ``"info"``, ``"hint"``, ``"debug"``) are accepted too. Progress bars
        are set per call with ``show_progress_bar``.
    """

    def __init__(self, verbosity: int | str = 2):
        self._verbosity = 2
        self.verbosity = verbosity

    @property
    def verbosity(self) -> int:
        return self._verbosity

    @verbosity.setter
    def verbosity(self, value: int | str) -> None:
        if isinstance(value, str) and value.lower() in _NAMES:
            value = _NAMES[value.lower()]
        if isinstance(value, bool) or not isinstance(value, int) or value not in _LEVELS:
            msg = f"`verbosity` must be 0-4 or one of {list(_NAMES)}, got {value!r}."
            raise ValueError(msg)
        self._verbosity = value
        _install_handler()
        logger.setLevel(_LEVELS[value])

    def __repr__(self) -> str:
        return f"sr_spatial.settings(verbosity={self.verbosity})"


settings = Settings()


def progress_bar(*args, **kwargs):
    """A tqdm progress bar, the only kind the package shows: a widget in Jupyter where ipywidgets is installed.

    Without ipywidgets, :mod:`tqdm.auto` warns "IProgress not found" in a notebook and falls back to a text bar
    anyway; this picks the text bar directly, without the warning. Arguments are :class:`tqdm.tqdm`'s.
    """
    from tqdm.notebook import tqdm_notebook

    bar_class = _bar_class()
    if not issubclass(bar_class, tqdm_notebook) and not _is_terminal(kwargs.get("file", sys.stderr)):
        # A text bar in a notebook or a log file: every redraw is a new chunk of output there, so redraw seldom.
        kwargs.setdefault("mininterval", TEXT_BAR_INTERVAL_S)
    return bar_class(*args, **kwargs)


#: Seconds between redraws of a text bar whose output is not a terminal (a notebook without ipywidgets, a log).
TEXT_BAR_INTERVAL_S = 5.0


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


@functools.cache
def _bar_class():
    if importlib.util.find_spec("ipywidgets") is not None:
        from tqdm.auto import tqdm
    else:
        from tqdm.std import tqdm

    return tqdm


def hide_sharding_notice() -> None:
    """Hide anndata's notice "zarr v3 autosharding will be the default in the next minor release".

    anndata prints it for every array of every table written to zarr v3, and ``SpatialData.write`` offers no
    option to choose, so writing a super-resolved slide printed dozens of them. It concerns anndata's future
    default, not the data written; only this message is filtered. Called on import and again by
    :func:`sr_spatial.tl.superresolve`, since code that resets the warning filters (pytest, ``catch_warnings``)
    drops a filter set on import.
    """
    warnings.filterwarnings("ignore", message="zarr v3 autosharding will be the default", category=UserWarning)


def log_phase(phase: str, seconds: float, message: str, *args, level: int = logging.INFO) -> None:
    """Log that a phase of a run ended, with its duration.

    The record carries ``sr_phase`` (``"reading"``, ``"features"``, ``"training"``, ``"sampling"`` or
    ``"writing"``) and ``sr_seconds``, so tools that time a run (``benchmarks/visium_scale.py``) read the package's
    own timings instead of parsing messages.
    """
    logger.log(level, message, *args, extra={"sr_phase": phase, "sr_seconds": float(seconds)})
