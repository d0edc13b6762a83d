"""The main window: wires the widgets to the controller. Layout and wiring only; no model code."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QDragEnterEvent, QDropEvent, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QMainWindow,
    QPushButton,
    QScrollArea,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from ..engine import (
    DEMO_SOURCE,
    EngineError,
    GenerationRequest,
    GenerationSettings,
    InspectSettings,
    LoadRequest,
    ModelInfo,
    SettingsError,
)
from ..engine.interventions_spec import normalize_head_mask
from ..engine.text import token_piece
from ..presets import PresetStore
from ..session import RunTrace
from ..session.autosave import Autosave
from ..session.compare import compare_runs
from ..session.export import write_export
from ..session.file import SESSION_SUFFIX, SessionFileError
from ..session.requests import fork_request, rerun_requests
from . import session_dialogs
from .app_state import AppState
from .controller import Controller
from .session_keeper import SessionKeeper
from .widgets.compare_view import CompareView
from .widgets.head_importance_view import HeadImportanceView
from .widgets.inspector import Inspector
from .widgets.message_banner import MessageBanner
from .widgets.model_bar import ModelBar
from .widgets.output_view import OutputView
from .widgets.prompt_editor import PromptEditor
from .widgets.run_list import RunList, run_title
from .widgets.run_status import RunStatus
from .widgets.settings_panel import SettingsPanel

APP_NAME = "OPT Desktop"
# The inspector's plots cost 15-50 ms a repaint: while tokens stream it follows once a second, the output at 30 Hz.
INSPECTOR_REFRESH_S = 1.0


def _same_model(info: ModelInfo | None, trace: RunTrace | None) -> bool:
    if info is None or trace is None:
        return False
    m = trace.started.model
    return (info.source, info.dtype, info.n_layers, info.hidden_size) == (m.source, m.dtype, m.n_layers, m.hidden_size)


class MainWindow(QMainWindow):
    closed = Signal()

    def __init__(self, controller: Controller | None = None, state: AppState | None = None,
                 presets: PresetStore | None = None, autosave: Autosave | None = None):
        super().__init__()
        self.controller = controller or Controller(parent=self)
        self.state = state or AppState.load()
        self.keeper = SessionKeeper(self.state, autosave, parent=self)
        self._auto_load: LoadRequest | None = None  # a start-up load, which falls back to the demo
        self._keep_banner = False
        self._inspector_refreshed = 0.0
        self._current: int | None = None  # the run shown in the views
        self._origin: tuple[int | None, int | None, str] | None = None  # (parent, fork position, label) of the next run
        self._pending_rerun: GenerationRequest | None = None  # waits for its model to load
        self._rerun_origin: tuple[int | None, int | None, str] | None = None
        self._compared: tuple[int | None, int | None] = (None, None)
        self._known_pieces: tuple[tuple, dict[int, str]] = ((), {})
        self.setAcceptDrops(True)
        self.resize(1320, 860)
        self._build(presets)
        self._build_actions()
        self._connect()
        self._update_title()
        self._update_buttons()
        self.prompt.setFocus()

    # --- construction --------------------------------------------------------------------------

    def _build(self, presets: PresetStore | None) -> None:
        self.model_bar = ModelBar()
        self.model_bar.set_recent(self.state.recent_sources)
        self.banner = MessageBanner()
        self.prompt = PromptEditor()
        self.output = OutputView(piece_fn=self._piece)
        self.inspector = Inspector(piece_fn=self._piece)
        self.compare = CompareView()
        self.importance = HeadImportanceView()
        self.settings_panel = SettingsPanel(presets)
        self.run_list = RunList()
        self.run_list.set_session(self.keeper.session)

        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Generate from the prompt (Ctrl+Enter)")
        self.generate_button.setDefault(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop before the next token (Esc)")
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.setToolTip("Run the last prompt again with the current settings (Ctrl+R)")
        self.continue_button = QPushButton("Continue")
        self.continue_button.setToolTip("Append more tokens to the shown run (Ctrl+Shift+Enter)")
        buttons = QHBoxLayout()
        for b in (self.generate_button, self.stop_button, self.regenerate_button, self.continue_button):
            buttons.addWidget(b)
        buttons.addStretch(1)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.output, "Output")
        self.tabs.addTab(self.inspector, "Inspector")
        self.tabs.addTab(self.compare, "Compare")
        self.tabs.addTab(self.importance, "Head importance")
        runs_and_views = QSplitter(Qt.Orientation.Horizontal)
        runs_and_views.addWidget(self.run_list)
        runs_and_views.addWidget(self.tabs)
        runs_and_views.setStretchFactor(1, 1)
        runs_and_views.setSizes([210, 770])

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.prompt, 1)
        top_layout.addLayout(buttons)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(top)
        left.addWidget(runs_and_views)
        left.setStretchFactor(0, 1)
        left.setStretchFactor(1, 3)
        left.setSizes([200, 560])

        scroll = QScrollArea()
        scroll.setWidget(self.settings_panel)
        scroll.setWidgetResizable(True)
        scroll.setMinimumWidth(300)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        body = QSplitter(Qt.Orientation.Horizontal)
        body.addWidget(left)
        body.addWidget(scroll)
        body.setStretchFactor(0, 1)
        body.setSizes([980, 340])

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.setContentsMargins(6, 6, 6, 0)
        layout.addWidget(self.model_bar)
        layout.addWidget(self.banner)
        layout.addWidget(body, 1)
        self.setCentralWidget(central)
        self.run_status = RunStatus()
        self.statusBar().addPermanentWidget(self.run_status)

    def _build_actions(self) -> None:
        def action(text, slot, *keys, checkable=False):
            a = QAction(text, self)
            if keys:
                a.setShortcuts([QKeySequence(k) for k in keys])
                a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
            a.setCheckable(checkable)
            a.triggered.connect(slot)
            self.addAction(a)
            return a

        self.new_action = action("&New session", self.new_session, "Ctrl+N")
        self.open_session_action = action("&Open session…", self.open_session, "Ctrl+O")
        self.add_runs_action = action("&Add runs from another session…", self.add_runs_from_file)
        self.save_action = action("&Save session", self.save_session, "Ctrl+S")
        self.save_as_action = action("Save session &as…", self.save_session_as, "Ctrl+Shift+S")
        self.export_actions = {
            fmt: action(text, lambda _=False, f=fmt: self.export(f))
            for fmt, text in (("md", "&Markdown transcript…"), ("csv", "Token table as &CSV…"),
                              ("json", "&JSON…"), ("html", "&HTML report…"))
        }
        self.export_png_action = action("Current &plot as PNG…", self.export_plot)
        self.generate_action = action("&Generate", self.generate, "Ctrl+Return", "Ctrl+Enter")
        self.stop_action = action("&Stop", self.stop, "Esc")
        self.regenerate_action = action("&Regenerate", self.regenerate, "Ctrl+R")
        self.continue_action = action("&Continue", self.continue_run, "Ctrl+Shift+Return", "Ctrl+Shift+Enter")
        self.rerun_action = action("Re-run the shown run &exactly", self.rerun, "Ctrl+Shift+R")
        self.manager_action = action("&Model manager…", self.open_model_manager, "Ctrl+M")
        self.open_action = action("Load model &folder…", self._open_folder, "Ctrl+Shift+O")
        self.demo_action = action("Load the &demo model", lambda: self.load_model(LoadRequest(source=DEMO_SOURCE)))
        self.quit_action = action("&Quit", self.close, "Ctrl+Q")
        self.show_prompt_action = action("Show &prompt tokens (shaded by surprisal)", self.output.set_show_prompt,
                                         checkable=True)
        self.keep_rows_action = action("Keep full &attention rows (memory grows with T²)", self._keep_rows,
                                       checkable=True)
        self.keep_rows_action.setChecked(self.state.keep_attention_rows)
        self.tab_actions = [action(f"&{name}", lambda _=False, i=i: self.tabs.setCurrentIndex(i), f"Ctrl+{i + 1}")
                            for i, name in enumerate(("Output", "Inspector", "Compare", "Head importance"))]
        self.output_tab_action, self.inspector_tab_action = self.tab_actions[:2]

        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        for a in (self.new_action, self.open_session_action):
            file_menu.addAction(a)
        self.recent_menu = file_menu.addMenu("Open &recent")
        file_menu.addAction(self.add_runs_action)
        for a in (self.save_action, self.save_as_action):
            file_menu.addAction(a)
        export_menu = file_menu.addMenu("&Export")
        for a in (*self.export_actions.values(), None, self.export_png_action):
            export_menu.addSeparator() if a is None else export_menu.addAction(a)
        for a in (None, self.manager_action, self.open_action, self.demo_action, None, self.quit_action):
            file_menu.addSeparator() if a is None else file_menu.addAction(a)
        self.file_menu = file_menu
        run_menu = menu.addMenu("&Run")
        for a in (self.generate_action, self.stop_action, self.regenerate_action, self.continue_action, None,
                  self.rerun_action):
            run_menu.addSeparator() if a is None else run_menu.addAction(a)
        view_menu = menu.addMenu("&View")
        for a in (*self.tab_actions, None, self.show_prompt_action, self.keep_rows_action):
            view_menu.addSeparator() if a is None else view_menu.addAction(a)
        self._fill_recent_menu()

        self.generate_button.clicked.connect(self.generate)
        self.stop_button.clicked.connect(self.stop)
        self.regenerate_button.clicked.connect(self.regenerate)
        self.continue_button.clicked.connect(self.continue_run)

    def _connect(self) -> None:
        c = self.controller
        c.loading_changed.connect(self._on_loading)
        c.load_progress.connect(self.model_bar.set_progress)
        c.model_loaded.connect(self._on_model_loaded)
        c.load_failed.connect(self._on_load_failed)
        c.running_changed.connect(lambda _: self._update_buttons())
        c.analysing_changed.connect(self._on_analysing)
        c.run_started.connect(self._on_run_started)
        c.run_updated.connect(self._on_run_updated)
        c.run_finished.connect(self._on_run_finished)
        c.run_failed.connect(self._on_run_failed)
        c.lens_ready.connect(self._on_lens_ready)
        c.lens_failed.connect(lambda pos, reason: self.inspector.set_lens_unavailable(reason))
        c.importance_progress.connect(self.importance.set_progress)
        c.importance_ready.connect(self.importance.set_result)
        c.importance_failed.connect(self.show_error)
        c.divergence_ready.connect(self.compare.set_divergence)
        c.divergence_failed.connect(lambda msg: self.compare.set_divergence(None, msg))
        k = self.keeper
        k.replaced.connect(self._on_session_replaced)
        k.modified_changed.connect(lambda _: self._update_title())
        k.path_changed.connect(lambda _: self._update_title())
        k.recent_changed.connect(self._fill_recent_menu)
        k.error.connect(self.show_error)
        self.model_bar.load_requested.connect(self.load_model)
        self.settings_panel.error.connect(self.show_error)
        self.output.token_clicked.connect(self._on_token_clicked)
        self.output.fork_requested.connect(self.fork)
        self.inspector.fork_requested.connect(self.fork)
        self.inspector.position_selected.connect(self.output.set_selected)
        self.inspector.lens_requested.connect(self._request_lens)
        self.inspector.head_mask_changed.connect(self.controller.set_head_mask)
        self.run_list.run_selected.connect(self.show_run)
        self.compare.runs_chosen.connect(self._compare_runs)
        self.compare.divergence_requested.connect(self._request_divergence)
        self.importance.start_requested.connect(self._start_importance)
        self.importance.stop_requested.connect(self.controller.stop)
        self.importance.head_clicked.connect(self._show_head)
        self.tabs.currentChanged.connect(self._on_tab_changed)

    # --- helpers -------------------------------------------------------------------------------

    def _piece(self, token_id: int) -> str:
        """A token shown alone: as the shown run recorded it (a reopened session needs no model), else
        from the loaded tokenizer."""
        trace = self.current_trace
        if trace is not None:
            key = (id(trace), trace.length)
            if self._known_pieces[0] != key:
                self._known_pieces = (key, trace.known_pieces())
            piece = self._known_pieces[1].get(token_id)
            if piece is not None:
                return piece
        tok = self.controller.engine.tokenizer
        return f"#{token_id}" if tok is None else token_piece(tok, token_id)

    def show_error(self, message: str) -> None:
        self.banner.show_message(message, "error")

    def show_notice(self, message: str) -> None:
        self.banner.show_message(message, "info")

    @property
    def current_trace(self) -> RunTrace | None:
        runs = self.keeper.session.runs
        return runs[self._current] if self._current is not None and self._current < len(runs) else None

    def _update_title(self) -> None:
        info = self.controller.model
        parts = [f"{self.keeper.display_name()}[*]"] + ([info.label] if info is not None else []) + [APP_NAME]
        self.setWindowTitle(" — ".join(parts))
        self.setWindowModified(self.keeper.modified)

    def _update_buttons(self) -> None:
        c = self.controller
        idle = not c.is_busy
        ready = idle and c.model is not None
        shown = self.current_trace
        has_run = shown is not None and shown.finished is not None
        for w in (self.generate_button, self.generate_action):
            w.setEnabled(idle)  # with no model, Generate explains what to do
        for w in (self.regenerate_button, self.regenerate_action):
            w.setEnabled(ready and (c.last_request is not None or has_run))
        for w in (self.continue_button, self.continue_action):
            w.setEnabled(ready and has_run)
        for w in (self.stop_button, self.stop_action):
            w.setEnabled(c.is_running or c.is_analysing)
        self.rerun_action.setEnabled(idle and has_run)
        for a in (*self.export_actions.values(), self.save_action, self.save_as_action):
            a.setEnabled(not c.is_running and bool(self.keeper.session.runs))
        for a in (self.new_action, self.open_session_action):
            a.setEnabled(not c.is_running)
        self._update_analysis_availability()

    def _update_analysis_availability(self) -> None:
        trace, info = self.current_trace, self.controller.model
        if trace is None or trace.finished is None:
            self.importance.set_available(False, "Generate or open a run first: head importance ablates each "
                                                 "head on the shown run's text.")
        elif not _same_model(info, trace):
            self.importance.set_available(False, f"Load {trace.started.model.label} ({trace.started.model.dtype}) "
                                                 "to measure head importance on this run.")
        else:
            self.importance.set_available(not self.controller.is_busy or self.controller.is_analysing, "")

    def _keep_rows(self, on: bool) -> None:
        self.state.keep_attention_rows = bool(on)
        self.state.save()

    # --- model ---------------------------------------------------------------------------------

    def load_model(self, request: LoadRequest, auto: bool = False) -> None:
        """Load in the background; an automatic (start-up) load falls back to the demo if it fails."""
        self._auto_load = request if auto else None
        self.model_bar.set_request(request)
        self.controller.load(request)

    def open_model_manager(self) -> None:
        from .widgets.model_manager import ModelManager  # scans the Hub cache: only when asked

        dialog = ModelManager(self, request=self.model_bar.request())
        dialog.load_requested.connect(self.load_model)
        dialog.open()

    def _open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder (with config.json)")
        if folder:
            self.load_model(LoadRequest(source=folder))

    def _on_loading(self, loading: bool) -> None:
        self.model_bar.set_loading(loading)
        self._update_buttons()

    def _on_model_loaded(self, info: ModelInfo) -> None:
        self.model_bar.set_model(info)
        self.prompt.set_counter(self.controller.engine.count_tokens, info.context_length)
        self._update_title()
        if not self._keep_banner:
            # A demo loaded as a fallback was not the person's choice, and its warning stays;
            # any other load is remembered and resolves an earlier error.
            self.state.remember(self.model_bar.request())
            self.state.save()
            self.model_bar.set_recent(self.state.recent_sources)
            self.banner.dismiss()
        self._keep_banner = False
        self._auto_load = None
        self._update_buttons()
        self._refresh_compare_availability()
        if self._pending_rerun is not None:
            request, self._pending_rerun = self._pending_rerun, None
            self._start(request)

    def _on_load_failed(self, message: str) -> None:
        auto = self._auto_load
        self._auto_load = None
        self._pending_rerun = None
        self.model_bar.set_model(self.controller.model)
        if auto is not None and auto.source != DEMO_SOURCE:
            self.banner.show_message(f"{message} Loaded the built-in demo model (random weights) instead.", "warning")
            self._keep_banner = True
            self.controller.load(LoadRequest(source=DEMO_SOURCE, dtype="float32", device="cpu"))
            self.model_bar.set_request(LoadRequest(source=DEMO_SOURCE))
            return
        self.show_error(message)
        self._update_buttons()

    # --- runs ----------------------------------------------------------------------------------

    def _inspect(self) -> InspectSettings:
        return InspectSettings(keep_attention_rows=self.keep_rows_action.isChecked())

    def _start(self, request: GenerationRequest, origin: tuple[int | None, int | None, str] | None = None) -> bool:
        if self.controller.model is None:
            self.show_error("No model is loaded yet: choose one in the bar above and press Load.")
            return False
        self._origin = origin
        if self.controller.generate(request) is None:
            self._origin = None
            return False
        self.banner.dismiss()
        return True

    def _settings(self, action: str) -> GenerationSettings | None:
        """The panel's settings, or None after telling the person why they cannot be used."""
        try:
            return self.settings_panel.settings()
        except SettingsError as exc:
            self.show_error(f"Cannot {action}: {exc}")
            return None

    def _interventions(self, prompt: str) -> dict | None:
        """The head mask being edited and the hidden prompt tokens, which belong to the shown run's prompt."""
        hidden = self.output.hidden_positions()
        shown = self.current_trace
        if hidden and (shown is None or shown.started.prompt != prompt):
            self.show_error("The hidden tokens belong to the shown run's prompt: regenerate that prompt, or clear "
                            "them (right-click in the output).")
            return None
        return dict(head_mask=self.inspector.head_mask(), hidden_positions=hidden)

    def generate(self) -> None:
        if not self.generate_button.isEnabled() or (settings := self._settings("generate")) is None:
            return
        prompt = self.prompt.text()
        if (extra := self._interventions(prompt)) is None:
            return
        self._start(GenerationRequest(prompt=prompt, settings=settings, inspect=self._inspect(), **extra))

    def regenerate(self) -> None:
        shown = self.current_trace
        if not self.regenerate_button.isEnabled() or (settings := self._settings("regenerate")) is None:
            return
        # The shown run's prompt, token for token; else the last request.
        if shown is not None:
            base = GenerationRequest(prompt=shown.started.prompt, prompt_ids=tuple(shown.token_ids[: shown.n_prompt]))
        elif self.controller.last_request is not None:
            base = self.controller.last_request
        else:
            return
        extra = dict(head_mask=self.inspector.head_mask(), hidden_positions=self.output.hidden_positions())
        self._start(base.replace(settings=settings, inspect=self._inspect(), **extra))

    def continue_run(self) -> None:
        trace = self.current_trace
        if trace is None or trace.finished is None or not self.continue_button.isEnabled():
            return
        if (settings := self._settings("continue")) is None:
            return
        # The earlier prompt and output become the new prompt, token for token (no re-tokenising).
        request = GenerationRequest(prompt=trace.started.prompt + trace.text, prompt_ids=tuple(trace.token_ids),
                                    settings=settings, inspect=self._inspect(), head_mask=self.inspector.head_mask(),
                                    hidden_positions=trace.started.hidden_positions)
        if self._start(request, origin=(self._current, None, "")):
            self.show_prompt_action.setChecked(True)  # so the earlier output stays in view, then grows
            self.output.set_show_prompt(True)

    def fork(self, position: int, token_id: int) -> None:
        """Branch the shown run at `position` with another token, and continue with the same settings."""
        trace = self.current_trace
        if trace is None or trace.finished is None or self.controller.is_busy:
            self.show_error("Wait for the run to finish before forking it.")
            return
        if not _same_model(self.controller.model, trace):
            self.show_error(f"Forking continues with the run's model: load {trace.started.model.label} "
                            f"({trace.started.model.dtype}) first.")
            return
        try:
            request = fork_request(trace, position, token_id)
        except SettingsError as exc:
            self.show_error(f"Cannot fork: {exc}")
            return
        self._start(request.replace(inspect=self._inspect()), origin=(self._current, position, ""))

    def rerun(self) -> None:
        """Run the shown run again with its recorded model, settings and seed (loading that model first)."""
        trace = self.current_trace
        if trace is None or trace.finished is None or self.controller.is_busy:
            return
        load, request = rerun_requests(trace)
        origin = (None, None, f"re-run of #{self._current + 1}")
        if _same_model(self.controller.model, trace):
            self._start(request, origin)
            return
        self._pending_rerun = request
        self._rerun_origin = origin
        self.show_notice(f"Loading {trace.started.model.label} to re-run #{self._current + 1}…")
        self.load_model(load)

    def stop(self) -> None:
        self.controller.stop()

    def _on_run_started(self, trace: RunTrace) -> None:
        parent, fork_at, label = self._origin or self._rerun_origin or (None, None, "")
        self._origin = None
        self._rerun_origin = None
        trace.parent, trace.fork_position, trace.label = parent, fork_at, label
        index = self.keeper.add_run(trace)
        self.run_list.refresh()
        self.show_run(index)
        self._inspector_refreshed = time.monotonic()  # show_run just redrew it
        self.run_status.clear()
        for notice in trace.notices:
            self.show_notice(notice)

    def _on_run_updated(self) -> None:
        trace = self.controller.trace
        if trace is not self.current_trace:
            return  # the person is looking at another run
        self.output.refresh()
        now = time.monotonic()
        if now - self._inspector_refreshed >= INSPECTOR_REFRESH_S:
            self._inspector_refreshed = now
            if self.tabs.currentWidget() is self.inspector:
                self.inspector.refresh()
            self.run_list.refresh()
        self.run_status.show_progress(trace)

    def _on_run_finished(self, finished) -> None:
        trace = self.controller.trace
        self.keeper.set_modified(True)
        self.keeper.autosave_now()
        self.run_list.refresh()
        self._refresh_compare_choices()
        if trace is self.current_trace:
            self.output.refresh()
            self.inspector.refresh()
            self.run_status.show_finished(finished)
            if trace.notices:
                self.show_notice(" ".join(trace.notices))
        self._update_buttons()

    def _on_run_failed(self, message: str) -> None:
        self._origin = None
        self.show_error(message)

    def show_run(self, index: int | None) -> None:
        """Show one run of the session in every view."""
        runs = self.keeper.session.runs
        self._current = index if index is not None and 0 <= index < len(runs) else None
        trace = self.current_trace
        self.output.set_trace(trace)
        self.inspector.set_trace(trace)
        self.output.set_hidden_positions(trace.started.hidden_positions if trace is not None else ())
        self.run_list.set_current(self._current)
        if trace is not None and trace.finished is not None:
            self.run_status.show_finished(trace.finished)
        self._update_buttons()

    def _on_token_clicked(self, position: int) -> None:
        self.inspector.refresh()
        self.inspector.select_position(position)
        self.tabs.setCurrentWidget(self.inspector)

    def _request_lens(self, position: int) -> None:
        trace = self.current_trace
        if trace is not None and not _same_model(self.controller.model, trace):
            self.inspector.set_lens_unavailable(f"the logit lens needs this run's model: load "
                                                f"{trace.started.model.label} ({trace.started.model.dtype})")
            return
        self.controller.lens(trace, position)

    def _on_lens_ready(self, result) -> None:
        if result.position == self.inspector.selected_position():
            self.inspector.set_lens(result)

    def _on_tab_changed(self, _index: int) -> None:
        if self.tabs.currentWidget() is self.inspector:
            self.inspector.refresh()
        elif self.tabs.currentWidget() is self.compare:
            self._refresh_compare_choices()

    # --- compare and head importance -----------------------------------------------------------

    def _refresh_compare_choices(self) -> None:
        """The run choices of the Compare tab; only while it is in view (it redraws two texts and plots)."""
        if self.tabs.currentWidget() is not self.compare:
            return  # it catches up when shown (_on_tab_changed)
        runs = self.keeper.session.runs
        self.compare.set_choices([run_title(i, t) for i, t in enumerate(runs)])

    def _compare_runs(self, a: int, b: int) -> None:
        runs = self.keeper.session.runs
        if not (0 <= a < len(runs) and 0 <= b < len(runs)):
            self.compare.set_runs(None, None)
            return
        self._compared = (a, b)
        self.compare.set_runs(runs[a], runs[b], f"#{a + 1}", f"#{b + 1}")
        self._refresh_compare_availability()

    def _refresh_compare_availability(self) -> None:
        a, b = self._compared
        runs = self.keeper.session.runs
        if a is None or b is None or max(a, b) >= len(runs):
            return
        ra, rb = runs[a], runs[b]
        if not compare_runs(ra, rb).same_model:
            self.compare.set_divergence_available(False, "The two runs used different models: the KL divergence "
                                                         "between their distributions is not defined here.")
        elif not _same_model(self.controller.model, ra):
            self.compare.set_divergence_available(False, f"Load {ra.started.model.label} "
                                                         f"({ra.started.model.dtype}) to compute the divergence.")
        else:
            self.compare.set_divergence_available(True, "")

    def _request_divergence(self) -> None:
        a, b = self._compared
        runs = self.keeper.session.runs
        if a is None or b is None:
            return
        base, other = runs[a], runs[b]
        # Teacher-forced on the baseline's tokens: what the other run's interventions change there.
        self.controller.divergence(base.token_ids, normalize_head_mask(base.started.head_mask), normalize_head_mask(other.started.head_mask),
                                   base.started.hidden_positions, other.started.hidden_positions)

    def _start_importance(self, scale: float) -> None:
        trace = self.current_trace
        if trace is None or trace.finished is None or not _same_model(self.controller.model, trace):
            self._update_analysis_availability()
            return
        # Measured on the run as it was made: its own head mask and hidden tokens stay in place.
        self.controller.head_importance(trace.token_ids, trace.n_prompt, scale, normalize_head_mask(trace.started.head_mask),
                                        trace.started.hidden_positions)

    def _show_head(self, layer: int, head: int) -> None:
        self.tabs.setCurrentWidget(self.inspector)
        self.inspector.tabs.setCurrentWidget(self.inspector.attention)
        self.inspector.attention.show_head(layer, head)

    def _on_analysing(self, analysing: bool) -> None:
        self.importance.set_running(analysing)
        self._update_buttons()

    # --- session files -------------------------------------------------------------------------

    def _on_session_replaced(self) -> None:
        session = self.keeper.session
        self.run_list.set_session(session)
        self._compared = (None, None)
        self.compare.set_runs(None, None)
        self._refresh_compare_choices()
        self.show_run(len(session.runs) - 1 if session.runs else None)
        trace = self.current_trace
        if trace is not None:
            self.prompt.set_text(trace.started.prompt)
            self.inspector.set_head_mask(normalize_head_mask(trace.started.head_mask))
        self._update_title()

    def _may_discard(self) -> bool:
        """True when the open session may be replaced or closed: saved, or the person chose."""
        if not self.keeper.modified or not self.keeper.session.runs:
            return True
        answer = session_dialogs.ask_unsaved(self, self.keeper.display_name())
        if answer == "save":
            return self.save_session()
        return answer == "discard"

    def new_session(self) -> None:
        if self.controller.is_running or not self._may_discard():
            return
        self.keeper.new()

    def open_session(self) -> None:
        if self.controller.is_running or not self._may_discard():
            return
        folder = str(self.keeper.path.parent) if self.keeper.path is not None else ""
        path = session_dialogs.choose_open_path(self, folder)
        if path is not None:
            self.keeper.open(path)

    def add_runs_from_file(self, path: Path | None = None) -> bool:
        """Bring another file's runs into this session, e.g. to compare them in the Compare tab."""
        if self.controller.is_running:
            return False
        path = path or session_dialogs.choose_open_path(self, str(self.keeper.path.parent) if self.keeper.path else "")
        if path is None or not (added := self.keeper.add_from(path)):
            return False
        self.run_list.refresh()
        self._refresh_compare_choices()
        self.show_run(added[-1])
        self.show_notice(f"Added {len(added)} run{'s' if len(added) != 1 else ''} from {Path(path).name}: "
                         "compare them with this session's runs in the Compare tab.")
        return True

    def open_session_file(self, path: Path) -> bool:
        """Open a session file (command line, drag and drop, recent files); the open session stays on failure."""
        if self.controller.is_running:
            self.show_error(f"Cannot open {Path(path).name} while a run is generating: stop it first.")
            return False
        if not self._may_discard():
            return False
        return self.keeper.open(path)

    def save_session(self) -> bool:
        if self.keeper.path is None:
            return self.save_session_as()
        if not self._can_save():
            return False
        return self.keeper.save()

    def save_session_as(self) -> bool:
        if not self._can_save():
            return False
        suggested = str(self.keeper.path or Path.home() / f"session{SESSION_SUFFIX}")
        path = session_dialogs.choose_save_path(self, suggested)
        return path is not None and self.keeper.save(path)

    def _can_save(self) -> bool:
        if self.controller.is_running:
            self.show_error("Wait for the run to finish (or stop it) before saving.")
            return False
        return True

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.keeper.recent()
        for path in recent:
            a = self.recent_menu.addAction(path.name)
            a.setToolTip(str(path))
            a.triggered.connect(lambda _=False, p=path: self.open_session_file(p))
        self.recent_menu.setEnabled(bool(recent))

    def export(self, fmt: str) -> None:
        if not self.keeper.session.runs or self.controller.is_running:
            return
        stem = self.keeper.path.stem if self.keeper.path is not None else "session"
        suggested = str((self.keeper.path.parent if self.keeper.path else Path.home()) / f"{stem}.{fmt}")
        path = session_dialogs.choose_export_path(self, fmt, suggested)
        if path is None:
            return
        try:
            write_export(self.keeper.session, fmt, path, run=self._current)
        except (SessionFileError, EngineError, OSError) as exc:
            self.show_error(str(exc))
            return
        self.statusBar().showMessage(f"Exported to {path}", 5000)

    def export_plot(self) -> None:
        """The plot in view (inspector, compare or head importance) as a PNG, as it appears on screen."""
        widget = self.tabs.currentWidget()
        if widget is self.inspector:
            widget = self.inspector.tabs.currentWidget()
        path = session_dialogs.choose_export_path(self, "png", str(Path.home() / "plot.png"))
        if path is None:
            return
        if not widget.grab().save(str(path), "PNG"):
            self.show_error(f"Could not write {path}.")
            return
        self.statusBar().showMessage(f"Saved {path}", 5000)

    def check_recovery(self) -> None:
        """Offer to restore what a crashed session left unsaved."""
        found = self.keeper.recoverable()
        if not found:
            return
        latest = max(found, key=lambda r: r.saved_at)
        name = latest.source.name if latest.source is not None else "an untitled session"
        when = latest.saved_at.strftime("%d %b %H:%M")
        runs = f"{latest.n_runs} run" + ("s" if latest.n_runs != 1 else "")
        self.banner.show_message(
            f"OPT Desktop did not close properly: {runs} of {name}, autosaved {when}, can be restored.", "warning",
            actions=[("Restore", lambda: self.keeper.restore(latest)),
                     ("Discard", lambda: [self.keeper.autosave.forget(r) for r in found])])

    # --- drag and drop -------------------------------------------------------------------------

    @staticmethod
    def _dropped_session(event) -> Path | None:
        urls = event.mimeData().urls() if event.mimeData().hasUrls() else []
        paths = [Path(u.toLocalFile()) for u in urls if u.isLocalFile()]
        return paths[0] if len(paths) == 1 and paths[0].suffix == SESSION_SUFFIX else None

    def dragEnterEvent(self, event: QDragEnterEvent) -> None:  # noqa: N802
        if self._dropped_session(event) is not None:
            event.acceptProposedAction()
        else:
            event.ignore()

    def dropEvent(self, event: QDropEvent) -> None:  # noqa: N802
        path = self._dropped_session(event)
        if path is not None:
            event.acceptProposedAction()
            self.open_session_file(path)

    # --- closing -------------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:
        if not self._may_discard():
            event.ignore()
            return
        self.keeper.close_cleanly()
        self.controller.shutdown(timeout=1.5)
        self.closed.emit()
        super().closeEvent(event)
