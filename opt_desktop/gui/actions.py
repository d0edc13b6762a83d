"""The window's actions and menus as one table: text, shortcut and the command each one runs."""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMainWindow, QMenu

# (attribute, text, shortcuts, checkable). The command behind each is given by name when built.
ACTIONS: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("new", "&New session", ("Ctrl+N",), False),
    ("open_session", "&Open session…", ("Ctrl+O",), False),
    ("add_runs", "&Add runs from another session…", (), False),
    ("save", "&Save session", ("Ctrl+S",), False),
    ("save_as", "Save session &as…", ("Ctrl+Shift+S",), False),
    ("export_md", "&Markdown transcript…", (), False),
    ("export_csv", "Token table as &CSV…", (), False),
    ("export_json", "&JSON…", (), False),
    ("export_html", "&HTML report…", (), False),
    ("export_png", "Current &plot as PNG…", (), False),
    ("manager", "&Model manager…", ("Ctrl+M",), False),
    ("open_folder", "Load model &folder…", ("Ctrl+Shift+O",), False),
    ("demo", "Load the &demo model", (), False),
    ("quit", "&Quit", ("Ctrl+Q",), False),
    ("generate", "&Generate", ("Ctrl+Return", "Ctrl+Enter"), False),
    ("stop", "&Stop", ("Esc",), False),
    ("regenerate", "&Regenerate", ("Ctrl+R",), False),
    ("continue_run", "&Continue", ("Ctrl+Shift+Return", "Ctrl+Shift+Enter"), False),
    ("rerun", "Re-run the shown run &exactly", ("Ctrl+Shift+R",), False),
    ("tab_output", "&Output", ("Ctrl+1",), False),
    ("tab_inspector", "&Inspector", ("Ctrl+2",), False),
    ("tab_compare", "&Compare", ("Ctrl+3",), False),
    ("tab_importance", "&Head importance", ("Ctrl+4",), False),
    ("tab_attribution", "&Why this token? (attribution)", ("Ctrl+5",), False),
    ("tab_patching", "&Patching", ("Ctrl+6",), False),
    ("tab_routes", "&Routes (information flow)", ("Ctrl+7",), False),
    ("views_only", "&Views only (hide the side panels)", ("Ctrl+Shift+F",), True),
    ("reset_layout", "&Reset the layout", (), False),
    ("show_prompt", "Show &prompt tokens (shaded by surprisal)", (), True),
    ("keep_rows", "Keep full &attention rows (memory grows with T²; off at each start)", (), True),
    ("open_log_folder", "Open the &log folder", (), False),
)

EXPORT_FORMATS = ("md", "csv", "json", "html")


class Actions:
    """Every QAction of the window, as attributes named after the table (`actions.generate`)."""

    def __init__(self, window: QMainWindow, commands: dict[str, Callable]):
        self.all: dict[str, QAction] = {}
        for name, text, keys, checkable in ACTIONS:
            a = QAction(text, window)
            if keys:
                a.setShortcuts([QKeySequence(k) for k in keys])
                a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            a.setCheckable(checkable)
            a.triggered.connect(commands[name])
            window.addAction(a)
            self.all[name] = a
            setattr(self, name, a)

    def export_actions(self) -> dict[str, QAction]:
        return {fmt: self.all[f"export_{fmt}"] for fmt in EXPORT_FORMATS}

    def build_menus(self, window: QMainWindow, panel_toggles: list[QAction],
                    threads_menu: QMenu | None = None) -> QMenu:
        """The menu bar; returns the (empty) Open recent menu, which the session commands fill."""
        bar = window.menuBar()

        def fill(menu: QMenu, names) -> None:
            for name in names:
                if name is None:
                    menu.addSeparator()
                elif isinstance(name, QAction):
                    menu.addAction(name)
                else:
                    menu.addAction(self.all[name])

        file_menu = bar.addMenu("&File")
        fill(file_menu, ("new", "open_session"))
        recent = file_menu.addMenu("Open &recent")
        fill(file_menu, ("add_runs", "save", "save_as"))
        export_menu = file_menu.addMenu("&Export")
        fill(export_menu, (*(f"export_{f}" for f in EXPORT_FORMATS), None, "export_png"))
        fill(file_menu, (None, "manager", "open_folder", "demo", None, "quit"))
        run_menu = bar.addMenu("&Run")
        fill(run_menu, ("generate", "stop", "regenerate", "continue_run", None, "rerun"))
        if threads_menu is not None:
            run_menu.addSeparator()
            run_menu.addMenu(threads_menu)
        fill(bar.addMenu("&View"), ("tab_output", "tab_inspector", "tab_compare", "tab_importance", "tab_attribution",
                                     "tab_patching", "tab_routes", None,
                                     *panel_toggles, "views_only", "reset_layout", None, "show_prompt", "keep_rows"))
        fill(bar.addMenu("&Help"), ("open_log_folder",))
        return recent
