"""The main window: wires the widgets to the controller. Layout and wiring only; no model code."""

from __future__ import annotations

import time

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent, QKeySequence
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
    GenerationRequest,
    GenerationSettings,
    InspectSettings,
    LoadRequest,
    ModelInfo,
    SettingsError,
)
from ..engine.text import token_piece
from ..presets import PresetStore
from .app_state import AppState
from .controller import Controller
from .widgets.inspector import Inspector
from .widgets.message_banner import MessageBanner
from .widgets.model_bar import ModelBar
from .widgets.output_view import OutputView
from .widgets.prompt_editor import PromptEditor
from .widgets.run_status import RunStatus
from .widgets.settings_panel import SettingsPanel

APP_NAME = "OPT Desktop"
# The inspector's plots cost 15-50 ms a repaint: while tokens stream it follows once a second, the output at 30 Hz.
INSPECTOR_REFRESH_S = 1.0


class MainWindow(QMainWindow):
    closed = Signal()

    def __init__(self, controller: Controller | None = None, state: AppState | None = None,
                 presets: PresetStore | None = None):
        super().__init__()
        self.controller = controller or Controller(parent=self)
        self.state = state or AppState.load()
        self._auto_load: LoadRequest | None = None  # a start-up load, which falls back to the demo
        self._keep_banner = False
        self._inspector_refreshed = 0.0
        self.setWindowTitle(APP_NAME)
        self.resize(1320, 860)
        self._build(presets)
        self._build_actions()
        self._connect()
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
        self.settings_panel = SettingsPanel(presets)

        self.generate_button = QPushButton("Generate")
        self.generate_button.setToolTip("Generate from the prompt (Ctrl+Enter)")
        self.generate_button.setDefault(True)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Stop before the next token (Esc)")
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.setToolTip("Run the last prompt again with the current settings (Ctrl+R)")
        self.continue_button = QPushButton("Continue")
        self.continue_button.setToolTip("Append more tokens to the current output (Ctrl+Shift+Enter)")
        buttons = QHBoxLayout()
        for b in (self.generate_button, self.stop_button, self.regenerate_button, self.continue_button):
            buttons.addWidget(b)
        buttons.addStretch(1)

        self.tabs = QTabWidget()
        self.tabs.addTab(self.output, "Output")
        self.tabs.addTab(self.inspector, "Inspector")

        top = QWidget()
        top_layout = QVBoxLayout(top)
        top_layout.setContentsMargins(0, 0, 0, 0)
        top_layout.addWidget(self.prompt, 1)
        top_layout.addLayout(buttons)
        left = QSplitter(Qt.Orientation.Vertical)
        left.addWidget(top)
        left.addWidget(self.tabs)
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

        self.generate_action = action("&Generate", self.generate, "Ctrl+Return", "Ctrl+Enter")
        self.stop_action = action("&Stop", self.stop, "Esc")
        self.regenerate_action = action("&Regenerate", self.regenerate, "Ctrl+R")
        self.continue_action = action("&Continue", self.continue_run, "Ctrl+Shift+Return", "Ctrl+Shift+Enter")
        self.open_action = action("Load model &folder…", self._open_folder, "Ctrl+O")
        self.demo_action = action("Load the &demo model", lambda: self.load_model(LoadRequest(source=DEMO_SOURCE)))
        self.quit_action = action("&Quit", self.close, "Ctrl+Q")
        self.show_prompt_action = action("Show &prompt tokens (shaded by surprisal)", self.output.set_show_prompt,
                                         checkable=True)
        self.keep_rows_action = action("Keep full &attention rows (memory grows with T²)", self._keep_rows,
                                       checkable=True)
        self.keep_rows_action.setChecked(self.state.keep_attention_rows)
        self.output_tab_action = action("&Output", lambda: self.tabs.setCurrentIndex(0), "Ctrl+1")
        self.inspector_tab_action = action("&Inspector", lambda: self.tabs.setCurrentIndex(1), "Ctrl+2")

        menu = self.menuBar()
        file_menu = menu.addMenu("&File")
        for a in (self.open_action, self.demo_action, None, self.quit_action):
            file_menu.addSeparator() if a is None else file_menu.addAction(a)
        run_menu = menu.addMenu("&Run")
        for a in (self.generate_action, self.stop_action, self.regenerate_action, self.continue_action):
            run_menu.addAction(a)
        view_menu = menu.addMenu("&View")
        for a in (self.output_tab_action, self.inspector_tab_action, None, self.show_prompt_action,
                  self.keep_rows_action):
            view_menu.addSeparator() if a is None else view_menu.addAction(a)

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
        c.run_started.connect(self._on_run_started)
        c.run_updated.connect(self._on_run_updated)
        c.run_finished.connect(self._on_run_finished)
        c.run_failed.connect(self.show_error)
        c.lens_ready.connect(self._on_lens_ready)
        c.lens_failed.connect(lambda pos, reason: self.inspector.set_lens_unavailable(reason))
        self.model_bar.load_requested.connect(self.load_model)
        self.settings_panel.error.connect(self.show_error)
        self.output.token_clicked.connect(self._on_token_clicked)
        self.inspector.position_selected.connect(self.output.set_selected)
        self.inspector.lens_requested.connect(self.controller.lens)
        self.tabs.currentChanged.connect(lambda _: self.inspector.refresh())

    # --- helpers -------------------------------------------------------------------------------

    def _piece(self, token_id: int) -> str:
        tok = self.controller.engine.tokenizer
        return f"#{token_id}" if tok is None else token_piece(tok, token_id)

    def show_error(self, message: str) -> None:
        self.banner.show_message(message, "error")

    def show_notice(self, message: str) -> None:
        self.banner.show_message(message, "info")

    def _update_buttons(self) -> None:
        c = self.controller
        idle = not c.is_loading and not c.is_running
        ready = idle and c.model is not None
        has_run = c.trace is not None and c.trace.finished is not None
        for w in (self.generate_button, self.generate_action):
            w.setEnabled(idle)  # with no model, Generate explains what to do
        for w in (self.regenerate_button, self.regenerate_action):
            w.setEnabled(ready and c.last_request is not None)
        for w in (self.continue_button, self.continue_action):
            w.setEnabled(ready and has_run)
        for w in (self.stop_button, self.stop_action):
            w.setEnabled(c.is_running)

    def _keep_rows(self, on: bool) -> None:
        self.state.keep_attention_rows = bool(on)
        self.state.save()

    # --- model ---------------------------------------------------------------------------------

    def load_model(self, request: LoadRequest, auto: bool = False) -> None:
        """Load in the background; an automatic (start-up) load falls back to the demo if it fails."""
        self._auto_load = request if auto else None
        self.model_bar.set_request(request)
        self.controller.load(request)

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
        self.setWindowTitle(f"{info.label} — {APP_NAME}")
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

    def _on_load_failed(self, message: str) -> None:
        auto = self._auto_load
        self._auto_load = None
        self.model_bar.set_model(self.controller.model)
        if auto is not None and auto.source != DEMO_SOURCE:
            self.banner.show_message(f"{message} Loaded the built-in demo model (random weights) instead.", "warning")
            self._keep_banner = True
            self.controller.load(LoadRequest(source=DEMO_SOURCE, dtype=auto.dtype, device="cpu"))
            self.model_bar.set_request(LoadRequest(source=DEMO_SOURCE))
            return
        self.show_error(message)
        self._update_buttons()

    # --- runs ----------------------------------------------------------------------------------

    def _inspect(self) -> InspectSettings:
        return InspectSettings(keep_attention_rows=self.keep_rows_action.isChecked())

    def _start(self, request: GenerationRequest) -> bool:
        if self.controller.model is None:
            self.show_error("No model is loaded yet: choose one in the bar above and press Load.")
            return False
        if self.controller.generate(request) is None:
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

    def generate(self) -> None:
        if not self.generate_button.isEnabled() or (settings := self._settings("generate")) is None:
            return
        self._start(GenerationRequest(prompt=self.prompt.text(), settings=settings, inspect=self._inspect()))

    def regenerate(self) -> None:
        last = self.controller.last_request
        if last is None or not self.regenerate_button.isEnabled() or (settings := self._settings("regenerate")) is None:
            return
        self._start(last.replace(settings=settings, inspect=self._inspect()))

    def continue_run(self) -> None:
        trace = self.controller.trace
        if trace is None or trace.finished is None or not self.continue_button.isEnabled():
            return
        if (settings := self._settings("continue")) is None:
            return
        # The earlier prompt and output become the new prompt, token for token (no re-tokenising).
        request = GenerationRequest(prompt=trace.started.prompt + trace.text, prompt_ids=tuple(trace.token_ids),
                                    settings=settings, inspect=self._inspect())
        if self._start(request):
            self.show_prompt_action.setChecked(True)  # so the earlier output stays in view, then grows
            self.output.set_show_prompt(True)

    def stop(self) -> None:
        self.controller.stop()

    def _on_run_started(self, trace) -> None:
        self.output.set_trace(trace)
        self.inspector.set_trace(trace)
        self._inspector_refreshed = time.monotonic()  # set_trace just redrew it
        self.run_status.clear()
        for notice in trace.notices:
            self.show_notice(notice)

    def _on_run_updated(self) -> None:
        trace = self.controller.trace
        self.output.refresh()
        now = time.monotonic()
        if self.tabs.currentWidget() is self.inspector and now - self._inspector_refreshed >= INSPECTOR_REFRESH_S:
            self._inspector_refreshed = now
            self.inspector.refresh()
        self.run_status.show_progress(trace)

    def _on_run_finished(self, finished) -> None:
        self.output.refresh()
        self.inspector.refresh()
        self.run_status.show_finished(finished)
        trace = self.controller.trace
        if trace is not None and trace.notices:
            self.show_notice(" ".join(trace.notices))
        self._update_buttons()

    def _on_token_clicked(self, position: int) -> None:
        self.inspector.refresh()
        self.inspector.select_position(position)
        self.tabs.setCurrentWidget(self.inspector)

    def _on_lens_ready(self, result) -> None:
        if result.position == self.inspector.selected_position():
            self.inspector.set_lens(result)

    # --- closing -------------------------------------------------------------------------------

    def closeEvent(self, event: QCloseEvent) -> None:
        self.controller.shutdown(timeout=1.5)
        self.closed.emit()
        super().closeEvent(event)
