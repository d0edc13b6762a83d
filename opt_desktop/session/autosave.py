"""Autosave: each running instance keeps its session in its own file, so a crash loses little.

A file is named after the process that owns it (pid and start time), so the next start can tell
the autosaves of instances that died from those of instances still running.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import folders
from ..atomic import remove_stale_temps
from .damaged import move_aside
from .file import SESSION_SUFFIX, SessionFileError, read_summary, save_session
from ..owner import alive, tag_of
from .session import Session

log = logging.getLogger(__name__)

_NAME = re.compile(r"autosave-(\d+)-(\d+)-[0-9a-f]+" + re.escape(SESSION_SUFFIX))
# Temporary files of autosaves written before atomic writes named their writer (mkstemp names).
_OLD_TEMP = re.compile(r"\.autosave-(\d+)-(\d+)-[0-9a-f]+" + re.escape(SESSION_SUFFIX) + r"\.\w+\.tmp")


def _remove(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        pass
    except OSError:  # never worth failing a restore or an exit over; the next start sees it again
        log.warning("could not delete the autosave %s", path, exc_info=True)


def autosave_dir() -> Path:
    return folders.data_dir() / "autosave"


@dataclass(frozen=True)
class RecoveredSession:
    path: Path
    source: Path | None  # the file the person was working on, if it had been saved or opened
    saved_at: datetime
    n_runs: int


class Autosave:
    def __init__(self, folder: Path | None = None, *, pid: int | None = None):
        """`pid` is the owning process (default: this one); tests pass a dead one to fake a crash."""
        self.folder = Path(folder) if folder is not None else autosave_dir()
        self.pid = os.getpid() if pid is None else pid
        self.path = self.folder / f"autosave-{tag_of(self.pid)}-{uuid.uuid4().hex[:12]}{SESSION_SUFFIX}"

    def save(self, session: Session, source: Path | None = None) -> Path:
        """Write `session` to this instance's autosave file (atomically) and return its path."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SessionFileError(f"Could not save {self.path}: {exc.strerror or exc}") from None
        save_session(session, self.path, source=source)
        return self.path

    def scan(self) -> tuple[list[RecoveredSession], list[str]]:
        """Autosaves left by instances that ended without a clean exit (newest first), and one line
        for each autosave that could not be read: those are moved to the damaged folder, so they
        never block a start again. Never raises.

        This instance's own file and those of instances still running are left out.
        """
        found: list[RecoveredSession] = []
        messages: list[str] = []
        try:
            entries = sorted(self.folder.iterdir()) if self.folder.is_dir() else []
        except OSError as exc:
            return found, [f"The autosave folder {self.folder} could not be read ({exc.strerror or exc})."]
        for path in entries:
            m = _NAME.fullmatch(path.name)
            if m is None or path == self.path or alive(int(m.group(1)), int(m.group(2))):
                continue
            try:
                summary = read_summary(path)
                saved_at = summary.saved_at or datetime.fromtimestamp(path.stat().st_mtime, timezone.utc)
            except SessionFileError as exc:
                messages.append(move_aside(path, exc.reason, "autosave"))
                continue
            except OSError:
                continue  # removed meanwhile (another instance restored it)
            found.append(RecoveredSession(path=path, source=summary.source_file, saved_at=saved_at,
                                          n_runs=summary.n_runs))
        return sorted(found, key=lambda r: r.saved_at, reverse=True), messages

    def recoverable(self) -> list[RecoveredSession]:
        """The autosaves scan() finds; unreadable ones are moved aside (see scan)."""
        found, messages = self.scan()
        for line in messages:
            log.warning("%s", line)
        return found

    def set_aside(self, recovered: RecoveredSession, reason: str) -> str:
        """Move an autosave that was offered but failed to open to the damaged folder; the line to show."""
        return move_aside(recovered.path, reason, "autosave")

    def remove_leftovers(self) -> list[Path]:
        """Temporary files of autosaves whose writer died (killed mid-save), removed; their paths."""
        return remove_stale_temps(self.folder) + remove_stale_temps(self.folder, _OLD_TEMP)

    def forget(self, recovered: RecoveredSession) -> None:
        """Delete an autosave once it was restored (and saved elsewhere) or declined."""
        _remove(recovered.path)

    def discard(self) -> None:
        """Delete this instance's autosave (clean exit, or the person saved the session)."""
        _remove(self.path)
