"""Replace a file all at once: a crash or a full disk mid-write leaves the previous file as it was.

The one helper every file the app writes goes through (sessions, autosaves, exports, presets, the
remembered state, generation_config.json, the desktop entry). Top-level and Qt-free, like
folders.py, so every layer may use it. Its temporary file sits beside the target and is named after the writer,
`.<name>.opt-desktop-<pid>-<start>-<random>.tmp`, so a temporary file left by a writer that was
killed is recognisable: the next write to the same folder, and the app's start, remove those whose
writer is dead, and nothing else.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import uuid
from pathlib import Path
from typing import BinaryIO, Callable, Iterable

from .owner import alive, own_tag

log = logging.getLogger(__name__)

# Read once: asking for the umask means setting it, which is not safe once threads are running.
_UMASK = os.umask(0o022)
os.umask(_UMASK)

TEMP_SUFFIX = ".tmp"
TEMP_MARK = "opt-desktop"
_TEMP_NAME = re.compile(r"\..+\." + TEMP_MARK + r"-(\d+)-(\d+)-[0-9a-f]{12}" + re.escape(TEMP_SUFFIX))


def temp_name(path: Path) -> Path:
    """A fresh temporary name beside `path` that names this process."""
    return path.with_name(f".{path.name}.{TEMP_MARK}-{own_tag()}-{uuid.uuid4().hex[:12]}{TEMP_SUFFIX}")


def is_temp_name(name: str) -> bool:
    return _TEMP_NAME.fullmatch(name) is not None


def remove_stale_temps(folder: str | Path, pattern: re.Pattern = _TEMP_NAME) -> list[Path]:
    """Delete the temporary files of atomic writes into `folder` whose writer process has died;
    the paths removed. Other files, and those of writers still running, are left alone. `pattern`
    matches a temporary file's whole name, its groups 1 and 2 the writer's pid and start time."""
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        m = pattern.fullmatch(entry.name)
        if m is None or alive(int(m.group(1)), int(m.group(2))):
            continue
        try:
            if entry.is_file(follow_symlinks=False):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            log.warning("could not remove the leftover temporary file %s", entry.path, exc_info=True)
    return removed


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call `write(f)` on a temporary file beside `path`, flush it to disk, then rename it over `path`.

    On any failure the temporary file is removed and the exception propagates; `path` is untouched.
    Leftovers of writers that died in this folder are removed first.
    """
    path = Path(path)
    remove_stale_temps(path.parent)
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        # The file was made private; give it the mode a plain open() would have.
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o666 & ~_UMASK
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_folder(path.parent)


def write_text_atomic(path: str | Path, text: str) -> None:
    data = text.encode("utf-8")
    write_atomic(path, lambda f: f.write(data))


def remove_stale_temps_in(folders: Iterable[str | Path]) -> list[Path]:
    removed: list[Path] = []
    for folder in dict.fromkeys(Path(f) for f in folders):
        removed += remove_stale_temps(folder)
    return removed


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable on POSIX; folders cannot be opened this way on Windows.
    if os.name != "posix":
        return
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
