"""The app's log: a rotating file in the user log folder, so a traceback is never lost.

A person sees one calm line; the log keeps the traceback of every exception that reached a banner
or a CLI error line. Qt-free: the CLI and the window set it up the same way.
"""

from __future__ import annotations

import logging
import logging.handlers
import sys
from pathlib import Path

from .folders import log_dir

LOG_FILE = "opt-desktop.log"
_MAX_BYTES = 2 * 2**20
_BACKUPS = 3
_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(threadName)s]: %(message)s"

_LOGGER = "opt_desktop"


def log_file(name: str = LOG_FILE) -> Path:
    return log_dir() / name


def setup_logging(verbose: int = 0, file_name: str = LOG_FILE) -> Path | None:
    """Log to the rotating file (and, with `verbose`, to stderr: 1 info, 2 debug); the file's path,
    or None when its folder cannot be written (the app still runs, logging to stderr only)."""
    logger = logging.getLogger(_LOGGER)
    logger.setLevel(logging.DEBUG)
    for handler in list(logger.handlers):  # idempotent: a second call replaces, never doubles
        if getattr(handler, "_opt_desktop", False):
            logger.removeHandler(handler)
            handler.close()
    path: Path | None = log_file(file_name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        file_handler = logging.handlers.RotatingFileHandler(path, maxBytes=_MAX_BYTES, backupCount=_BACKUPS,
                                                            encoding="utf-8")
    except OSError as exc:
        print(f"warning: cannot write the log file {path}: {exc.strerror or exc}", file=sys.stderr)
        path = None
    else:
        file_handler.setLevel(logging.INFO)
        file_handler.setFormatter(logging.Formatter(_FORMAT))
        file_handler._opt_desktop = True
        logger.addHandler(file_handler)
    if verbose or path is None:
        stream = logging.StreamHandler(sys.stderr)
        stream.setLevel(logging.DEBUG if verbose >= 2 else logging.INFO if verbose else logging.ERROR)
        stream.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        stream._opt_desktop = True
        logger.addHandler(stream)
    return path
