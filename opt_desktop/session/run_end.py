"""Closing a run's record that its engine could not close (the connection or the engine died)."""

from __future__ import annotations

from ..engine.messages.events import Finished
from .trace import RunTrace


def close_record(trace: RunTrace, reason: str, message: str) -> Finished:
    """End `trace` with what it made so far: reason "error" (or "cancelled" for any other `reason`)
    and `message`; the Finished it was given, which the record keeps and files save."""
    elapsed = trace.elapsed[-1] if trace.elapsed else 0.0
    finished = Finished(reason="error" if reason == "error" else "cancelled", text=trace.text,
                        token_ids=tuple(trace.generated_ids), n_tokens=trace.n_generated, elapsed_s=elapsed,
                        time_to_first_token_s=trace.elapsed[0] if trace.elapsed else None, tokens_per_s=None,
                        message=message)
    trace.apply(finished)
    return finished
