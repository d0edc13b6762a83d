"""The main window: layout and composition only.

The views sit in tabs at the centre; the prompt, the runs and the settings are dock panels that can
be resized, moved, hidden (View menu) and are remembered between starts. What the buttons and
menus do lives in the command modules: run_commands, session_commands, model_commands, analysis.
"""

from __future__ import annotations

import base64
from types import SimpleNamespace

from PySide6.QtCore import QByteArray, Qt, QUrl, Signal
from PySide6.QtGui import QCloseEvent, QDesktopServices, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
    QDockWidget,
    QHBoxLayout,
    QMainWindow,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from ..folders import log_dir
from ..presets import PresetStore
from ..session.autosave import Autosave
from ..session.next_run import Interventions
from .actions import Actions
from .analysis import Analysis
from .app_state import AppState
from .controller import Controller
from .model_commands import ModelCommands
from .run_commands import RunCommands
from .run_presenter import RunPresenter
from .session_commands import SessionCommands
from .session_keeper import SessionKeeper
from .widgets.compare_view import CompareView
from .widgets.head_importance_view import HeadImportanceView
from .widgets.inspector import Inspector
from .widgets.message_banner import MessageBanner
from .widgets.model_bar import ModelBar
from .widgets.output_view import OutputView
from .widgets.prompt_editor import PromptEditor
from .widgets.run_details import RunDetails
from .widgets.run_list import RunList
from .widgets.run_status import RunStatus
from .widgets.settings_panel import SettingsPanel

APP_NAME = "OPT Desktop"
STATUS_MS = 6000  # a passing status-bar line; anything that needs the person stays in the banner


class MainWindow(QMainWindow):
    closed = Signal()

    def __init__(self, controller: Controller | None = None, state: AppState | None = None,
                 presets: PresetStore | None = None, autosave: Autosave | None = None):
        super().__init__()
        self.controller = controller or Controller(parent=self)
        if self.controller.parent() is None:
            self.controller.setParent(self)
        self.state = state or AppState.load()
        self.keeper = SessionKeeper(self.state, autosave, parent=self)
        self.interventions = Interventions()
        self.setAcceptDrops(True)
        self.resize(1320, 860)
        self._build_views(presets)
        self._build_docks()
        self._compose()
        self._default_layout = self.saveState()
        self._restore_layout()
        self.update_state()
        self.prompt.setFocus()

    # --- construction --------------------------------------------------------------------------

    def _build_views(self, presets: PresetStore | None) -> None:
        self.model_bar = ModelBar()
        self.model_bar.set_recent(self.state.recent_sources)
        self.banner = MessageBanner()
        self.prompt = PromptEditor()
        self.prompt.setMinimumHeight(60)  # a few lines: the views can take the rest
        piece = lambda token_id: self.presenter.piece(token_id)  # noqa: E731 - the presenter comes later
        self.output = OutputView(piece_fn=piece)
        self.inspector = Inspector(piece_fn=piece)
        self.compare = CompareView()
        self.importance = HeadImportanceView()
        self.settings_panel = SettingsPanel(presets)
        self.run_list = RunList()
        self.run_list.set_session(self.keeper.session)
        self.run_details = RunDetails()
        self.run_status = RunStatus()
        self.statusBar().addPermanentWidget(self.run_status)

        self.tabs = QTabWidget()
        for view, name in ((self.output, "Output"), (self.inspector, "Inspector"), (self.compare, "Compare"),
                           (self.importance, "Head importance")):
            self.tabs.addTab(view, name)
        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.banner)
        layout.addWidget(self.tabs, 1)
        self.setCentralWidget(central)
        model = QToolBar("Model")
        model.setObjectName("model")
        model.setMovable(False)
        model.addWidget(self.model_bar)
        self.addToolBar(Qt.ToolBarArea.TopToolBarArea, model)

    def _dock(self, title: str, name: str, widget: QWidget, area: Qt.DockWidgetArea) -> QDockWidget:
        dock = QDockWidget(title, self)
        dock.setObjectName(name)  # saveState() finds docks by name
        dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _build_docks(self) -> None:
        # The side panels run the full height; the prompt sits above the views, between them.
        self.setCorner(Qt.Corner.TopLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.setCorner(Qt.Corner.BottomLeftCorner, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.setCorner(Qt.Corner.TopRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.setCorner(Qt.Corner.BottomRightCorner, Qt.DockWidgetArea.RightDockWidgetArea)
        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Generate from the prompt (Ctrl+Enter)")
        self.generate_button.setDefault(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop the running job within one layer (Esc)")
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.setToolTip("Run the last prompt again with the current settings (Ctrl+R)")
        self.continue_button = QPushButton("Continue")
        self.continue_button.setToolTip("Append more tokens to the shown run (Ctrl+Shift+Enter)")
        prompt_panel = QWidget()
        column = QVBoxLayout(prompt_panel)
        column.setContentsMargins(4, 0, 4, 4)
        column.addWidget(self.prompt, 1)
        buttons = QHBoxLayout()
        for b in (self.generate_button, self.stop_button, self.regenerate_button, self.continue_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        column.addLayout(buttons)
        scroll = QScrollArea()
        scroll.setWidget(self.settings_panel)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(280)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.prompt_dock = self._dock("Prompt", "prompt", prompt_panel, Qt.DockWidgetArea.TopDockWidgetArea)
        runs = QSplitter(Qt.Orientation.Vertical)
        runs.addWidget(self.run_list)
        runs.addWidget(self.run_details)
        runs.setSizes([300, 260])
        self.runs_dock = self._dock("Runs", "runs", runs, Qt.DockWidgetArea.LeftDockWidgetArea)
        self.settings_dock = self._dock("Settings", "settings", scroll, Qt.DockWidgetArea.RightDockWidgetArea)
        self.docks = (self.prompt_dock, self.runs_dock, self.settings_dock)
        self.resizeDocks([self.prompt_dock], [170], Qt.Orientation.Vertical)
        self.resizeDocks([self.runs_dock, self.settings_dock], [230, 320], Qt.Orientation.Horizontal)

    def _compose(self) -> None:
        c, k = self.controller, self.keeper
        views = SimpleNamespace(window=self, **{n: getattr(self, n) for n in (
            "model_bar", "banner", "prompt", "output", "inspector", "compare", "importance", "settings_panel",
            "run_list", "run_details", "run_status", "tabs")})
        self.presenter = RunPresenter(k, views, lambda: c.engine.tokenizer, parent=self)
        self.models = ModelCommands(c, self.state, views, parent=self)
        self.runs = RunCommands(c, k, self.presenter, self.interventions, views, self.say, self.models.load,
                                parent=self)
        self.sessions = SessionCommands(c, k, self.presenter, views, self.say, parent=self)
        self.analysis = Analysis(c, k, self.presenter, views, parent=self)
        tab = self.tabs.setCurrentIndex
        self.actions_ = Actions(self, {
            "new": self.sessions.new, "open_session": self.sessions.open,
            "add_runs": lambda: self.sessions.add_runs_from_file(), "save": self.sessions.save,
            "save_as": self.sessions.save_as, "export_png": self.sessions.export_plot,
            **{f"export_{f}": (lambda _=False, f=f: self.sessions.export(f)) for f in ("md", "csv", "json", "html")},
            "manager": self.models.open_model_manager, "open_folder": self.models.open_folder,
            "demo": self.models.load_demo, "quit": self.close,
            "generate": self.runs.generate, "stop": self.runs.stop, "regenerate": self.runs.regenerate,
            "continue_run": self.runs.continue_run, "rerun": self.runs.rerun,
            "tab_output": lambda: tab(0), "tab_inspector": lambda: tab(1), "tab_compare": lambda: tab(2),
            "tab_importance": lambda: tab(3), "views_only": self.set_views_only,
            "reset_layout": lambda: self.restoreState(self._default_layout),
            "show_prompt": self.output.set_show_prompt, "keep_rows": self._keep_rows,
            "open_log_folder": lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(log_dir()))),
        })
        a = self.actions_
        a.keep_rows.setChecked(self.state.keep_attention_rows)
        views.keep_rows_action, views.show_prompt_action = a.keep_rows, a.show_prompt
        self.recent_menu = views.recent_menu = a.build_menus(self, [d.toggleViewAction() for d in self.docks])
        self.sessions.fill_recent_menu()
        for button, command in ((self.generate_button, self.runs.generate), (self.stop_button, self.runs.stop),
                                (self.regenerate_button, self.runs.regenerate),
                                (self.continue_button, self.runs.continue_run)):
            button.clicked.connect(command)

        c.busy_changed.connect(self.update_state)
        c.model_changed.connect(lambda _: (self.update_state(), self.analysis.refresh_compare_availability()))
        self.presenter.shown_changed.connect(self.update_state)
        self.presenter.run_changed.connect(lambda: (self.update_state(), self.analysis.refresh_compare_choices()))
        k.modified_changed.connect(lambda _: self.update_state())
        c.engine_died.connect(self._on_engine_died)
        k.replaced.connect(self._on_session_replaced)
        k.modified_changed.connect(lambda _: self.update_title())
        k.path_changed.connect(lambda _: self.update_title())
        k.recent_changed.connect(self.sessions.fill_recent_menu)
        k.error.connect(self.banner.show_error)
        self.model_bar.load_requested.connect(self.models.load)
        self.settings_panel.error.connect(self.banner.show_error)
        self.output.token_clicked.connect(self._on_token_clicked)
        self.output.fork_requested.connect(self.runs.fork)
        self.output.hidden_positions_changed.connect(self._on_hidden_changed)
        self.inspector.fork_requested.connect(self.runs.fork)
        self.inspector.position_selected.connect(self.output.set_selected)
        self.inspector.lens_requested.connect(self.analysis.request_lens)
        self.inspector.head_mask_changed.connect(self._on_head_mask_changed)
        self.run_list.run_selected.connect(self.presenter.show_run)
        self.run_details.use_settings.connect(self.settings_panel.set_settings)
        self.compare.runs_chosen.connect(self.analysis.compare_runs)
        self.compare.divergence_requested.connect(self.analysis.request_divergence)
        self.importance.start_requested.connect(self.analysis.start_importance)
        self.importance.stop_requested.connect(self.analysis.stop_importance)
        self.importance.head_clicked.connect(self.analysis.show_head)
        self.tabs.currentChanged.connect(self._on_tab_changed)

    # --- reactions -------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """A passing line in the status bar (what needs the person goes to the banner instead)."""
        self.statusBar().showMessage(text, STATUS_MS)

    def _on_engine_died(self, line: str) -> None:
        def restart() -> None:
            self.controller.restart_engine()
            self.models.load(self.model_bar.request())

        self.banner.show_message(line, "error", actions=[("Restart the engine", restart)], key="engine")

    def _on_token_clicked(self, position: int) -> None:
        self.inspector.refresh()
        self.inspector.select_position(position)
        self.tabs.setCurrentWidget(self.inspector)

    def _on_hidden_changed(self, positions) -> None:
        trace = self.presenter.trace
        self.interventions.set_hidden(positions, trace.started.prompt if trace is not None else None)

    def _on_head_mask_changed(self, mask) -> None:
        self.interventions.set_head_mask(mask)
        self.controller.set_head_mask(self.interventions.head_mask)

    def _on_tab_changed(self, _index: int) -> None:
        if self.tabs.currentWidget() is self.inspector:
            self.inspector.refresh()
        elif self.tabs.currentWidget() is self.compare:
            self.analysis.refresh_compare_choices()

    def _on_session_replaced(self) -> None:
        session = self.keeper.session
        self.run_list.set_session(session)
        self.analysis.forget_compared()
        self.presenter.show_run(len(session.runs) - 1 if session.runs else None)
        trace = self.presenter.trace
        self.interventions.take_run(trace)
        if trace is not None:
            self.prompt.set_text(trace.started.prompt)
            self.inspector.set_head_mask(self.interventions.head_mask)
        self.update_title()

    def _keep_rows(self, on: bool) -> None:
        self.state.keep_attention_rows = bool(on)
        self.state.save()

    def set_views_only(self, on: bool) -> None:
        """Hide the side panels so the views take the whole window (and show them again)."""
        for dock in self.docks:
            dock.setVisible(not on)

    def update_title(self) -> None:
        info = self.controller.model
        parts = [f"{self.keeper.display_name()}[*]"] + ([info.label] if info is not None else []) + [APP_NAME]
        self.setWindowTitle(" — ".join(parts))
        self.setWindowModified(self.keeper.modified)

    def update_state(self) -> None:
        """Enable what can run now, from the controller's jobs and the shown run."""
        c, a = self.controller, self.actions_
        idle = not c.is_busy
        ready = idle and c.model is not None
        has_run = self.presenter.trace is not None and self.presenter.trace.finished is not None
        for w in (self.generate_button, a.generate):
            w.setEnabled(not c.is_running and not c.is_analysing)  # with no model, Generate explains what to do
        for w in (self.regenerate_button, a.regenerate):
            w.setEnabled(ready and (self.runs.last_request is not None or has_run))
        for w in (self.continue_button, a.continue_run):
            w.setEnabled(ready and has_run)
        for w in (self.stop_button, a.stop):
            w.setEnabled(c.is_busy)
        a.rerun.setEnabled(idle and has_run)
        for action in (*a.export_actions().values(), a.save, a.save_as):
            action.setEnabled(not c.is_running and bool(self.keeper.session.runs))
        for action in (a.new, a.open_session):
            action.setEnabled(not c.is_running)
        self.analysis.update_availability()
        self.update_title()

    # --- the layout, remembered -----------------------------------------------------------------------

    def _restore_layout(self) -> None:
        for value, restore in ((self.state.window_geometry, self.restoreGeometry),
                               (self.state.window_layout, self.restoreState)):
            if value:
                restore(QByteArray(base64.b64decode(value)))

    def _remember_layout(self) -> None:
        self.state.window_geometry = base64.b64encode(bytes(self.saveGeometry().data())).decode("ascii")
        self.state.window_layout = base64.b64encode(bytes(self.saveState().data())).decode("ascii")
        self.state.save()

    # --- drag and drop, closing ------------------------------------------------------------------

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if self.sessions.dropped_session(event) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        path = self.sessions.dropped_session(event)
        if path is not None:
            event.acceptProposedAction()
            self.sessions.open_file(path)

    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802
        if not self.sessions.close_guard():
            event.ignore()
            return
        self._remember_layout()
        self.controller.shutdown(timeout=1.0)
        self.closed.emit()
        super().closeEvent(event)
