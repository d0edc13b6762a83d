"""Engine jobs from a terminal: load the model, run a job with its progress shown; Ctrl+C stops it."""

from __future__ import annotations

import signal

from ..engine import LoadRequest, ModelInfo
from ..engine.jobs.engine import Engine
from ..engine.messages.job_context import JobProgress
from .terminal import clear_progress, progress


def load(engine: Engine, args) -> ModelInfo:
    """Load the model the arguments name, its progress on one passing line."""
    request = LoadRequest.parse(source=args.model, dtype=args.dtype, device=args.device)

    def show(p) -> None:
        progress(f"{p.message}{f' {p.fraction:.0%}' if p.fraction is not None else ''}")

    try:
        return engine.load(request, show).result()
    finally:
        clear_progress()


def run_job(engine: Engine, request, label: str = ""):
    """Run one job to its end and return its result; its progress shows on a terminal as
    "label 40%" (or "done/total" without a label). Ctrl+C stops it at its next check: the job then
    ends "cancelled" and this raises JobCancelled (or returns the partial result it left)."""

    def on_event(event) -> None:
        if isinstance(event, JobProgress):
            progress(f"{label} {event.done / max(1, event.total):.0%}" if label else f"{event.done}/{event.total}")

    job = engine.submit(request, on_event=on_event)
    previous = signal.signal(signal.SIGINT, lambda *a: job.stop())
    try:
        return job.future.result()
    finally:
        signal.signal(signal.SIGINT, previous)
        clear_progress()
