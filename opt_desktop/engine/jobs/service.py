"""The engine's front door: one worker thread owns the model; callers hand it jobs.

No torch at import time: the heavy modules are imported on the worker, so a window can appear
before torch has loaded. The CLI, the tests and the GUI all drive the engine through this class.

Every piece of work is a `Job` (jobs.py) made from a plain request: `submit(request)` queues it
and returns it at once. Jobs run one at a time in the order they came, except small ones (the
logit lens of one position), which run between two decode steps of a generation so a token's
lens is live rather than queued behind the whole run. `stop()` stops the job that is running;
`job.stop()` stops one job, queued or running.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, Sequence

from ..messages.errors import NoModelError
from ..messages.events import Event, Finished, LensResult, LoadProgress, ModelInfo
from ..messages.interventions_spec import check_head_mask, normalize_head_mask
from .dispatch import ANALYSES, job_kind, register_analysis
from .job import Job
from ..running.memory import return_freed_memory_promptly
from ..messages.requests import (
    AttributionRequest,
    DivergenceRequest,
    DownloadRequest,
    HeadImportanceRequest,
    LensRequest,
    LensTableRequest,
    PatchingRequest,
    ProbeRequest,
    RoutesRequest,
)
from ..messages.results import Attribution, Divergence, Downloaded, HeadImportance, LensTable, Patching, Routes
from ..messages.settings import GenerationRequest, HeadScale, LoadRequest

log = logging.getLogger(__name__)

EmitFn = Callable[[Event], None]
ProgressFn = Callable[[LoadProgress], None]

THREAD_NAME = "opt-engine-worker"

def _lens(loaded, request: LensRequest, job: Job) -> LensResult:
    from ..running.lens import logit_lens

    return logit_lens(loaded, request.residual_rows, request.target_id, position=request.position,
                      top_k=request.top_k)


def _divergence(loaded, r: DivergenceRequest, job: Job) -> Divergence:
    from ..running.scoring import divergence

    return divergence(loaded, r.token_ids, r.base_mask, r.other_mask, r.base_hidden, r.other_hidden, stop=job.stop_event)


def _head_importance(loaded, r: HeadImportanceRequest, job: Job) -> HeadImportance:
    from ..running.scoring import head_importance

    return head_importance(loaded, r.token_ids, r.n_prompt, r.scale, progress=job.progress, stop=job.stop_event,
                           base_mask=r.base_mask, hidden=r.hidden)


def _attribution(loaded, r: AttributionRequest, job: Job) -> Attribution:
    from ..analyses.attribution import attribute

    return attribute(loaded, r.token_ids, r.target_id, method=r.method, steps=r.steps,
                     alternative_id=r.alternative_id, head_mask=r.head_mask, hidden=r.hidden,
                     progress=job.progress, stop=job.stop_event)


def _patching(loaded, r: PatchingRequest, job: Job) -> Patching:
    from ..analyses.patching import patch
    from ..running.text import one_token

    target = r.target_id if r.target_id is not None else one_token(loaded.tokenizer, r.target_text or "", "target")
    return patch(loaded, r.clean_ids, r.corrupt_ids, target, heads=r.heads, head_mask=r.head_mask,
                 hidden=r.hidden, progress=job.progress, stop=job.stop_event)


def _lens_table(loaded, r: LensTableRequest, job: Job) -> LensTable:
    from ..analyses.lens_table import lens_table

    return lens_table(loaded, r.token_ids, hidden_positions=r.hidden_positions, mask_schedule=r.mask_schedule,
                      progress=job.progress, stop=job.stop_event)


def _routes(loaded, r: RoutesRequest, job: Job) -> Routes:
    from ..analyses.routes import routes

    return routes(loaded, r.token_ids, hidden_positions=r.hidden_positions, mask_schedule=r.mask_schedule,
                  dense=r.dense, progress=job.progress, stop=job.stop_event)


def _probe(loaded, request: ProbeRequest, job: Job):
    from ..loading.precision import capabilities

    return capabilities(probe=True)


def _download(loaded, request: DownloadRequest, job: Job) -> Downloaded:
    from ..loading.hub_download import download

    return download(request, job)


register_analysis(LensRequest, "lens", "The logit lens", _lens)
register_analysis(DivergenceRequest, "divergence", "The comparison", _divergence)
register_analysis(HeadImportanceRequest, "head_importance", "Head importance", _head_importance)
register_analysis(ProbeRequest, "probe", "Probing this machine", _probe, needs_model=False)
register_analysis(AttributionRequest, "attribution", "Attribution", _attribution, result_types=(Attribution,))
register_analysis(PatchingRequest, "patching", "Activation patching", _patching, result_types=(Patching,))
register_analysis(LensTableRequest, "lens_table", "The logit lens of the run", _lens_table, result_types=(LensTable,))
register_analysis(RoutesRequest, "routes", "The information-flow routes", _routes, result_types=(Routes,))
# Downloads run where the engine runs (its machine's Hub cache), with the same stop and progress as any job.
register_analysis(DownloadRequest, "download", "The download", _download, needs_model=False,
                  result_types=(Downloaded,))

_BETWEEN_STEPS = {LensRequest}  # small enough to run between two decode steps of a generation


class EngineService:
    def __init__(self) -> None:
        return_freed_memory_promptly()
        self._loaded = None  # engine.running.loaded.LoadedModel, touched only on the worker
        self._info: ModelInfo | None = None
        self._tokenizer = None
        self._closed = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._running: Job | None = None
        # Small jobs that arrive while a generation holds the worker; it runs them between its steps.
        self._between: queue.SimpleQueue = queue.SimpleQueue()
        self._generating = False
        self._mask_change: tuple[HeadScale, ...] | None = None  # set during a run, taken between its steps
        self._thread = threading.Thread(target=self._work, name=THREAD_NAME, daemon=True)
        self._thread.start()

    # --- state readable from any thread ------------------------------------------------------

    @property
    def info(self) -> ModelInfo | None:
        return self._info

    @property
    def tokenizer(self):
        """The current model's (fast, thread-safe) tokenizer, for token counts on the caller's thread."""
        return self._tokenizer

    @property
    def running(self) -> Job | None:
        """The job the worker is running now, if any."""
        return self._running

    @property
    def closed(self) -> bool:
        return self._closed

    def count_tokens(self, text: str) -> int | None:
        """Prompt length in tokens, the leading `</s>` included; None before a model is loaded."""
        tok = self._tokenizer
        return None if tok is None else len(tok(text)["input_ids"])

    def count_tokens_later(self, text: str) -> Future:
        """count_tokens as a future, as an engine in another process answers it."""
        future: Future = Future()
        try:
            future.set_result(self.count_tokens(text))
        except Exception as exc:  # noqa: BLE001 - a count is a hint
            future.set_exception(exc)
        return future

    # --- jobs ----------------------------------------------------------------------------------

    def submit(self, request, *, origin: Any = None, on_event: Callable[[Any], None] | None = None,
               stop: threading.Event | None = None, on_start: Callable[[], None] | None = None) -> Job:
        """Queue the job for `request` and return it (the work starts when the worker is free).

        `on_event` gets the job's events on the worker thread: LoadProgress for a load; Started,
        TokenGenerated, PromptScored, TokenGenerated, ... and always a final Finished for a generation
        (events.py has the order); JobProgress
        for the analyses that report it.
        """
        job = Job(job_kind(request), request, origin=origin, on_event=on_event, stop=stop,
                  between_steps=type(request) in _BETWEEN_STEPS)
        job.on_start = on_start
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine has been shut down")
            if job.between_steps and self._generating:
                self._between.put(job)
            else:
                self._queue.put(job)
        return job

    def stop(self) -> None:
        """Stop the job that is running now (queued jobs stay queued: stop those with `job.stop()`)."""
        job = self._running
        if job is not None:
            job.stop()

    def set_head_mask(self, mask: Sequence[HeadScale]) -> None:
        """Change the head mask of the running generation, from its next token on (any thread).

        The run reports the change as HeadMaskChanged. With no run going this does nothing: the
        next request carries its own mask. A head the model lacks raises SettingsError here.
        """
        mask = normalize_head_mask(mask)
        info = self._info
        if info is not None:
            check_head_mask(mask, info.n_layers, info.n_heads, info.label)
        with self._lock:
            if self._generating:
                self._mask_change = mask

    # --- the same jobs as futures, for the CLI, tests and benchmarks ----------------------------

    def load(self, request: LoadRequest, progress: ProgressFn | None = None) -> Future[ModelInfo]:
        """Load a model. Fails with ModelLoadError; a source that cannot be found or is not OPT fails
        before the current model is released, so the current model stays usable."""
        return self.submit(request, on_event=progress).future

    def generate(self, request: GenerationRequest, emit: EmitFn,
                 stop: threading.Event | None = None) -> Future[Finished]:
        """Run one generation, calling `emit` (on the worker thread) for each event; `stop` (or
        `self.stop()`) ends it before the next forward step, or the next decoder layer, as "cancelled"."""
        return self.submit(request, on_event=emit, stop=stop).future

    def divergence(self, token_ids: Sequence[int], base_mask: Sequence[HeadScale] = (),
                   other_mask: Sequence[HeadScale] = (), base_hidden: Sequence[int] = (),
                   other_hidden: Sequence[int] = ()) -> Future[Divergence]:
        return self.submit(DivergenceRequest(tuple(token_ids), tuple(base_mask), tuple(other_mask),
                                             tuple(base_hidden), tuple(other_hidden))).future

    def head_importance(self, token_ids: Sequence[int], n_prompt: int, scale: float = 0.0,
                        progress: Callable[[int, int], None] | None = None,
                        stop: threading.Event | None = None, base_mask: Sequence[HeadScale] = (),
                        hidden: Sequence[int] = ()) -> Future[HeadImportance]:
        """`progress(done, total)` is called on the worker after each head; a stop ends the job
        between heads with `completed` False."""
        on_event = None if progress is None else (lambda p: progress(p.done, p.total))
        request = HeadImportanceRequest(tuple(token_ids), n_prompt, scale, tuple(base_mask), tuple(hidden))
        return self.submit(request, on_event=on_event, stop=stop).future

    def logit_lens(self, residual_rows, target_id: int | None, position: int = -1,
                   top_k: int = 5) -> Future[LensResult]:
        return self.submit(LensRequest(residual_rows, target_id, position, top_k)).future

    def call(self, fn: Callable, *args) -> Future:
        """Run `fn(loaded_model, *args)` on the worker (tests, benchmarks, the CLI's `info`)."""
        future: Future = Future()

        def run() -> None:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(self._loaded, *args))
                except BaseException as exc:
                    future.set_exception(exc)

        self._queue.put(run)
        return future

    # --- the worker ------------------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            if callable(job) and not isinstance(job, Job):
                job()
                continue
            self._running = job
            try:
                self._run(job)
            finally:
                self._running = None

    def _run(self, job: Job) -> None:
        request = job.request
        if job.kind == "load":
            job.run(lambda j: self._load(request, j), "Loading the model")
        elif job.kind == "generate":
            job.run(lambda j: self._generate(request, j), "Generation")
        else:
            a = ANALYSES[type(request)]
            job.run(lambda j: a.fn(self._require_model() if a.needs_model else self._loaded, request, j), a.doing)

    def _require_model(self):
        if self._loaded is None:
            raise NoModelError("No model is loaded yet: load one first.")
        return self._loaded

    def _load(self, request: LoadRequest, job: Job) -> ModelInfo:
        from ..loading.loader import load_model, locate, resolve_device

        resolve_device(request.device)
        folder = locate(request, job.emit, job.stop_event)  # a bad source fails here, keeping the current model
        self._loaded = None  # let the old weights go before the new ones arrive
        self._info = None
        self._tokenizer = None
        loaded = load_model(request, progress=job.emit, stop=job.stop_event, folder=folder)
        self._loaded = loaded
        self._tokenizer = loaded.tokenizer
        self._info = loaded.info
        return loaded.info

    def _generate(self, request: GenerationRequest, job: Job) -> Finished:
        loaded = self._require_model()
        from ..running.generate import run_generation

        with self._lock:
            self._generating = True
            self._mask_change = None
        try:
            return run_generation(loaded, request, job.emit, job.stop_event, between_steps=self._run_between_steps,
                                  mask_change=self._take_mask_change)
        finally:
            with self._lock:
                self._generating = False
            self._run_between_steps()  # anything queued as the run ended

    def _take_mask_change(self) -> tuple[HeadScale, ...] | None:
        with self._lock:
            mask, self._mask_change = self._mask_change, None
        return mask

    def _run_between_steps(self) -> None:
        """On the worker, between decode steps: run the small jobs that arrived during the run."""
        while True:
            try:
                job = self._between.get_nowait()
            except queue.Empty:
                return
            self._run(job)

    # --- closing -----------------------------------------------------------------------------------

    def shutdown(self, wait: bool = True) -> None:
        """Stop the running job, end the queued ones and (optionally) wait for the worker to end."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        self.stop()
        for q in (self._queue, self._between):
            while True:
                try:
                    job = q.get_nowait()
                except queue.Empty:
                    break
                if isinstance(job, Job):
                    job.abandon()
        self._queue.put(None)
        if wait:
            self._thread.join()

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` s for the worker thread to end (after shutdown); True if it has."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """The engine's worker thread(s), for tests that check nothing is left running."""
        return (self._thread,)
