"""The engine's one interface, whatever runs it: a worker thread in this process (EngineService),
an engine process behind a byte pipe (process/remote_engine.py: a child process today, `ssh host
opt-desktop-engine` tomorrow).

The window and the CLI are typed against `Engine`. It holds no tokenizer and nothing that needs
torch, so the window can use an engine that lives elsewhere. The conveniences below it (load,
generate, divergence, ...) are written here once, on top of `submit`, and every engine inherits them.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

from ..messages.events import Event, Finished, LensResult, LoadProgress, ModelInfo
from ..messages.interventions_spec import check_head_mask, normalize_head_mask
from ..messages.requests import DivergenceRequest, HeadImportanceRequest, LensRequest
from ..messages.results import Divergence, HeadImportance
from ..messages.settings import GenerationRequest, HeadScale, LoadRequest
from .job import Job, JobProgress

EmitFn = Callable[[Event], None]
ProgressFn = Callable[[LoadProgress], None]


@runtime_checkable
class Engine(Protocol):
    """Runs jobs one at a time on one model; every job it accepts ends exactly once."""

    on_died: Callable[[str], None] | None  # called (on any thread) with one line if the engine ends by itself
    # An engine keeps what the three properties below read in these fields; they are written once here.
    _info: ModelInfo | None
    _running: Job | None
    _closed: bool

    @property
    def info(self) -> ModelInfo | None:
        """The model loaded now (None before the first load, after a failed one, or a death)."""
        return self._info

    @property
    def running(self) -> Job | None:
        """The job the engine is running now, if any."""
        return self._running

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def threads(self) -> tuple[threading.Thread, ...]:
        """This engine's threads in this process, for tests that check nothing is left running."""
        ...

    def submit(self, request: Any, *, origin: Any = None, on_event: Callable[[Any], None] | None = None,
               stop: threading.Event | None = None, on_start: Callable[[], None] | None = None) -> Job:
        """Queue the job for `request` and return it at once; `on_event` gets its events on an
        engine thread, `on_start` is called there as it starts. TypeError for a request no engine runs,
        RuntimeError after shutdown."""
        ...

    def stop(self) -> None:
        """Stop the job that is running now (queued jobs stay queued: stop those with `job.stop()`)."""
        ...

    def _change_head_mask(self, mask: tuple[HeadScale, ...]) -> None:
        """Hand a checked head mask to the running generation (see set_head_mask)."""
        ...

    def count_tokens_later(self, text: str) -> Future:
        """The prompt's length in tokens, the leading `</s>` included; None before a model is loaded."""
        ...

    def restart(self) -> None:
        """A fresh engine after this one died (no model loaded); RuntimeError while it still runs."""
        ...

    def shutdown(self, wait: bool = True) -> None:
        """Stop the running job, end the queued ones and (with `wait`) wait until the engine has ended."""
        ...

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to `timeout` s for the engine to end after shutdown; True if it has."""
        ...

    # --- written once for every engine ------------------------------------------------------------

    def set_head_mask(self, mask: Sequence[HeadScale]) -> None:
        """Change the head mask of the running generation, from its next token on (any thread).

        The run reports the change as HeadMaskChanged. With no run going this does nothing: the
        next request carries its own mask. A head the model lacks raises SettingsError here.
        """
        mask = normalize_head_mask(mask)
        info = self.info
        if info is not None:
            check_head_mask(mask, info.n_layers, info.n_heads, info.label)
        self._change_head_mask(mask)

    def load(self, request: LoadRequest, progress: ProgressFn | None = None) -> Future[ModelInfo]:
        """Load a model. Fails with ModelLoadError; a source that cannot be found or is not OPT fails
        before the current model is released, so the current model stays usable."""
        return self.submit(request, on_event=progress).future

    def generate(self, request: GenerationRequest, emit: EmitFn,
                 stop: threading.Event | None = None) -> Future[Finished]:
        """Run one generation, calling `emit` (on an engine thread) for each event; `stop` (or
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
        """`progress(done, total)` is called on an engine thread after each head; a stop ends the job
        between heads, its future giving the heads measured so far (`completed` False)."""

        def on_event(event) -> None:
            if progress is not None and isinstance(event, JobProgress):
                progress(event.done, event.total)

        request = HeadImportanceRequest(tuple(token_ids), n_prompt, scale, tuple(base_mask), tuple(hidden))
        return self.submit(request, on_event=on_event, stop=stop).future

    def logit_lens(self, residual_rows, target_id: int | None, position: int = -1,
                   top_k: int = 5) -> Future[LensResult]:
        return self.submit(LensRequest(residual_rows, target_id, position, top_k)).future


@runtime_checkable
class LocalEngine(Engine, Protocol):
    """An engine in this process: its tokenizer and its model are at hand (the CLI, tests, benchmarks)."""

    @property
    def tokenizer(self):
        """The current model's (fast, thread-safe) tokenizer; None before a model is loaded."""
        ...

    def count_tokens(self, text: str) -> int | None:
        ...

    def call(self, fn: Callable, *args) -> Future:
        """Run `fn(loaded_model, *args)` on the engine's worker, as a job."""
        ...
