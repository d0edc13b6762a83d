"""The window's open session: its runs, its file, unsaved changes, autosave and recent files.

Qt only for signals and the autosave timer; the file format and the autosave store are the
session layer's. Every failure becomes one line on `error` (and its traceback in the log), and
leaves the open session as it was. Autosaves run on a worker thread, awaited on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from PySide6.QtCore import QObject, QTimer, Signal

from ..session import RunTrace
from ..session.autosave import Autosave, RecoveredSession
from ..session.file import SESSION_SUFFIX, SessionFileError, load_session, save_session
from ..session.session import Session
from ..engine.messages.errors import describe_error
from .app_state import AppState

log = logging.getLogger(__name__)

AUTOSAVE_INTERVAL_MS = 60_000  # every minute while there are unsaved changes


class SessionKeeper(QObject):
    replaced = Signal()  # another session is now open (new, opened, restored)
    modified_changed = Signal(bool)
    path_changed = Signal(object)  # Path | None
    recent_changed = Signal()
    error = Signal(str, str)  # one line for the person, details (a traceback) for "Details…"

    def __init__(self, state: AppState, autosave: Autosave | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.state = state
        self.autosave = autosave if autosave is not None else Autosave()
        self.session = Session()
        self.path: Path | None = None
        self.modified = False
        self._timer = QTimer(self)
        self._timer.setInterval(AUTOSAVE_INTERVAL_MS)
        self._timer.timeout.connect(self.autosave_now)
        # Autosaves compress megabytes of arrays: off the GUI thread, one at a time, so the window never stalls.
        self._autosaver = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opt-autosave")
        # Saving and opening files the person asked for, one at a time, off the GUI thread.
        self._files = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opt-files")
        self._pending: Future | None = None

    # --- changes ---------------------------------------------------------------------------------

    def add_run(self, trace: RunTrace) -> int:
        index = self.session.add(trace)
        self.set_modified(True)
        return index

    def set_modified(self, modified: bool = True) -> None:
        if modified and not self._timer.isActive():
            self._timer.start()
        if not modified:
            self._timer.stop()
        if modified != self.modified:
            self.modified = modified
            self.modified_changed.emit(modified)

    def display_name(self) -> str:
        return self.path.name if self.path is not None else "Untitled session"

    # --- files -----------------------------------------------------------------------------------

    def new(self) -> None:
        self._replace(Session(), None)

    def open(self, path: str | Path) -> bool:
        """Open a session file; on any problem say why and keep the open session untouched."""
        return self._opened(Path(path), self._read(Path(path)))

    async def open_async(self, path: str | Path) -> bool:
        """open(), reading the file on the files thread so the window goes on drawing."""
        return self._opened(Path(path), await self._in_thread(self._read, Path(path)))

    def add_from(self, path: str | Path) -> list[int]:
        """Append the runs of another session file to the open one (to compare across files)."""
        path = Path(path)
        other = self._read(path)
        if isinstance(other, SessionFileError):
            self._report(other, "Adding the runs")
            return []
        added = self.session.merge(other, label=path.stem)
        if added:
            self.set_modified(True)
        return added

    def save(self, path: str | Path | None = None) -> bool:
        target = self._target(path)
        return self._saved(target, self._write(Session(list(self.session.runs)), target))

    async def save_async(self, path: str | Path | None = None) -> bool:
        """save(), writing on the files thread so the window goes on drawing."""
        target = self._target(path)
        # A snapshot: runs added while the file is written belong to the next save.
        return self._saved(target, await self._in_thread(self._write, Session(list(self.session.runs)), target))

    def _target(self, path: str | Path | None) -> Path:
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("save() needs a path for a session that has never been saved")
        return target if target.suffix == SESSION_SUFFIX else target.with_name(target.name + SESSION_SUFFIX)

    @staticmethod
    def _read(path: Path) -> Session | SessionFileError:
        try:
            return load_session(path)
        except SessionFileError as exc:
            return exc

    @staticmethod
    def _write(session: Session, target: Path) -> SessionFileError | None:
        try:
            save_session(session, target)
        except SessionFileError as exc:
            return exc
        return None

    async def _in_thread(self, fn, *args):
        return await asyncio.wrap_future(self._files.submit(fn, *args))

    def _opened(self, path: Path, result: Session | SessionFileError) -> bool:
        if isinstance(result, SessionFileError):
            self._report(result, "Opening the session")
            return False
        self._replace(result, path)
        self._remember(path)
        return True

    def _saved(self, target: Path, error: SessionFileError | None) -> bool:
        if error is not None:
            self._report(error, "Saving")
            return False
        if target != self.path:
            self.path = target
            self.path_changed.emit(target)
        self._remember(target)
        self.set_modified(False)
        self.wait_for_autosave()
        self.autosave.discard()  # the file itself now holds everything
        return True

    def restore(self, recovered: RecoveredSession) -> bool:
        """Open an autosave left by a session that crashed; it stays unsaved until the person saves."""
        try:
            session = load_session(recovered.path)
        except SessionFileError as exc:
            self._report(exc, "Restoring")
            return False
        self._replace(session, recovered.source)
        self.autosave.forget(recovered)
        self.set_modified(True)
        self.autosave_now()  # it is this instance's to protect now
        return True

    def _replace(self, session: Session, path: Path | None) -> None:
        self.session = session
        self.path = path
        self.set_modified(False)
        self.wait_for_autosave()
        self.autosave.discard()
        self.path_changed.emit(path)
        self.replaced.emit()

    # --- autosave --------------------------------------------------------------------------------

    def autosave_now(self) -> asyncio.Future | None:
        """Start writing the autosave on the autosave thread; the future to await, None if nothing to do."""
        if not self.modified or not self.session.runs:
            return None
        if any(run.finished is None for run in self.session.runs):
            return None  # a run is still streaming: the autosave after it finishes catches it
        # A snapshot of the finished runs: the worker reads them while new runs may be added here.
        snapshot, path = Session(list(self.session.runs)), self.path
        self._pending = self._autosaver.submit(self.autosave.save, snapshot, path)
        future = asyncio.wrap_future(self._pending)
        future.add_done_callback(self._autosaved)  # runs on the event loop's thread
        return future

    async def autosave_finished_run(self) -> None:
        """Write the autosave now and wait for it: a run is shown finished only once it is on disk."""
        future = self.autosave_now()
        if future is not None:
            await asyncio.wait([future])

    def _autosaved(self, future: asyncio.Future) -> None:
        if not future.cancelled() and future.exception() is not None:
            self._report(future.exception(), "Autosave")

    def _report(self, exc: BaseException, doing: str) -> None:
        message, details = describe_error(exc, doing)
        if isinstance(exc, SessionFileError):
            message = str(exc)  # written for the person: it names the file and what is wrong
        elif isinstance(exc, OSError):
            message = f"{doing} failed: {exc.strerror or exc}"
        log.warning("%s\n%s", message, details)
        self.error.emit(message, details)

    def wait_for_autosave(self, timeout: float | None = None) -> None:
        """Until the autosave in flight (if any) is written."""
        if self._pending is not None:
            self._pending.exception(timeout)

    def recoverable(self) -> list[RecoveredSession]:
        """Autosaves of instances that died; never raises (a start-up must always succeed)."""
        try:
            return self.autosave.recoverable()
        except Exception:  # noqa: BLE001 - logged; recovery is an offer, not a duty
            log.exception("Could not list the autosaves left by earlier sessions")
            return []

    def close_cleanly(self) -> None:
        """The person closed the window having saved or discarded: nothing is left to recover."""
        self._timer.stop()
        self._files.shutdown(wait=True)
        self._autosaver.shutdown(wait=True)  # a save in flight must not recreate the file after discard
        self.autosave.discard()

    # --- recent files ----------------------------------------------------------------------------

    def recent(self) -> list[Path]:
        return [Path(p) for p in self.state.recent_sessions]

    def _remember(self, path: Path) -> None:
        self.state.remember_session(str(path.resolve()))
        self.state.save()
        self.recent_changed.emit()
