"""The engine in this process: one worker thread owns the model; callers hand it jobs.

No torch at import time: the heavy modules are imported on the worker, so a window can appear
before torch has loaded. It is an `Engine` (engine.py), as the engine in another process is; the
CLI and the tests use it directly; the window uses it only with `--engine thread`.

Every piece of work is a `Job` (job.py) made from a plain request: `submit(request)` queues it
and returns it at once; the work receives the job itself (its stop, progress, events and partial
result). Jobs run one at a time in the order they came, except small ones (the logit lens of one
position), which run between two decode steps of a generation so a token's lens is live rather
than queued behind the whole run. `stop()` stops the job that is running; `job.stop()` stops one
job, queued or running.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable

from ..messages.errors import NoModelError
from ..messages.events import Finished, LensResult, ModelInfo
from ..messages.requests import (
    AttributionRequest,
    DivergenceRequest,
    DownloadRequest,
    HeadImportanceRequest,
    HeadRowsRequest,
    LensRequest,
    LensTableRequest,
    PatchingRequest,
    PiecesRequest,
    ProbeRequest,
    RoutesRequest,
    TokenizeRequest,
)
from ..messages.results import (
    Attribution,
    Divergence,
    Downloaded,
    HeadImportance,
    LensTable,
    Patching,
    Routes,
    Tokens,
)
from ..messages.settings import GenerationRequest, HeadScale, LoadRequest
from ..messages.threads import ThreadsRequest, ThreadsState
from ..running.memory import return_freed_memory_promptly
from ..running.threads import ThreadTuner, worker_tuner
from .dispatch import ANALYSES, job_kind, register_analysis
from .machine_jobs import MACHINE_REQUESTS
from .engine import LocalEngine
from .job import Job

log = logging.getLogger(__name__)

THREAD_NAME = "opt-engine-worker"
IDLE_TICK_S = 0.5  # while no job waits, the worker wakes this often to keep its reading of the CPU load recent
_CALL = "call"  # the kind of a job made by `call`: a function of the loaded model, in this process only


def _lens(loaded, request: LensRequest, job: Job) -> LensResult:
    from ..running.lens import logit_lens

    return logit_lens(loaded, request.residual_rows, request.target_id, position=request.position,
                      top_k=request.top_k)


def _divergence(loaded, r: DivergenceRequest, job: Job) -> Divergence:
    from ..running.scoring import divergence

    return divergence(loaded, r.token_ids, r.base_mask, r.other_mask, r.base_hidden, r.other_hidden, job=job)


def _head_importance(loaded, r: HeadImportanceRequest, job: Job) -> HeadImportance:
    from ..running.scoring import head_importance

    return head_importance(loaded, r.token_ids, r.n_prompt, r.scale, base_mask=r.base_mask, hidden=r.hidden, job=job)


def _attribution(loaded, r: AttributionRequest, job: Job) -> Attribution:
    from ..analyses.attribution import attribute

    return attribute(loaded, r.token_ids, r.target_id, method=r.method, steps=r.steps,
                     alternative_id=r.alternative_id, head_mask=r.head_mask, hidden=r.hidden, job=job)


def _patching(loaded, r: PatchingRequest, job: Job) -> Patching:
    from ..analyses.patching import patch
    from ..running.text import one_token

    target = r.target_id if r.target_id is not None else one_token(loaded.tokenizer, r.target_text or "", "target")
    return patch(loaded, r.clean_ids, r.corrupt_ids, target, heads=r.heads, head_mask=r.head_mask,
                 hidden=r.hidden, job=job)


def _lens_table(loaded, r: LensTableRequest, job: Job) -> LensTable:
    from ..analyses.lens_table import lens_table

    return lens_table(loaded, r.token_ids, hidden_positions=r.hidden_positions, mask_schedule=r.mask_schedule,
                      job=job)


def _routes(loaded, r: RoutesRequest, job: Job) -> Routes:
    from ..analyses.routes import routes

    return routes(loaded, r.token_ids, hidden_positions=r.hidden_positions, mask_schedule=r.mask_schedule,
                  dense=r.dense, job=job)


def _probe(loaded, request: ProbeRequest, job: Job):
    from ..loading.precision import capabilities

    return capabilities(probe=True)


def _head_rows(loaded, r: HeadRowsRequest, job: Job):
    from ..analyses.head_rows import head_rows

    return head_rows(loaded, r.token_ids, r.layer, r.head, hidden_positions=r.hidden_positions,
                     mask_schedule=r.mask_schedule, job=job)


def _tokenize(loaded, r: TokenizeRequest, job: Job) -> Tokens:
    from ..running.text import one_token, prompt_ids, token_piece

    tok = loaded.tokenizer
    if r.single is not None:
        ids = [one_token(tok, r.text, r.single)]
    elif r.add_bos:
        ids = prompt_ids(tok, r.text, loaded.info.bos_token_id)
    else:
        ids = list(tok(r.text, add_special_tokens=False)["input_ids"])
    return Tokens(tuple(int(i) for i in ids), tuple(token_piece(tok, int(i)) for i in ids))


def _pieces(loaded, r: PiecesRequest, job: Job) -> tuple[str, ...]:
    from ..running.text import token_piece

    return tuple(token_piece(loaded.tokenizer, int(i)) for i in r.ids)


def _threads(loaded, request: ThreadsRequest, job: Job) -> ThreadsState:
    return worker_tuner().configure(request.threads)


def _download(loaded, request: DownloadRequest, job: Job) -> Downloaded:
    from ..loading.hub_download import download

    return download(request, job)


register_analysis(ThreadsRequest, "threads", "Setting the engine's threads", _threads, needs_model=False,
                  result_types=(ThreadsState,))
register_analysis(LensRequest, "lens", "The logit lens", _lens)
register_analysis(DivergenceRequest, "divergence", "The comparison", _divergence)
register_analysis(HeadImportanceRequest, "head_importance", "Head importance", _head_importance)
register_analysis(ProbeRequest, "probe", "Probing this machine", _probe, needs_model=False)
register_analysis(AttributionRequest, "attribution", "Attribution", _attribution, result_types=(Attribution,))
register_analysis(PatchingRequest, "patching", "Activation patching", _patching, result_types=(Patching,))
register_analysis(LensTableRequest, "lens_table", "The logit lens of the run", _lens_table, result_types=(LensTable,))
register_analysis(HeadRowsRequest, "head_rows", "One head's attention", _head_rows)
register_analysis(RoutesRequest, "routes", "Computing the information-flow routes", _routes, result_types=(Routes,))
# Downloads run where the engine runs (its machine's Hub cache), with the same stop and progress as any job.
register_analysis(DownloadRequest, "download", "The download", _download, needs_model=False,
                  result_types=(Downloaded,))

register_analysis(TokenizeRequest, "tokenize", "Tokenizing", _tokenize, result_types=(Tokens,))
register_analysis(PiecesRequest, "pieces", "Naming tokens", _pieces)

# Small enough to run between two decode steps of a generation.
_BETWEEN_STEPS = {LensRequest, ThreadsRequest, TokenizeRequest, PiecesRequest, *MACHINE_REQUESTS}


class EngineService(LocalEngine):
    def __init__(self, threads: ThreadTuner | None = None) -> None:
        """`threads`: what chooses torch's thread count on the worker (default: "auto", ThreadsRequest changes it)."""
        return_freed_memory_promptly()
        self._threads = threads or ThreadTuner()
        self.on_died = None  # never called: this engine ends only with the window's own process
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
    def tokenizer(self):
        """The current model's (fast, thread-safe) tokenizer, for token counts on the caller's thread."""
        return self._tokenizer

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        return (self._thread,)

    def count_tokens(self, text: str) -> int | None:
        """Prompt length in tokens, the leading `</s>` included; None before a model is loaded."""
        tok = self._tokenizer
        return None if tok is None else len(tok(text)["input_ids"])

    def count_tokens_later(self, text: str) -> Future:
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
        (events.py has the order); JobProgress for the analyses that report it.
        """
        job = Job(job_kind(request), request, origin=origin, on_event=on_event, stop=stop,
                  between_steps=type(request) in _BETWEEN_STEPS)
        job.on_start = on_start
        self._queue_job(job)
        return job

    def call(self, fn: Callable, *args) -> Future:
        """Run `fn(loaded_model, *args)` on the worker as a job of its own (tests, benchmarks): it
        queues, stops and ends like any other job, shutdown included."""
        job = Job(_CALL, (fn, args))
        self._queue_job(job)
        return job.future

    def _queue_job(self, job: Job) -> None:
        with self._lock:
            if self._closed:
                raise RuntimeError("the engine has been shut down")
            if job.between_steps and self._generating:
                self._between.put(job)
            else:
                self._queue.put(job)

    def stop(self) -> None:
        job = self._running
        if job is not None:
            job.stop()

    def _change_head_mask(self, mask: tuple[HeadScale, ...]) -> None:
        with self._lock:
            if self._generating:
                self._mask_change = mask

    def restart(self) -> None:
        raise RuntimeError("the engine in this process is still running (it ends only with the process)")

    # --- the worker ------------------------------------------------------------------------------

    def _work(self) -> None:
        self._threads.bind()
        while True:
            try:
                job = self._queue.get(timeout=IDLE_TICK_S)
            except queue.Empty:
                self._threads.idle()
                continue
            if job is None:
                return
            if not isinstance(job.request, MACHINE_REQUESTS):  # reads of files and memory compute nothing
                self._threads.start_job(new_model=job.kind == "load")
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
        elif job.kind == _CALL:
            fn, args = request
            job.run(lambda j: fn(self._loaded, *args), "The engine call")
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
        folder = locate(request, job)  # a bad source fails here, keeping the current model
        job.check()
        self._loaded = None  # let the old weights go before the new ones arrive
        self._info = None
        self._tokenizer = None
        loaded = load_model(request, job, folder=folder)
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
            return run_generation(loaded, request, job, between_steps=self._between_steps,
                                  mask_change=self._take_mask_change)
        finally:
            with self._lock:
                self._generating = False
            log.info("Decoded with %s", self._threads.summary())
            self._run_between_steps()  # anything queued as the run ended

    def _take_mask_change(self) -> tuple[HeadScale, ...] | None:
        with self._lock:
            mask, self._mask_change = self._mask_change, None
        return mask

    def _between_steps(self) -> None:
        """On the worker, after each token: time the decode step for the thread tuner, then run the small
        jobs that arrived during the run (not timed)."""
        self._threads.step()
        if self._run_between_steps():
            self._threads.restart_clock()

    def _run_between_steps(self) -> bool:
        """On the worker, between decode steps: run the small jobs that arrived during the run; True if any did."""
        ran = False
        while True:
            try:
                job = self._between.get_nowait()
            except queue.Empty:
                return ran
            self._run(job)
            ran = True

    # --- closing -----------------------------------------------------------------------------------

    def shutdown(self, wait: bool = True) -> None:
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
                job.abandon()
        self._queue.put(None)
        if wait:
            self._thread.join()

    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()
