"""Autosave: each running instance keeps its session in its own file, so a crash loses little.

A file is named after the process that owns it (pid and start time), so the next start can tell
the autosaves of instances that died from those of instances still running.
"""

from __future__ import annotations

import contextlib
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import platformdirs
import psutil

from .file import SESSION_SUFFIX, SessionFileError, read_summary, save_session
from .session import Session

APP_NAME = "opt-desktop"
DATA_DIR_ENV = "OPT_DESKTOP_DATA_DIR"
_NAME = re.compile(r"autosave-(\d+)-(\d+)-[0-9a-f]+" + re.escape(SESSION_SUFFIX))


def data_dir() -> Path:
    """The app's data folder: $OPT_DESKTOP_DATA_DIR when set (tests), else the platform's user data folder."""
    override = os.environ.get(DATA_DIR_ENV)
    return Path(override) if override else Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def _started_at(pid: int) -> int:
    """Whole seconds since the epoch at which process `pid` started; 0 when it is not running."""
    try:
        return int(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return 0


def _alive(pid: int, started: int) -> bool:
    # The start time tells a still-running owner from an unrelated process that got its pid later.
    now = _started_at(pid)
    return now != 0 and (started == 0 or abs(now - started) <= 1)


@dataclass(frozen=True)
class RecoveredSession:
    path: Path
    source: Path | None  # the file the person was working on, if it had been saved or opened
    saved_at: datetime
    n_runs: int


class Autosave:
    def __init__(self, folder: Path | None = None, *, pid: int | None = None):
        """`pid` is the owning process (default: this one); tests pass a dead one to fake a crash."""
        self.folder = Path(folder) if folder is not None else data_dir() / "autosave"
        self.pid = os.getpid() if pid is None else pid
        self.path = self.folder / f"autosave-{self.pid}-{_started_at(self.pid)}-{uuid.uuid4().hex[:12]}{SESSION_SUFFIX}"

    def save(self, session: Session, source: Path | None = None) -> Path:
        """Write `session` to this instance's autosave file (atomically) and return its path."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SessionFileError(f"Could not save {self.path}: {exc.strerror or exc}") from None
        save_session(session, self.path, source=source)
        return self.path

    def recoverable(self) -> list[RecoveredSession]:
        """Autosaves left by instances that ended without a clean exit, newest first.

        This instance's own file and those of instances still running are left out, and so are
        files that cannot be read.
        """
        found = []
        if not self.folder.is_dir():
            return found
        for path in self.folder.glob(f"autosave-*{SESSION_SUFFIX}"):
            m = _NAME.fullmatch(path.name)
            if m is None or path == self.path or _alive(int(m.group(1)), int(m.group(2))):
                continue
            try:
                summary = read_summary(path)
            except SessionFileError:
                continue
            saved_at = summary.saved_at or datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
            found.append(RecoveredSession(path=path, source=summary.source_file, saved_at=saved_at,
                                          n_runs=summary.n_runs))
        return sorted(found, key=lambda r: r.saved_at, reverse=True)

    def forget(self, recovered: RecoveredSession) -> None:
        """Delete an autosave once it was restored (and saved elsewhere) or declined."""
        with contextlib.suppress(FileNotFoundError):
            recovered.path.unlink()

    def discard(self) -> None:
        """Delete this instance's autosave (clean exit, or the person saved the session)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
