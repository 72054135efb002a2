"""Verbosity (scanpy's levels 0-4) and the ETA logged at the start of long loops."""

from __future__ import annotations

import logging
import sys
import time

__all__ = ["HINT", "ETA", "Settings", "logger", "settings"]

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
        what is being trained, the expected duration, where results were written), ``3`` hints, ``4`` debug.
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


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


class ETA:
    """Log once how long a loop of ``total`` steps will take, timed on its first steps.

    The first step is left out of the measurement (it carries one-off costs: allocation, lazy initialisation);
    the next ``warmup`` steps are timed, and the rest of the loop is extrapolated from them.

    Parameters
    ----------
    what
        What the loop does, e.g. ``"Training the denoiser"``.
    total
        Steps in the loop.
    warmup
        Steps timed after the first.
    """

    def __init__(self, what: str, total: int, *, warmup: int = 5):
        self.what, self.total, self.warmup = what, int(total), int(warmup)
        self.done = 0
        self._start: float | None = None
        self.seconds: float | None = None

    def step(self, n: int = 1) -> None:
        """Count ``n`` finished steps; log the ETA once enough have been timed."""
        before, self.done = self.done, self.done + n
        if before == 0:
            self._start = time.perf_counter()
            return
        if self.seconds is not None or self._start is None or self.done - 1 < self.warmup:
            return
        per_step = (time.perf_counter() - self._start) / (self.done - 1)
        self.seconds = per_step * (self.total - self.done)
        if self.total - self.done > 0:
            logger.info(
                "%s: %d steps, ETA ~%s (%.2f s/step over %d timed steps).",
                self.what,
                self.total,
                _duration(self.seconds),
                per_step,
                self.done - 1,
            )
