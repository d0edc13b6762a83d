"""The main window: layout and composition only.

The views sit in tabs at the centre; the prompt, the runs and the settings are dock panels that can
be resized, moved, hidden (View menu) and are remembered between starts. What the buttons and
menus do lives in the command modules: run_commands, session_commands, model_commands, analysis.
"""

from __future__ import annotations

from types import SimpleNamespace

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QCloseEvent, QDesktopServices, QDragEnterEvent, QDropEvent
from PySide6.QtWidgets import (
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

from ..engine.messages.threads import ThreadSetting
from ..engine.running.cpu_load import core_count
from ..folders import log_dir
from ..presets import PresetStore
from ..session.autosave import Autosave
from ..session.next_run import Interventions
from .actions import Actions
from .analysis import Analysis
from .app_state import AppState
from .controller import Controller
from .dock_layout import DockLayout
from .engine_commands import EngineCommands, local_engine_like
from .model_commands import ModelCommands
from .run_commands import RunCommands
from .run_presenter import RunPresenter
from .session_commands import SessionCommands
from .session_keeper import SessionKeeper
from .widgets.attribution_view import AttributionView
from .widgets.compare_view import CompareView
from .widgets.head_importance_view import HeadImportanceView
from .widgets.inspector import Inspector
from .widgets.message_banner import MessageBanner
from .widgets.model_bar import ModelBar
from .widgets.output_view import OutputView
from .widgets.patching_view import PatchingView
from .widgets.prompt_editor import PromptEditor
from .widgets.routes_view import RoutesView
from .widgets.run_details import RunDetails
from .widgets.run_list import RunList
from .widgets.run_status import RunStatus
from .widgets.settings_panel import SettingsPanel
from .widgets.threads_menu import ThreadsMenu

APP_NAME = "OPT Desktop"
STATUS_MS = 6000  # a passing status-bar line; anything that needs the person stays in the banner


class MainWindow(QMainWindow):
    closed = Signal()

    def __init__(self, controller: Controller | None = None, state: AppState | None = None,
                 presets: PresetStore | None = None, autosave: Autosave | None = None, local_engine=None):
        """`local_engine()`: a new engine on this computer, for the engine chooser's "This computer"
        (default: one like the controller's, a process of its own or a thread of this one)."""
        super().__init__()
        self.controller = controller or Controller(parent=self)
        self._local_engine = local_engine or local_engine_like(self.controller.engine)
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
        self.layout_.restore(self.state)
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
        self.attribution = AttributionView()
        self.patching = PatchingView()
        self.routes = RoutesView()
        self.settings_panel = SettingsPanel(presets)
        self.run_list = RunList()
        self.run_list.set_session(self.keeper.session)
        self.run_details = RunDetails()
        self.run_status = RunStatus()
        self.statusBar().addPermanentWidget(self.run_status)

        self.tabs = QTabWidget()
        for view, name in ((self.output, "Output"), (self.inspector, "Inspector"), (self.compare, "Compare"),
                           (self.importance, "Head importance"), (self.attribution, "Why this token?"),
                           (self.patching, "Patching"), (self.routes, "Routes")):
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

    def _build_docks(self) -> None:
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
        runs = QSplitter(Qt.Orientation.Vertical)
        runs.addWidget(self.run_list)
        runs.addWidget(self.run_details)
        runs.setSizes([300, 260])
        area = Qt.DockWidgetArea
        self.layout_ = DockLayout(self, [("Prompt", "prompt", prompt_panel, area.TopDockWidgetArea),
                                         ("Runs", "runs", runs, area.LeftDockWidgetArea),
                                         ("Settings", "settings", scroll, area.RightDockWidgetArea)])
        self.prompt_dock, self.runs_dock, self.settings_dock = self.docks = tuple(self.layout_.docks)
        self.layout_.size({self.prompt_dock: 170}, {self.runs_dock: 230, self.settings_dock: 320})

    def _compose(self) -> None:
        c, k = self.controller, self.keeper
        views = SimpleNamespace(window=self, **{n: getattr(self, n) for n in (
            "model_bar", "banner", "prompt", "output", "inspector", "compare", "importance", "attribution",
            "patching", "routes", "settings_panel",
            "run_list", "run_details", "run_status", "tabs")})
        self.presenter = RunPresenter(k, views, c.tokenizer, parent=self)
        self.models = ModelCommands(c, self.state, views, parent=self)
        self.engines = EngineCommands(c, self.state, self.models, views, self._local_engine, parent=self)
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
            "tab_importance": lambda: tab(3), "tab_attribution": lambda: tab(4), "tab_patching": lambda: tab(5),
            "tab_routes": lambda: tab(6),
            "views_only": self.layout_.set_views_only, "reset_layout": self.layout_.reset,
            "show_prompt": self.output.set_show_prompt, "keep_rows": self._keep_rows,
            "open_log_folder": lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(str(log_dir()))),
        })
        a = self.actions_
        views.keep_rows_action, views.show_prompt_action = a.keep_rows, a.show_prompt
        self.threads_menu = ThreadsMenu(core_count(), self)
        self.threads_menu.set_setting(self.state.threads)
        self.threads_menu.chosen.connect(self.set_threads)
        self._send_threads(self.state.threads)  # a fresh engine starts at "auto"
        self.recent_menu = views.recent_menu = a.build_menus(self, self.layout_.toggles(), self.threads_menu)
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
        k.replaced.connect(self._on_session_replaced)
        k.modified_changed.connect(lambda _: self.update_title())
        k.path_changed.connect(lambda _: self.update_title())
        k.recent_changed.connect(self.sessions.fill_recent_menu)
        k.error.connect(self.banner.show_error)
        self.model_bar.load_requested.connect(self.models.load)
        self.model_bar.manager_requested.connect(self.models.open_model_manager)
        self.settings_panel.error.connect(self.banner.show_error)
        self.output.token_clicked.connect(self._on_token_clicked)
        self.output.fork_requested.connect(self.runs.fork)
        self.output.hidden_positions_changed.connect(self.runs.set_hidden)
        self.inspector.fork_requested.connect(self.runs.fork)
        self.inspector.position_selected.connect(self.output.set_selected)
        self.inspector.head_mask_changed.connect(self.runs.set_head_mask)
        self.run_list.run_selected.connect(self.presenter.show_run)
        self.run_details.use_settings.connect(self.settings_panel.set_settings)
        self.tabs.currentChanged.connect(self._on_tab_changed)

    # --- reactions -------------------------------------------------------------------------------

    def say(self, text: str) -> None:
        """A passing line in the status bar (what needs the person goes to the banner instead)."""
        self.statusBar().showMessage(text, STATUS_MS)

    def _on_token_clicked(self, position: int) -> None:
        self.inspector.refresh()
        self.inspector.select_position(position)
        self.tabs.setCurrentWidget(self.inspector)

    def _on_tab_changed(self, _index: int) -> None:
        if self.tabs.currentWidget() is self.inspector:
            self.inspector.refresh()
        elif self.tabs.currentWidget() is self.compare:
            self.analysis.refresh_compare_choices()
        elif self.tabs.currentWidget() is self.patching:
            self.analysis.refresh_patching_choices()

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

    def set_threads(self, setting: ThreadSetting) -> None:
        """The engine's CPU threads (Run > CPU threads), remembered for the next start."""
        self.state.threads = setting
        self.state.save()
        self.threads_menu.set_setting(setting)
        self._send_threads(setting)

    def _send_threads(self, setting: ThreadSetting) -> None:
        job = self.controller.set_threads(setting)
        if job is not None:
            self.controller.spawn(self._threads_sent(job))

    async def _threads_sent(self, job) -> None:
        end = await self.controller.wait(job)
        if end.reason == "error":
            self.banner.show_error(end.message, end.details)

    def _keep_rows(self, on: bool) -> None:
        """Off at every start (its memory grows with the square of the run's length): said when set."""
        self.say("The next runs keep every head's full attention rows (memory grows with T²), until this is "
                 "turned off or OPT Desktop restarts." if on else "Full attention rows are no longer kept.")

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
        self.layout_.remember(self.state)
        self.controller.shutdown(timeout=1.0)
        self.closed.emit()
        super().closeEvent(event)
