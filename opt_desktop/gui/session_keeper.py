"""The window's open session: its runs, its file, unsaved changes, autosave and recent files.

Qt only for signals and the autosave timer; the file format and the autosave store are the
session layer's. Every failure becomes one line on `error` (and its traceback in the log), and
leaves the open session as it was.

Every file this window reads or writes (open, save, add runs, restore, autosave, export, the list
of autosaves to recover) goes through one executor, one file at a time, off the window's thread:
the window awaits the result on its event loop and never blocks on a file.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Literal

from PySide6.QtCore import QObject, QTimer, Signal

from ..engine.messages.errors import describe_error
from ..session import RunTrace
from ..session.autosave import Autosave, RecoveredSession
from ..session.file import SESSION_SUFFIX, SessionFileError, load_session, save_session
from ..session.file_stamp import FileStamp
from ..session.session import Session
from .app_state import AppState

log = logging.getLogger(__name__)

AUTOSAVE_INTERVAL_MS = 60_000  # every minute while there are unsaved changes

SaveOutcome = Literal["saved", "failed", "changed_on_disk"]


class ChangedOnDisk(Exception):
    """The file was changed by someone else since this window last opened or saved it."""


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
        # What `path` was on disk when this window last read or wrote it: a save first checks that
        # nobody (another window, another OPT Desktop) has changed it since. Kept by the files thread.
        self._disk = _DiskRecord()
        self.modified = False
        self._edits = 0  # counts changes, so a save that raced with one leaves the session unsaved
        self._timer = QTimer(self)
        self._timer.setInterval(AUTOSAVE_INTERVAL_MS)
        self._timer.timeout.connect(self.autosave_now)
        # The one executor for files: one at a time, in the order asked (an autosave's discard runs
        # after the autosave in flight, never before it).
        self._files = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opt-files")
        self._last: Future | None = None
        self._closed = False

    # --- changes ---------------------------------------------------------------------------------

    def add_run(self, trace: RunTrace) -> int:
        index = self.session.add(trace)
        self.set_modified(True)
        return index

    def set_modified(self, modified: bool = True) -> None:
        if modified:
            self._edits += 1
            if not self._timer.isActive():
                self._timer.start()
        else:
            self._timer.stop()
        if modified != self.modified:
            self.modified = modified
            self.modified_changed.emit(modified)

    def display_name(self) -> str:
        return self.path.name if self.path is not None else "Untitled session"

    # --- the files thread --------------------------------------------------------------------------

    def submit(self, fn: Callable, *args, **kwargs) -> Future:
        """Queue `fn` on the files thread, after every file job asked before it."""
        self._last = self._files.submit(fn, *args, **kwargs)
        return self._last

    async def in_files_thread(self, fn: Callable, *args, **kwargs):
        """`fn(*args)` on the files thread, awaited on the event loop: its result, or its exception."""
        return await asyncio.wrap_future(self.submit(fn, *args, **kwargs))

    def wait_for_files(self, timeout: float | None = None) -> bool:
        """Block until every file job asked so far has ended; False if `timeout` passed first. Never
        called on the window's thread while it runs: for tests, and for the process's exit once the
        window is gone."""
        last = self._last
        return last is None or concurrent.futures.wait([last], timeout).not_done == set()

    # --- files -----------------------------------------------------------------------------------

    def new(self) -> None:
        self.submit(self._disk.forget)
        self._replace(Session(), None)

    async def open_async(self, path: str | Path) -> bool:
        """Open a session file, read on the files thread; on any problem say why and keep the open
        session untouched."""
        path = Path(path)
        try:
            session = await self.in_files_thread(self._disk.read, path)
        except SessionFileError as exc:
            self._report(exc, "Opening the session")
            return False
        self._replace(session, path)
        self._remember(path)
        return True

    async def add_from_async(self, path: str | Path) -> list[int]:
        """Append the runs of another session file to the open one (to compare across files)."""
        path = Path(path)
        try:
            other = await self.in_files_thread(load_session, path)
        except SessionFileError as exc:
            self._report(exc, "Adding the runs")
            return []
        added = self.session.merge(other, label=path.stem)
        if added:
            self.set_modified(True)
        return added

    async def save_async(self, path: str | Path | None = None, *, overwrite: bool = False) -> SaveOutcome:
        """Write the session on the files thread. "changed_on_disk" (and nothing written) when the
        file is this window's and someone else changed it since this window opened or saved it,
        unless `overwrite`; the caller asks the person what to do."""
        target = self.target(path)
        edits = self._edits
        # A snapshot: runs added while the file is written belong to the next save.
        snapshot = Session(list(self.session.runs))
        try:
            await self.in_files_thread(self._disk.write, snapshot, target, check=not overwrite)
        except ChangedOnDisk:
            return "changed_on_disk"
        except SessionFileError as exc:
            self._report(exc, "Saving")
            return "failed"
        if target != self.path:
            self.path = target
            self.path_changed.emit(target)
        self._remember(target)
        if edits == self._edits:  # nothing changed while it was written
            self.set_modified(False)
            self.submit(self.autosave.discard)  # the file itself now holds everything
        return "saved"

    def target(self, path: str | Path | None) -> Path:
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("save_async() needs a path for a session that has never been saved")
        return target if target.suffix == SESSION_SUFFIX else target.with_name(target.name + SESSION_SUFFIX)

    async def restore_async(self, recovered: RecoveredSession) -> bool:
        """Open an autosave left by a session that crashed; it stays unsaved until the person saves."""
        try:
            session = await self.in_files_thread(self._disk.restore, recovered)
        except SessionFileError as exc:
            self._report(exc, "Restoring")
            return False
        self._replace(session, recovered.source)
        self.submit(self.autosave.forget, recovered)
        self.set_modified(True)
        self.autosave_now()  # it is this instance's to protect now
        return True

    def _replace(self, session: Session, path: Path | None) -> None:
        self.session = session
        self.path = path
        self.set_modified(False)
        self.submit(self.autosave.discard)  # after an autosave in flight, which would otherwise recreate it
        self.path_changed.emit(path)
        self.replaced.emit()

    # --- autosave --------------------------------------------------------------------------------

    def autosave_now(self) -> asyncio.Future | None:
        """Start writing the autosave on the files thread; the future to await, None if nothing to do."""
        if self._closed or not self.modified or not self.session.runs:
            return None
        if any(run.finished is None for run in self.session.runs):
            return None  # a run is still streaming: the autosave after it finishes catches it
        # A snapshot of the finished runs: the worker reads them while new runs may be added here.
        snapshot, path = Session(list(self.session.runs)), self.path
        future = asyncio.wrap_future(self.submit(self.autosave.save, snapshot, path))
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

    async def recoverable_async(self) -> list[RecoveredSession]:
        """Autosaves of instances that died, listed on the files thread; never raises (a start-up
        must always succeed)."""
        try:
            return await self.in_files_thread(self.autosave.recoverable)
        except Exception:  # noqa: BLE001 - logged; recovery is an offer, not a duty
            log.exception("Could not list the autosaves left by earlier sessions")
            return []

    def forget_recovered(self, found: list[RecoveredSession]) -> None:
        """The person declined to restore these autosaves: delete them (on the files thread)."""
        for recovered in found:
            self.submit(self.autosave.forget, recovered)

    def close_cleanly(self) -> None:
        """The person closed the window having saved or discarded: nothing is left to recover. The
        autosave is deleted after any file job in flight (which would otherwise recreate it); the
        window does not wait for that (the process's exit does: wait_for_files)."""
        self._timer.stop()
        if self._closed:
            return
        self._closed = True
        self.submit(self.autosave.discard)
        self._files.shutdown(wait=False)

    # --- recent files ----------------------------------------------------------------------------

    def recent(self) -> list[Path]:
        return [Path(p) for p in self.state.recent_sessions]

    def _remember(self, path: Path) -> None:
        self.state.remember_session(str(path.resolve()))
        self.state.save()
        self.recent_changed.emit()


# --- what runs on the files thread -------------------------------------------------------------------


class _DiskRecord:
    """The file this window works on and its stamp when this window last read or wrote it. Used only
    on the files thread, so two saves asked in a row see each other's stamp, never a stale one."""

    def __init__(self):
        self.path: Path | None = None
        self.stamp: FileStamp | None = None

    def forget(self) -> None:
        self.path = self.stamp = None

    def _stamp(self, path: Path) -> FileStamp | None:
        try:
            return FileStamp.of(path)
        except OSError:
            return None  # unreadable: the next save writes without asking

    def read(self, path: Path) -> Session:
        """The session in `path`. The stamp is taken first: a change made while the file is read shows
        as a change at the next save (asked about), never the other way round."""
        stamp = self._stamp(path)
        session = load_session(path)
        self.path, self.stamp = path, stamp
        return session

    def restore(self, recovered: RecoveredSession) -> Session:
        """A crashed session's autosave; the file it was working on is recorded as that file is now."""
        session = load_session(recovered.path)
        source = recovered.source
        self.path, self.stamp = source, (self._stamp(source) if source is not None else None)
        return session

    def write(self, session: Session, target: Path, check: bool = True) -> None:
        """Write `session` to `target`; with `check`, raise ChangedOnDisk instead when `target` is this
        window's file and is no longer what this window last read or wrote."""
        if check and target == self.path and self.stamp is not None:
            try:
                changed = self.stamp.changed(target)
            except OSError as exc:
                raise SessionFileError(f"Could not save {target}: {exc.strerror or exc}") from None
            if changed:
                raise ChangedOnDisk(str(target))
        save_session(session, target)
        self.path, self.stamp = target, self._stamp(target)
