"""The engine's front door: one worker thread owns the model; callers get futures and plain events.

No torch at import time: the heavy modules are imported on the worker, so a window can appear
before torch has loaded. The CLI, the tests and the GUI all drive the engine through this class.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Sequence

from .errors import NoModelError
from .memory import return_freed_memory_promptly
from .events import Event, Finished, LensResult, LoadProgress, ModelInfo
from .interventions_spec import check_head_mask, normalize_head_mask
from .results import Divergence, HeadImportance
from .settings import GenerationRequest, HeadScale, LoadRequest

EmitFn = Callable[[Event], None]
ProgressFn = Callable[[LoadProgress], None]


class EngineService:
    def __init__(self) -> None:
        return_freed_memory_promptly()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opt-engine")
        self._loaded = None  # engine.loader.LoadedModel, touched only on the worker
        self._info: ModelInfo | None = None
        self._tokenizer = None
        self._stop = threading.Event()  # the stop of the job now running, if any
        self._closed = False
        # Small jobs (the logit lens) that run between decode steps while a generation holds the worker.
        self._between: queue.SimpleQueue = queue.SimpleQueue()
        self._between_lock = threading.Lock()
        self._generating = False
        self._mask_change: tuple[HeadScale, ...] | None = None  # set during a run, taken between its steps

    # --- state readable from any thread ------------------------------------------------------

    @property
    def info(self) -> ModelInfo | None:
        return self._info

    @property
    def tokenizer(self):
        """The current model's (fast, thread-safe) tokenizer, for token counts on the caller's thread."""
        return self._tokenizer

    def count_tokens(self, text: str) -> int | None:
        """Prompt length in tokens, the leading `</s>` included; None before a model is loaded."""
        tok = self._tokenizer
        return None if tok is None else len(tok(text)["input_ids"])

    # --- jobs ----------------------------------------------------------------------------------

    def load(self, request: LoadRequest, progress: ProgressFn | None = None) -> Future[ModelInfo]:
        """Load a model on the worker. Fails with ModelLoadError; a source that cannot be found or is
        not OPT fails before the current model is released, so the current model stays usable."""
        stop = self._new_stop()

        def job() -> ModelInfo:
            from .loader import load_model, locate, resolve_device

            resolve_device(request.device)
            folder = locate(request, progress, stop)  # a bad source fails here, keeping the current model
            self._loaded = None  # let the old weights go before the new ones arrive
            self._info = None
            self._tokenizer = None
            loaded = load_model(request, progress=progress, stop=stop, folder=folder)
            self._loaded = loaded
            self._tokenizer = loaded.tokenizer
            self._info = loaded.info
            return loaded.info

        return self._executor.submit(job)

    def generate(self, request: GenerationRequest, emit: EmitFn, stop: threading.Event | None = None) -> Future[Finished]:
        """Run one generation on the worker, calling `emit` (on the worker thread) for each event.

        `stop` (or `self.stop()`) ends it before the next forward step with reason "cancelled".
        """
        stop = self._new_stop(stop)

        def job() -> Finished:
            if self._loaded is None:
                raise NoModelError("No model is loaded yet: load one first.")
            from .generate import run_generation

            with self._between_lock:
                self._generating = True
                self._mask_change = None
            try:
                return run_generation(self._loaded, request, emit, stop, between_steps=self._run_between_steps,
                                      mask_change=self._take_mask_change)
            finally:
                with self._between_lock:
                    self._generating = False
                self._run_between_steps()  # anything queued as the run ended

        return self._executor.submit(job)

    def set_head_mask(self, mask: Sequence[HeadScale]) -> None:
        """Change the head mask of the running generation, from its next token on (any thread).

        The run reports the change as HeadMaskChanged. With no run going this does nothing: the
        next request carries its own mask. A head the model lacks raises SettingsError here.
        """
        mask = normalize_head_mask(mask)
        info = self._info
        if info is not None:
            check_head_mask(mask, info.n_layers, info.n_heads, info.label)
        with self._between_lock:
            if self._generating:
                self._mask_change = mask

    def _take_mask_change(self) -> tuple[HeadScale, ...] | None:
        with self._between_lock:
            mask, self._mask_change = self._mask_change, None
        return mask

    def divergence(self, token_ids: Sequence[int], base_mask: Sequence[HeadScale] = (),
                   other_mask: Sequence[HeadScale] = (), base_hidden: Sequence[int] = (),
                   other_hidden: Sequence[int] = ()) -> Future[Divergence]:
        """Teacher-force `token_ids` twice, under the base and the other intervention, on the worker:
        per position the log-probability of each token under both, and KL(base || other)."""
        token_ids = tuple(token_ids)

        def job() -> Divergence:
            if self._loaded is None:
                raise NoModelError("No model is loaded yet: load one first.")
            from .scoring import divergence

            return divergence(self._loaded, token_ids, base_mask, other_mask, base_hidden, other_hidden)

        return self._executor.submit(job)

    def head_importance(self, token_ids: Sequence[int], n_prompt: int, scale: float = 0.0,
                        progress: Callable[[int, int], None] | None = None,
                        stop: threading.Event | None = None, base_mask: Sequence[HeadScale] = (),
                        hidden: Sequence[int] = ()) -> Future[HeadImportance]:
        """Scale each head in turn on `token_ids` (teacher-forced) and measure the change in the
        log-probability of the generated tokens (positions >= n_prompt), on the worker.

        `progress(done, total)` is called on the worker after each head; `stop` (or `self.stop()`)
        ends the job between heads with `completed` False. `base_mask` and `hidden` are the run's own
        interventions: the baseline has them, and each head is scaled on top of them.
        """
        token_ids = tuple(token_ids)
        stop = self._new_stop(stop)

        def job() -> HeadImportance:
            if self._loaded is None:
                raise NoModelError("No model is loaded yet: load one first.")
            from .scoring import head_importance

            return head_importance(self._loaded, token_ids, n_prompt, scale, progress=progress, stop=stop,
                                   base_mask=tuple(base_mask), hidden=tuple(hidden))

        return self._executor.submit(job)

    def logit_lens(self, residual_rows, target_id: int | None, position: int = -1, top_k: int = 5) -> Future[LensResult]:
        """Read kept residual rows (L+1, D) through the model's head, on the worker.

        During a generation it runs between two decode steps, so the lens of a token is live
        rather than queued behind the whole run.
        """

        def job() -> LensResult:
            if self._loaded is None:
                raise NoModelError("No model is loaded yet: load one first.")
            from .lens import logit_lens

            return logit_lens(self._loaded, residual_rows, target_id, position=position, top_k=top_k)

        with self._between_lock:
            if self._generating:
                future: Future = Future()
                self._between.put((job, future))
                return future
        return self._executor.submit(job)

    def _run_between_steps(self) -> None:
        """On the worker, between decode steps: run the small jobs that arrived during the run."""
        while True:
            try:
                job, future = self._between.get_nowait()
            except queue.Empty:
                return
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(job())
                except BaseException as exc:  # the caller sees it where it awaits the future
                    future.set_exception(exc)

    def call(self, fn: Callable, *args) -> Future:
        """Run `fn(loaded_model, *args)` on the worker (tests, benchmarks, the CLI's `info`)."""
        return self._executor.submit(lambda: fn(self._loaded, *args))

    def stop(self) -> None:
        """Ask the running job to stop before its next forward step."""
        self._stop.set()

    def shutdown(self, wait: bool = True) -> None:
        """Stop the running job, drop queued ones and (optionally) wait for the worker to end."""
        self._closed = True
        self._stop.set()
        self._executor.shutdown(wait=wait, cancel_futures=True)

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` s for the worker thread to end (after shutdown); True if it has."""
        threads = list(getattr(self._executor, "_threads", ()))
        for t in threads:
            t.join(timeout)
        return not any(t.is_alive() for t in threads)

    def _new_stop(self, stop: threading.Event | None = None) -> threading.Event:
        if self._closed:
            raise RuntimeError("the engine has been shut down")
        self._stop = stop if stop is not None else threading.Event()
        return self._stop
