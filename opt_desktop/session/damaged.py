"""Moving a file the app cannot read out of the way, so it never blocks a start again.

Autosaves, the presets file and the remembered state go to `folders.damaged_dir()` under a name
that keeps the original one and says when it was moved; the person gets one line naming both.
"""

from __future__ import annotations

import logging
import os
import shutil
from datetime import datetime
from pathlib import Path

from .. import folders

log = logging.getLogger(__name__)


def _free_name(folder: Path, name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate = folder / f"{stamp}-{name}"
    n = 1
    while candidate.exists():
        n += 1
        candidate = folder / f"{stamp}-{n}-{name}"
    return candidate


def move_aside(path: str | Path, problem: str, what: str = "") -> str:
    """Move `path` into the damaged folder; the one line to show (it names the file, the problem and
    where the file went). Never raises: when the file cannot be moved the line says so."""
    path = Path(path)
    label = f"{what} {path}" if what else str(path)
    problem = problem.rstrip(".")
    try:
        target_folder = folders.damaged_dir()
        target_folder.mkdir(parents=True, exist_ok=True)
        target = _free_name(target_folder, path.name)
        try:
            os.replace(path, target)
        except OSError:
            shutil.move(str(path), str(target))  # another file system
    except FileNotFoundError:
        return f"The {label} could not be read ({problem}) and is gone now."
    except OSError as exc:
        log.warning("could not move %s aside", path, exc_info=True)
        return (f"The {label} could not be read ({problem}), and it could not be moved aside "
                f"({exc.strerror or exc}); it was left where it is.")
    log.warning("moved the unreadable %s to %s: %s", path, target, problem)
    return f"The {label} could not be read ({problem}); it was moved to {target}."
