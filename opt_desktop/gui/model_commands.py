"""Loading models: the model bar's Load, the model manager, a folder, the demo, the start-up load.

A start-up load of the remembered model falls back to the built-in demo when it fails (offline,
a moved folder). Each load ends with at most one message, which says one true thing: which model
is loaded now, or that none is, and why; it stays until the person dismisses it or the next load
replaces it. A load the person stopped ends as stopped: no fallback, no traceback.
"""

from __future__ import annotations

from PySide6.QtCore import QObject
from PySide6.QtWidgets import QFileDialog

from ..engine import DEMO_SOURCE, LoadRequest, ModelInfo
from ..engine.jobs.job import Job, JobEnd
from ..engine.messages.errors import HubUnreachableError
from ..engine.messages.events import LoadProgress
from ..engine.messages.requests import ProbeRequest
from .heap import freeze_long_lived

MODEL_MESSAGE = "model"  # the banner's key for what the last load did: each load's message replaces the last
DEMO_NOTE = "a tiny model trained on Python's documentation, not OPT weights"


def _sentence(text: str) -> str:
    """`text` ending with one full stop, to be followed by another sentence."""
    return text.rstrip().rstrip(".") + "."


def _error(job: Job) -> BaseException | None:
    """The exception a job that failed ended with (its kind crosses from an engine process too)."""
    future = job.future
    return future.exception() if future.done() and not future.cancelled() else None


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
        return self._load(request, fallback_to_demo)

    def _load(self, request: LoadRequest, fallback_to_demo: bool, failed: JobEnd | None = None) -> Job:
        """`failed`: the failure of the load this one (the demo) stands in for."""
        self.v.model_bar.set_request(request)
        self.v.model_bar.set_loading(True)
        job = self.controller.load(request, on_events=self._on_events)
        self.controller.spawn(self._follow(job, request, fallback_to_demo, failed))
        if self.capabilities is None and not self._probing:
            self.probe()  # after the load: nothing imports torch before the first model is asked for
        return job

    def _on_events(self, events: list) -> None:
        progress = [e for e in events if isinstance(e, LoadProgress)]
        if progress:
            self.v.model_bar.set_progress(progress[-1])

    async def _follow(self, job: Job, request: LoadRequest, fallback_to_demo: bool, failed: JobEnd | None) -> None:
        end = await self.controller.wait(job)
        if self.controller.closed:
            return
        if not self.controller.is_loading:
            self.v.model_bar.set_loading(False)
        if end.reason == "done":
            # The last model that loaded is the one the next start begins with (a fallback demo too:
            # trying an unreachable model at every start would only bring its message back).
            self.state.remember(request)
            self.state.save()
            self.v.model_bar.set_recent(self.state.recent_sources)
            self.v.banner.dismiss(MODEL_MESSAGE)  # whatever it said about an earlier load is over
            if failed is not None:
                self.v.banner.show_message(f"{_sentence(failed.message)} Loaded the built-in demo model instead "
                                           f"({DEMO_NOTE}).", "warning", details=failed.details, key=MODEL_MESSAGE)
            return
        # Runs waiting for this model cannot start on it.
        for queued in self.controller.jobs("generate"):
            if queued.state == "queued":
                queued.stop()
        if end.reason == "cancelled":  # the person stopped it: no fallback, no traceback
            self.v.banner.show_notice(f"Loading {request.source} was stopped; {self._what_is_loaded()}",
                                      key=MODEL_MESSAGE)
        elif fallback_to_demo and failed is None and request.source != DEMO_SOURCE:
            # Nothing is said yet: the message says what is loaded once the demo has loaded, or not.
            self._load(LoadRequest(source=DEMO_SOURCE, dtype="float32", device="cpu"), False, failed=end)
        elif failed is not None:
            self.v.banner.show_message(
                f"{_sentence(failed.message)} The built-in demo model could not be loaded either: "
                f"{_sentence(end.message)} No model is loaded: choose one in the bar above and press Load.",
                "error", details="\n".join(d for d in (failed.details, end.details) if d), key=MODEL_MESSAGE)
        elif isinstance(_error(job), HubUnreachableError):
            self.v.banner.show_message(f"{_sentence(end.message)} The built-in demo model needs no network: "
                                       "File ▸ Load the demo model.", "error",
                                       actions=[("Load the demo model", self.load_demo)], details=end.details,
                                       key=MODEL_MESSAGE)
        else:
            text = end.message if self.controller.model is not None else f"{_sentence(end.message)} No model is loaded."
            self.v.banner.show_error(text, end.details, key=MODEL_MESSAGE)

    def _what_is_loaded(self) -> str:
        info = self.controller.model
        return f"{info.label} is still loaded." if info is not None else "no model is loaded."

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

        dialog = ModelManager(self.v.window, controller=self.controller, request=self.v.model_bar.request())
        dialog.load_requested.connect(self.load)
        dialog.open()

    def open_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self.v.window, "Choose a model folder (with config.json)")
        if folder:
            self.load(LoadRequest(source=folder))

    def load_demo(self) -> None:
        self.load(LoadRequest(source=DEMO_SOURCE))
