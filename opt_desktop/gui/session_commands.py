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

    @property
    def _window(self):
        return self.v.window

    def _folder(self) -> str:
        return str(self.keeper.path.parent) if self.keeper.path is not None else ""

    # --- replacing the open session ---------------------------------------------------------------

    def may_discard(self) -> bool:
        """True when the open session may be replaced or closed: saved, or the person chose.
        Saving here is done at once (the window waits for the answer anyway)."""
        if not self.keeper.modified or not self.keeper.session.runs:
            return True
        answer = session_dialogs.ask_unsaved(self._window, self.keeper.display_name())
        if answer == "save":
            path = self.keeper.path or self._choose_save_path()
            return path is not None and self.keeper.save(path)
        return answer == "discard"

    def _refuse_while_running(self, what: str) -> bool:
        if self.controller.is_running:
            self.v.banner.show_error(f"Cannot {what} while a run is generating: stop it first.")
            return True
        return False

    def new(self) -> None:
        if not self._refuse_while_running("start a new session") and self.may_discard():
            self.keeper.new()

    def open(self) -> asyncio.Task | None:
        if self._refuse_while_running("open a session") or not self.may_discard():
            return None
        path = session_dialogs.choose_open_path(self._window, self._folder())
        return None if path is None else self.controller.spawn(self.open_path(path))

    def open_file(self, path: Path) -> asyncio.Task | None:
        """Open a session file (command line, drag and drop, recent files); the open session stays on failure."""
        if self._refuse_while_running(f"open {Path(path).name}") or not self.may_discard():
            return None
        return self.controller.spawn(self.open_path(path))

    async def open_path(self, path: Path) -> bool:
        """Read the file off the GUI thread, then show it; False (and one line) when it cannot be opened."""
        self.say(f"Opening {Path(path).name}…")
        return await self.keeper.open_async(path)

    def add_runs_from_file(self, path: Path | None = None) -> bool:
        """Bring another file's runs into this session, e.g. to compare them in the Compare tab."""
        if self._refuse_while_running("add runs"):
            return False
        path = path or session_dialogs.choose_open_path(self._window, self._folder())
        if path is None or not (added := self.keeper.add_from(path)):
            return False
        self.v.run_list.refresh()
        self.presenter.show_run(added[-1])
        n = len(added)
        self.v.banner.show_notice(f"Added {n} run{'s' if n != 1 else ''} from {Path(path).name}: "
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
        """Write the session off the GUI thread; False (and one line) when it could not be written."""
        self.say(f"Saving {Path(path).name}…")
        saved = await self.keeper.save_async(path)
        if saved:
            self.say(f"Saved {self.keeper.path}")
        return saved

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
            await asyncio.to_thread(write_export, session, fmt, path, run=run)
        except (SessionFileError, EngineError, OSError) as exc:
            self.v.banner.show_error(str(exc))
            return False
        self.say(f"Exported to {path}")
        return True

    def export_plot(self) -> None:
        """The plot in view (inspector, compare or head importance) as a PNG, as it appears on screen."""
        widget = self.v.tabs.currentWidget()
        if widget is self.v.inspector:
            widget = self.v.inspector.tabs.currentWidget()
        path = session_dialogs.choose_export_path(self._window, "png", str(Path.home() / "plot.png"))
        if path is None:
            return
        if not widget.grab().save(str(path), "PNG"):
            self.v.banner.show_error(f"Could not write {path}.")
            return
        self.say(f"Saved {path}")

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

    def check_recovery(self) -> None:
        """Offer to restore what a crashed session left unsaved; the offer stays until answered."""
        found = self.keeper.recoverable()
        if not found:
            return
        latest = max(found, key=lambda r: r.saved_at)
        name = latest.source.name if latest.source is not None else "an untitled session"
        when = latest.saved_at.strftime("%d %b %H:%M")
        runs = f"{latest.n_runs} run" + ("s" if latest.n_runs != 1 else "")
        self.v.banner.show_message(
            f"OPT Desktop did not close properly: {runs} of {name}, autosaved {when}, can be restored.", "warning",
            actions=[("Restore", lambda: self.keeper.restore(latest)),
                     ("Discard", lambda: [self.keeper.autosave.forget(r) for r in found])], key="recovery")

    @staticmethod
    def dropped_session(event) -> Path | None:
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        paths = [Path(u.toLocalFile()) for u in urls if u.isLocalFile()]
        return paths[0] if len(paths) == 1 and paths[0].suffix == SESSION_SUFFIX else None

    def close_guard(self) -> bool:
        """Before the window closes: stop a run first (so the question is not asked while tokens still
        stream), then ask about unsaved runs. True when the window may close."""
        runs = self.controller.jobs("generate")
        if runs:
            for job in runs:
                job.stop()
            for job in runs:
                job.wait(1.0)  # a stop lands between two layers: well under a second
            self.controller.drain()  # the stopped run's last events, so what is saved is what was made
        if not self.may_discard():
            return False
        self.keeper.close_cleanly()
        return True
