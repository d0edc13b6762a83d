"""Runs made with the real engine, and a check that two runs read the same through every method."""

from __future__ import annotations

import numpy as np

from opt_desktop.engine.messages.events import ATTENTION_STATS, HIDDEN_STATS
from opt_desktop.session import RunTrace


def generate(engine, request) -> RunTrace:
    events = []
    engine.generate(request, events.append).result()
    trace = RunTrace(events[0])
    for event in events[1:]:
        trace.apply(event)
    return trace


def trace_from(events) -> RunTrace:
    trace = RunTrace(events[0])
    for event in events[1:]:
        trace.apply(event)
    return trace


def record(engine, request) -> list:
    events = []
    engine.generate(request, events.append).result()
    return events


def _same(a, b, what):
    if a is None or b is None:
        assert a is None and b is None, what
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, (what, a.dtype, a.shape, b.dtype, b.shape)
    assert np.array_equal(a, b, equal_nan=a.dtype.kind == "f"), what


def assert_same_trace(a: RunTrace, b: RunTrace) -> None:
    """Every reading method of RunTrace gives the same value for both runs."""
    for name in ("length", "n_prompt", "n_generated", "n_layers", "n_heads", "text", "pieces", "token_ids",
                 "generated_ids", "text_parts", "elapsed", "top_pieces", "notices", "started", "finished",
                 "mask_changes", "parent", "fork_position", "label", "has_attention_rows"):
        assert getattr(a, name) == getattr(b, name), name
    for name in ("logprob", "entropy", "rank", "top_ids", "top_probs"):
        _same(getattr(a, name), getattr(b, name), name)
    for name in HIDDEN_STATS:
        _same(a.hidden(name), b.hidden(name), f"hidden({name})")
    for name in ATTENTION_STATS:
        _same(a.attention(name), b.attention(name), f"attention({name})")
    for pos in range(-1, a.length + 1):
        # A run in memory keeps exact float32 rows; a file keeps them in float16.
        ra, rb = a.residual_rows(pos), b.residual_rows(pos)
        if ra is not None and rb is not None and ra.dtype != rb.dtype:
            ra, rb = ra.astype(np.float16), rb.astype(np.float16)
        _same(ra, rb, f"residual_rows({pos})")
        assert a.next_token(pos) == b.next_token(pos)
    for layer in range(a.n_layers):
        for head in range(a.n_heads):
            _same(a.attention_matrix(layer, head), b.attention_matrix(layer, head), f"attention_matrix({layer}, {head})")
    arrays_a, arrays_b = a.arrays(), b.arrays()
    assert arrays_a.keys() == arrays_b.keys()
    for name in arrays_a:
        _same(arrays_a[name], arrays_b[name], name)
