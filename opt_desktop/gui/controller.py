"""The GUI's side of the engine: jobs as asyncio tasks, events drained into a RunTrace at ~30 Hz.

The worker pushes events into a thread-safe queue and never touches the event loop per token; a
timer on the GUI thread drains the queue, so a fast model cannot flood Qt with wake-ups. Only job
completion hops threads (asyncio.wrap_future: one call_soon_threadsafe per job).
"""

from __future__ import annotations

import asyncio
import queue
import threading

from PySide6.QtCore import QObject, QTimer, Signal

from ..engine import EngineError, EngineService, Finished, GenerationRequest, LoadRequest, Notice, Started
from ..session import RunTrace

DRAIN_INTERVAL_MS = 33  # ~30 view updates a second


class Controller(QObject):
    loading_changed = Signal(bool)
    load_progress = Signal(object)  # LoadProgress
    model_loaded = Signal(object)  # ModelInfo
    load_failed = Signal(str)
    running_changed = Signal(bool)
    run_started = Signal(object)  # RunTrace
    run_updated = Signal()
    run_finished = Signal(object)  # Finished
    run_failed = Signal(str)
    lens_ready = Signal(object)  # LensResult
    lens_failed = Signal(int, str)
    analysing_changed = Signal(bool)  # head importance holds the worker
    importance_progress = Signal(int, int)  # heads done, heads in all
    importance_ready = Signal(object)  # HeadImportance (partial when stopped)
    importance_failed = Signal(str)
    divergence_ready = Signal(object)  # Divergence
    divergence_failed = Signal(str)

    def __init__(self, engine: EngineService | None = None, parent: QObject | None = None):
        super().__init__(parent)
        self.engine = engine or EngineService()
        self.trace: RunTrace | None = None
        self._events_started_run: RunTrace | None = None
        self.last_request: GenerationRequest | None = None
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._stop: threading.Event | None = None
        self._loading = False
        self._running = False
        self._analysing = False
        self._closed = False
        self._tasks: set[asyncio.Task] = set()
        self._timer = QTimer(self)
        self._timer.setInterval(DRAIN_INTERVAL_MS)
        self._timer.timeout.connect(self._drain)

    # --- state ---------------------------------------------------------------------------------

    @property
    def is_loading(self) -> bool:
        return self._loading

    @property
    def is_running(self) -> bool:
        return self._running

    @property
    def is_analysing(self) -> bool:
        return self._analysing

    @property
    def is_busy(self) -> bool:
        return self._loading or self._running or self._analysing

    @property
    def model(self):
        return self.engine.info

    # --- jobs ------------------------------------------------------------------------------------

    def load(self, request: LoadRequest) -> asyncio.Task:
        return self._spawn(self._load(request))

    def generate(self, request: GenerationRequest) -> asyncio.Task | None:
        if self.is_busy:
            return None
        return self._spawn(self._generate(request))

    def set_head_mask(self, mask) -> None:
        """During a run, the new mask applies from the next token; otherwise the next request carries it."""
        if self._running:
            self.engine.set_head_mask(tuple(mask))

    def divergence(self, token_ids, base_mask=(), other_mask=(), base_hidden=(), other_hidden=()) -> asyncio.Task:
        return self._spawn(self._divergence(tuple(token_ids), tuple(base_mask), tuple(other_mask),
                                            tuple(base_hidden), tuple(other_hidden)))

    def head_importance(self, token_ids, n_prompt: int, scale: float = 0.0, base_mask=(),
                        hidden=()) -> asyncio.Task | None:
        if self.is_busy:
            return None
        return self._spawn(self._head_importance(tuple(token_ids), n_prompt, scale, tuple(base_mask), tuple(hidden)))

    def lens(self, trace: RunTrace | None, position: int) -> asyncio.Task | None:
        return self._spawn(self._lens(trace, position))

    def stop(self) -> None:
        if self._stop is not None:
            self._stop.set()

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _load(self, request: LoadRequest) -> None:
        if self._running:
            self.stop()
        self._set_loading(True)
        loop = asyncio.get_running_loop()

        def progress(p):
            if not self._closed:
                loop.call_soon_threadsafe(self._emit_progress, p)

        try:
            info = await asyncio.wrap_future(self.engine.load(request, progress))
        except EngineError as exc:
            if not self._closed:
                self.load_failed.emit(str(exc))
            return
        except Exception as exc:  # the window must survive anything the loader throws
            if not self._closed:
                self.load_failed.emit(f"Could not load {request.source}: {exc}")
            return
        finally:
            if not self._closed:
                self._set_loading(False)
        if not self._closed:
            self.model_loaded.emit(info)

    def _emit_progress(self, p) -> None:
        if not self._closed:
            self.load_progress.emit(p)

    async def _generate(self, request: GenerationRequest) -> None:
        self.last_request = request
        self._stop = threading.Event()
        self._events = queue.SimpleQueue()
        self._events_started_run = None  # the trace this request's Started made, if it got that far
        self._set_running(True)
        self._timer.start()
        try:
            finished = await asyncio.wrap_future(self.engine.generate(request, self._events.put, self._stop))
        except Exception as exc:
            message = str(exc) if isinstance(exc, EngineError) else f"Generation failed: {exc}"
            self._drain()
            self._end_failed_run(message)
            if not self._closed:
                self.run_failed.emit(message)
            return
        finally:
            self._timer.stop()
            if not self._closed:
                self._set_running(False)
        self._drain()
        if not self._closed:
            self.run_finished.emit(finished)

    def _end_failed_run(self, message: str) -> None:
        """A run that broke mid-way keeps what it produced, marked as stopped, so it can still be saved."""
        trace = self.trace
        if trace is None or trace.finished is not None or self._events_started_run is not trace:
            return
        trace.apply(Notice(f"The run ended early: {message}"))
        elapsed = trace.elapsed[-1] if trace.elapsed else 0.0
        trace.apply(Finished(reason="cancelled", text=trace.text, token_ids=tuple(trace.generated_ids),
                             n_tokens=trace.n_generated, elapsed_s=elapsed, time_to_first_token_s=None,
                             tokens_per_s=None))

    async def _lens(self, trace: RunTrace | None, position: int) -> None:
        if trace is None:
            return
        rows = trace.residual_rows(position)
        if rows is None:
            reason = ("the last token was never fed to the model" if position == trace.length - 1
                      else "residual rows were not kept for this run")
            self.lens_failed.emit(position, reason)
            return
        try:
            result = await asyncio.wrap_future(self.engine.logit_lens(rows, trace.next_token(position), position))
        except Exception as exc:
            if not self._closed:
                self.lens_failed.emit(position, str(exc))
            return
        if not self._closed:
            self.lens_ready.emit(result)

    async def _divergence(self, token_ids, base_mask, other_mask, base_hidden, other_hidden) -> None:
        try:
            result = await asyncio.wrap_future(self.engine.divergence(
                token_ids, base_mask=base_mask, other_mask=other_mask, base_hidden=base_hidden,
                other_hidden=other_hidden))
        except Exception as exc:
            if not self._closed:
                self.divergence_failed.emit(str(exc))
            return
        if not self._closed:
            self.divergence_ready.emit(result)

    async def _head_importance(self, token_ids, n_prompt: int, scale: float, base_mask, hidden) -> None:
        loop = asyncio.get_running_loop()
        self._stop = threading.Event()
        self._set_analysing(True)

        def progress(done: int, total: int) -> None:
            if not self._closed:
                loop.call_soon_threadsafe(self._emit_importance_progress, done, total)

        try:
            result = await asyncio.wrap_future(self.engine.head_importance(
                token_ids, n_prompt, scale=scale, progress=progress, stop=self._stop, base_mask=base_mask,
                hidden=hidden))
        except Exception as exc:
            if not self._closed:
                self.importance_failed.emit(str(exc))
            return
        finally:
            if not self._closed:
                self._set_analysing(False)
        if not self._closed:
            self.importance_ready.emit(result)

    def _emit_importance_progress(self, done: int, total: int) -> None:
        if not self._closed:
            self.importance_progress.emit(done, total)

    def _drain(self) -> None:
        changed = False
        while True:
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                break
            if isinstance(event, Started):
                self.trace = self._events_started_run = RunTrace(event)
                self.run_started.emit(self.trace)
            elif self.trace is not None:
                self.trace.apply(event)
                changed = True
        if changed and not self._closed:
            self.run_updated.emit()

    def _set_loading(self, value: bool) -> None:
        self._loading = value
        self.loading_changed.emit(value)

    def _set_analysing(self, value: bool) -> None:
        self._analysing = value
        self.analysing_changed.emit(value)

    def _set_running(self, value: bool) -> None:
        self._running = value
        self.running_changed.emit(value)

    # --- closing ---------------------------------------------------------------------------------

    def shutdown(self, timeout: float = 1.5) -> bool:
        """Stop the worker's job and wait up to `timeout` s for the worker thread; True if it ended."""
        self._closed = True
        self._timer.stop()
        self.stop()
        self.engine.shutdown(wait=False)
        ended = self.engine.join(timeout)
        for task in list(self._tasks):
            task.cancel()
        return ended

