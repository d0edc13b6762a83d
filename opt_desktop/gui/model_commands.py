"""Loading models: the model bar's Load, the model manager, a folder, the demo, the start-up load.

A start-up load of the remembered model falls back to the built-in demo when it fails (offline,
a moved folder), and says why in a message that stays until the person dismisses it.
"""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from ..engine import DEMO_SOURCE, LoadRequest, ModelInfo
from ..engine.messages.events import LoadProgress
from ..engine.jobs.job import Job
from ..engine.messages.requests import ProbeRequest
from .heap import freeze_long_lived


class ModelCommands(QObject):
    def __init__(self, controller, state, views, parent: QObject | None = None):
        """`views` has model_bar, banner, prompt, run_status and the window (as `window`) for dialogs."""
        super().__init__(parent)
        self.controller = controller
        self.state = state
        self.v = views
        self.capabilities = None  # precision.Capabilities once the engine has answered
        self._probing = False
        controller.model_changed.connect(self._on_model_changed)
        controller.engine_died.connect(self._on_engine_died)

    def probe(self) -> None:
        """Ask the engine what this machine runs (with torch, off the window's thread), so the
        model bar and the model manager stop guessing (float16 on a machine without a GPU...)."""
        self._probing = True
        self.controller.spawn(self._probe(self.controller.submit(ProbeRequest())))

    async def _probe(self, job: Job) -> None:
        end = await self.controller.wait(job)
        self._probing = False
        if end.reason == "done":
            self.capabilities = end.result
            self.v.model_bar.set_capabilities(end.result)

    def load(self, request: LoadRequest, fallback_to_demo: bool = False) -> Job:
        """Load in the background; with `fallback_to_demo` (the start-up load) a failure loads the demo."""
        self.v.model_bar.set_request(request)
        self.v.model_bar.set_loading(True)
        job = self.controller.load(request, on_events=self._on_events)
        self.controller.spawn(self._follow(job, request, fallback_to_demo))
        if self.capabilities is None and not self._probing:
            self.probe()  # after the load: nothing imports torch before the first model is asked for
        return job

    def _on_events(self, events: list) -> None:
        progress = [e for e in events if isinstance(e, LoadProgress)]
        if progress:
            self.v.model_bar.set_progress(progress[-1])

    async def _follow(self, job: Job, request: LoadRequest, fallback_to_demo: bool) -> None:
        end = await self.controller.wait(job)
        if self.controller.closed:
            return
        if not self.controller.is_loading:
            self.v.model_bar.set_loading(False)
        if end.reason == "done":
            if not fallback_to_demo or request.source != DEMO_SOURCE:
                # Remember what the person chose (not a fallback demo).
                self.state.remember(request)
                self.state.save()
                self.v.model_bar.set_recent(self.state.recent_sources)
            return
        # Runs waiting for this model cannot start on it.
        for queued in self.controller.jobs("generate"):
            if queued.state == "queued":
                queued.stop()
        if end.reason == "cancelled":
            self.v.banner.show_notice(f"Loading {request.source} was stopped.")
        elif fallback_to_demo and request.source != DEMO_SOURCE:
            self.v.banner.show_message(f"{end.message.rstrip('.')}. Loaded the built-in demo model instead (a tiny "
                                       "model trained on Python's documentation, not OPT weights).",
                                       "warning", details=end.details)
            self.load(LoadRequest(source=DEMO_SOURCE, dtype="float32", device="cpu"), fallback_to_demo=True)
        else:
            self.v.banner.show_error(end.message, end.details)

    def _on_engine_died(self, line: str) -> None:
        """The engine process ended: say so until dealt with, and offer a fresh one with the model again."""
        def restart() -> None:
            self.controller.restart_engine()
            self.load(self.v.model_bar.request())

        self.v.banner.show_message(line, "error", actions=[("Restart the engine", restart)], key="engine")

    def _on_model_changed(self, info: ModelInfo | None) -> None:
        self.v.model_bar.set_model(info)
        self.v.run_status.show_model(info)
        if info is not None:
            freeze_long_lived()  # what the load built (the tokenizer) lives as long as the model
            self.v.prompt.set_counter(self.controller.engine.count_tokens_later, info.context_length)

    # --- other ways to choose a model -------------------------------------------------------------

    def open_model_manager(self) -> None:
        from .widgets.model_manager import ModelManager  # scans the Hub cache: only when asked

        dialog = ModelManager(self.v.window, request=self.v.model_bar.request())
        dialog.load_requested.connect(self.load)
        dialog.open()

    def open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.v.window, "Choose a model folder (with config.json)")
        if folder:
            self.load(LoadRequest(source=folder))

    def load_demo(self) -> None:
        self.load(LoadRequest(source=DEMO_SOURCE))
