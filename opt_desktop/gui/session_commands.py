"""The session file commands: new, open, recent, add runs, save, export, recovery, drop, close.

Every failure is one line in a message that stays until dismissed, and leaves the open session
as it was.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from PySide6.QtCore import QObject

from ..engine import EngineError
from ..session.export import write_export
from ..session.file import SESSION_SUFFIX, SessionFileError
from ..session.session import Session
from . import session_dialogs


class SessionCommands(QObject):
    def __init__(self, controller, keeper, presenter, views, say, parent: QObject | None = None):
        """`views` has window, banner, tabs, inspector, recent_menu; `say(text)` is a status-bar line."""
        super().__init__(parent)
        self.controller = controller
        self.keeper = keeper
        self.presenter = presenter
        self.v = views
        self.say = say
        self._saving_to_close = False  # the person chose Save when closing: saving, then the window closes
        self._saved_to_close = False

    @property
    def _window(self):
        return self.v.window

    def _folder(self) -> str:
        return str(self.keeper.path.parent) if self.keeper.path is not None else ""

    # --- replacing the open session ---------------------------------------------------------------

    def ask_before_replacing(self, running: bool = False) -> bool | Path:
        """Asked before the open session is replaced or closed, before anything starts or stops:
        False (cancelled: nothing may change), True (nothing unsaved, or the person discarded it),
        or the file to save to first. `running`: a run is generating (the window is closing)."""
        if not self.keeper.modified or not self.keeper.session.runs:
            return True
        name = self.keeper.display_name()
        answer = (session_dialogs.ask_unsaved(self._window, name, running=True) if running
                  else session_dialogs.ask_unsaved(self._window, name))
        if answer == "save":
            return self.keeper.path or self._choose_save_path() or False
        return answer == "discard"

    async def _saved_first(self, decision: bool | Path) -> bool:
        """True when the open session may now be replaced (saved first where the person asked)."""
        return await self.save_to(decision) if isinstance(decision, Path) else decision

    def _refuse_while_running(self, what: str) -> bool:
        if self.controller.is_running:
            self.v.banner.show_error(f"Cannot {what} while a run is generating: stop it first.")
            return True
        return False

    def new(self) -> asyncio.Task | None:
        if self._refuse_while_running("start a new session"):
            return None
        decision = self.ask_before_replacing()
        if decision is True:
            self.keeper.new()
            return None
        return None if decision is False else self.controller.spawn(self._new_after(decision))

    async def _new_after(self, decision: Path) -> bool:
        if not await self._saved_first(decision):
            return False
        self.keeper.new()
        return True

    def open(self) -> asyncio.Task | None:
        if self._refuse_while_running("open a session") or (decision := self.ask_before_replacing()) is False:
            return None
        path = session_dialogs.choose_open_path(self._window, self._folder())
        return None if path is None else self.controller.spawn(self._open_after(decision, path))

    def open_file(self, path: Path) -> asyncio.Task | None:
        """Open a session file (command line, drag and drop, recent files); the open session stays on failure."""
        if self._refuse_while_running(f"open {Path(path).name}") or (decision := self.ask_before_replacing()) is False:
            return None
        return self.controller.spawn(self._open_after(decision, path))

    async def _open_after(self, decision: bool | Path, path: Path) -> bool:
        return await self._saved_first(decision) and await self.open_path(path)

    async def open_path(self, path: Path) -> bool:
        """Read the file off the GUI thread, then show it; False (and one line) when it cannot be opened."""
        self.say(f"Opening {Path(path).name}…")
        return await self.keeper.open_async(path)

    def add_runs_from_file(self, path: Path | None = None) -> asyncio.Task | None:
        """Bring another file's runs into this session, e.g. to compare them in the Compare tab."""
        if self._refuse_while_running("add runs"):
            return None
        path = path or session_dialogs.choose_open_path(self._window, self._folder())
        return None if path is None else self.controller.spawn(self._add_runs(Path(path)))

    async def _add_runs(self, path: Path) -> bool:
        self.say(f"Reading {path.name}…")
        if not (added := await self.keeper.add_from_async(path)):
            return False
        self.v.run_list.refresh()
        self.presenter.show_run(added[-1])
        n = len(added)
        self.v.banner.show_notice(f"Added {n} run{'s' if n != 1 else ''} from {path.name}: "
                                  "compare them with this session's runs in the Compare tab.")
        return True

    # --- saving and exporting ----------------------------------------------------------------------

    def save(self) -> asyncio.Task | None:
        if self.keeper.path is None:
            return self.save_as()
        if self._refuse_while_running("save"):
            return None
        return self.controller.spawn(self.save_to(self.keeper.path))

    def save_as(self) -> asyncio.Task | None:
        if self._refuse_while_running("save"):
            return None
        path = self._choose_save_path()
        return None if path is None else self.controller.spawn(self.save_to(path))

    def _choose_save_path(self) -> Path | None:
        suggested = str(self.keeper.path or Path.home() / f"session{SESSION_SUFFIX}")
        return session_dialogs.choose_save_path(self._window, suggested)

    async def save_to(self, path: Path) -> bool:
        """Write the session off the GUI thread; False (and one line) when it could not be written.
        When another window or program changed the file since this window opened or saved it, the
        person chooses: reload it, overwrite it, or save this window's runs elsewhere."""
        path = Path(path)
        self.say(f"Saving {path.name}…")
        outcome = await self.keeper.save_async(path)
        if outcome == "changed_on_disk":
            return await self._changed_on_disk(self.keeper.target(path))
        if outcome == "saved":
            self.say(f"Saved {self.keeper.path}")
        return outcome == "saved"

    async def _changed_on_disk(self, path: Path) -> bool:
        answer = await session_dialogs.ask_changed_on_disk(self._window, path)
        if answer == "overwrite":
            if (outcome := await self.keeper.save_async(path, overwrite=True)) == "saved":
                self.say(f"Saved {self.keeper.path}, replacing what was changed on disk")
            return outcome == "saved"
        if answer == "save_as":
            other = await session_dialogs.choose_save_path_later(self._window, str(_beside(path)))
            return other is not None and await self.save_to(other)
        if answer == "reload":
            await self.open_path(path)
            return False
        self.v.banner.show_notice(f"Not saved: {path.name} was changed on disk by another window or program.",
                                  key="changed-on-disk")
        return False

    def export(self, fmt: str) -> asyncio.Task | None:
        if not self.keeper.session.runs or self._refuse_while_running("export"):
            return None
        stem = self.keeper.path.stem if self.keeper.path is not None else "session"
        suggested = str((self.keeper.path.parent if self.keeper.path else Path.home()) / f"{stem}.{fmt}")
        path = session_dialogs.choose_export_path(self._window, fmt, suggested)
        return None if path is None else self.controller.spawn(self.export_to(fmt, path))

    async def export_to(self, fmt: str, path: Path) -> bool:
        """Write an export off the GUI thread (an HTML report draws heatmaps: seconds for a long run)."""
        session, run = Session(list(self.keeper.session.runs)), self.presenter.current
        self.say(f"Exporting to {Path(path).name}…")
        try:
            await self.keeper.in_files_thread(write_export, session, fmt, path, run=run)
        except (SessionFileError, EngineError, OSError) as exc:
            self.v.banner.show_error(str(exc))
            return False
        self.say(f"Exported to {path}")
        return True

    def export_plot(self) -> asyncio.Task | None:
        """The plot in view (inspector, compare or head importance) as a PNG, as it appears on screen."""
        widget = self.v.tabs.currentWidget()
        if widget is self.v.inspector:
            widget = self.v.inspector.tabs.currentWidget()
        path = session_dialogs.choose_export_path(self._window, "png", str(Path.home() / "plot.png"))
        if path is None:
            return None
        # Grabbed here (widgets live on this thread); a QImage may be written from another.
        return self.controller.spawn(self._write_image(widget.grab().toImage(), path))

    async def _write_image(self, image, path: Path) -> bool:
        if not await self.keeper.in_files_thread(image.save, str(path), "PNG"):
            self.v.banner.show_error(f"Could not write {path}.")
            return False
        self.say(f"Saved {path}")
        return True

    def fill_recent_menu(self) -> None:
        menu = self.v.recent_menu
        menu.clear()
        recent = self.keeper.recent()
        for path in recent:
            a = menu.addAction(path.name)
            a.setToolTip(str(path))
            a.triggered.connect(lambda _=False, p=path: self.open_file(p))
        menu.setEnabled(bool(recent))

    # --- recovery, drops, closing ------------------------------------------------------------------

    def check_recovery(self) -> asyncio.Task:
        """Offer to restore what a crashed session left unsaved (listed off the GUI thread); the offer
        stays until answered."""
        return self.controller.spawn(self._offer_recovery())

    async def _offer_recovery(self) -> None:
        found = await self.keeper.recoverable_async()
        if found:
            self._show_recovery(found)

    def _show_recovery(self, found: list) -> None:
        latest = max(found, key=lambda r: r.saved_at)
        name = latest.source.name if latest.source is not None else "an untitled session"
        when = latest.saved_at.strftime("%d %b %H:%M")
        runs = f"{latest.n_runs} run" + ("s" if latest.n_runs != 1 else "")
        self.v.banner.show_message(
            f"OPT Desktop did not close properly: {runs} of {name}, autosaved {when}, can be restored.", "warning",
            actions=[("Restore", lambda: self.restore(latest) or self._show_recovery(found)),
                     ("Discard", lambda: self.keeper.forget_recovered(found))], key="recovery")

    def restore(self, recovered) -> asyncio.Task | None:
        """Open what a crashed session autosaved in place of the open session, asking first about its
        unsaved runs; None (the offer stays) when that cannot be done now or the person cancelled."""
        if self._refuse_while_running("restore") or (decision := self.ask_before_replacing()) is False:
            return None
        return self.controller.spawn(self._restore_after(decision, recovered))

    async def _restore_after(self, decision: bool | Path, recovered) -> bool:
        return await self._saved_first(decision) and await self.keeper.restore_async(recovered)

    @staticmethod
    def dropped_session(event) -> Path | None:
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        paths = [Path(u.toLocalFile()) for u in urls if u.isLocalFile()]
        return paths[0] if len(paths) == 1 and paths[0].suffix == SESSION_SUFFIX else None

    def close_guard(self) -> bool:
        """Before the window closes. The question about unsaved runs comes first, while any run goes
        on: nothing stops until the person has chosen to close. True when the window may close now;
        False when it stays (cancelled; or saving first, after which it closes itself)."""
        if self._saving_to_close:
            self.say("Saving before closing…")
            return False
        runs = self.controller.jobs("generate")
        decision = True if self._saved_to_close else self.ask_before_replacing(running=bool(runs))
        if decision is False:
            return False
        if isinstance(decision, Path):
            self._saving_to_close = True
            self.controller.spawn(self._save_then_close(decision))
            return False
        if runs:
            for job in runs:
                job.stop()
            for job in runs:
                job.wait(1.0)  # the person chose to close: a stop lands between two layers, well under a second
            self.controller.drain()  # the stopped run's last events
        self.keeper.close_cleanly()
        return True

    async def _save_then_close(self, path: Path) -> None:
        """Stop the runs, save what they made (asking if the file changed on disk), then close."""
        try:
            runs = self.controller.jobs("generate")
            for job in runs:
                job.stop()
            for job in runs:
                await self.controller.wait(job)  # its last events delivered: what is saved is what was made
            saved = await self.save_to(path)
        finally:
            self._saving_to_close = False
        if saved:
            self._saved_to_close = True
            self._window.close()


def _beside(path: Path) -> Path:
    """A name for keeping both: "name (2).optsession", the first that is free in the same folder."""
    n = 2
    while (other := path.with_name(f"{path.stem} ({n}){path.suffix}")).exists():
        n += 1
    return other
