"""One job object per engine job: Stop reaches the running job, a queued job can be cancelled on its
own, a long prefill stops within a layer, analyses are cancellable, and every job ends once."""

import threading
import time

import numpy as np
import pytest

from models import save_tiny_opt
from worker_patches import endless_download
from opt_desktop.engine import (EngineService, Finished, GenerationRequest, GenerationSettings, LoadRequest,
                                PromptScored, Started)
from opt_desktop.engine.running import attention
from opt_desktop.engine.messages.errors import JobCancelled
from opt_desktop.engine.messages.events import LoadProgress
from opt_desktop.engine.jobs.job import JobProgress
from opt_desktop.engine.messages.requests import DivergenceRequest, HeadImportanceRequest

LONG = GenerationSettings(max_new_tokens=100)


@pytest.fixture(scope="module")
def long_engine(tmp_path_factory, tokenizer):
    """A tiny pre-LN model with a 2,048-token context, for prompts of 1,500 tokens."""
    folder = save_tiny_opt(tmp_path_factory.mktemp("long"), "pre", tokenizer, context=2048)
    svc = EngineService()
    svc.load(LoadRequest(source=str(folder), device="cpu")).result()
    yield svc
    svc.shutdown()
    assert svc.join(5.0)


def _model(engine):
    return engine.call(lambda loaded: loaded.model).result()


def _wait_until(predicate, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.005)


def _slow_steps(model, seconds=0.02):
    """Make every forward step of `model` take a little longer, so a run lasts long enough to be stopped."""
    return model.model.decoder.layers[0].register_forward_pre_hook(lambda m, a: time.sleep(seconds))


def test_stop_reaches_the_running_job_not_the_queued_one(long_engine):
    tokens = []
    handle = _slow_steps(_model(long_engine))
    try:
        running = long_engine.submit(GenerationRequest(prompt="a b c", settings=LONG),
                                     on_event=lambda e: tokens.append(e))
        queued = long_engine.submit(GenerationRequest(prompt="d e f", settings=GenerationSettings(max_new_tokens=3)))
        _wait_until(lambda: running.state == "running" and len(tokens) > 3)
        long_engine.stop()
        finished = running.future.result(timeout=30)
        assert finished.reason == "cancelled" and finished.n_tokens < LONG.max_new_tokens
        # The queued job was not the one stopped: it runs to its own end afterwards.
        assert queued.future.result(timeout=30).reason in ("length", "eos")
        assert queued.end.reason == "done" and running.end.reason == "cancelled"
    finally:
        handle.remove()


def test_a_queued_job_can_be_cancelled_on_its_own(long_engine):
    handle = _slow_steps(_model(long_engine))
    try:
        running = long_engine.submit(GenerationRequest(prompt="a b c", settings=GenerationSettings(max_new_tokens=20)))
        events = []
        queued = long_engine.submit(GenerationRequest(prompt="d e f"), on_event=events.append)
        queued.stop()
        # Ended at once, while the other job still runs; it never starts.
        assert queued.end is not None and queued.end.reason == "cancelled"
        assert running.end is None
        with pytest.raises(JobCancelled):
            queued.future.result(timeout=1)
        assert running.future.result(timeout=30).reason == "length"
        assert events == []
    finally:
        handle.remove()


def test_stop_during_a_long_prefill_ends_within_a_layer(long_engine, tokenizer):
    """Stop set while layer 1 of a 1,500-token prefill runs: layer 2 never runs, and no token comes."""
    model = _model(long_engine)
    ids = tuple([2] + [int(i) for i in np.random.default_rng(0).integers(4, 200, 1499)])
    calls = []
    job_box = []

    def on_layer(index):
        def hook(module, args):
            calls.append(index)
            if index == 1:
                job_box[0].stop()
        return hook

    handles = [layer.register_forward_pre_hook(on_layer(i)) for i, layer in enumerate(model.model.decoder.layers)]
    events = []
    try:
        job_box.append(long_engine.submit(GenerationRequest(prompt_ids=ids, settings=GenerationSettings(max_new_tokens=5)),
                                          on_event=events.append))
        finished = job_box[0].future.result(timeout=60)
    finally:
        for h in handles:
            h.remove()
    assert calls == [0, 1]  # the prefill ended before layer 1 ran
    assert finished.reason == "cancelled" and finished.n_tokens == 0
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)


def test_a_failing_run_ends_with_reason_error_and_keeps_its_tokens(long_engine):
    model = _model(long_engine)
    steps = []

    def boom(module, args, output):
        steps.append(1)
        if len(steps) == 4:
            raise RuntimeError("capture broke")

    handle = model.lm_head.register_forward_hook(boom)
    events = []
    try:
        job = long_engine.submit(GenerationRequest(prompt="a b", settings=GenerationSettings(max_new_tokens=10)),
                                 on_event=events.append)
        with pytest.raises(RuntimeError):
            job.future.result(timeout=30)
    finally:
        handle.remove()
    finished = events[-1]
    assert isinstance(finished, Finished) and finished.reason == "error"
    assert "capture broke" in finished.message and "RuntimeError" not in finished.message
    assert finished.n_tokens == 3  # the tokens made before the failure are kept
    assert job.end.reason == "error" and "capture broke" in job.end.details and "Traceback" in job.end.details
    # The worker survived: the next job runs.
    assert long_engine.generate(GenerationRequest(prompt="a", settings=GenerationSettings(max_new_tokens=2)),
                               lambda e: None).result(timeout=30).n_tokens > 0


def test_divergence_is_cancellable(long_engine):
    model = _model(long_engine)
    ids = tuple([2] + [4 + i % 500 for i in range(1000)])  # within the smallest test vocabulary (512)
    job_box = []

    def stop_at_layer_2(module, args):
        job_box[0].stop()

    handle = model.model.decoder.layers[2].register_forward_pre_hook(stop_at_layer_2)
    try:
        job_box.append(long_engine.submit(DivergenceRequest(ids)))
        with pytest.raises(JobCancelled):
            job_box[0].future.result(timeout=60)
    finally:
        handle.remove()
    assert job_box[0].end.reason == "cancelled"


def test_head_importance_reports_progress_and_keeps_partial_results_when_stopped(long_engine):
    ids = tuple([2] + list(range(4, 40)))
    seen = []
    box = []

    def on_event(event):
        seen.append(event)
        if isinstance(event, JobProgress) and event.done == 5:
            box[0].stop()

    box.append(long_engine.submit(HeadImportanceRequest(ids, n_prompt=20), on_event=on_event))
    result = box[0].future.result(timeout=60)
    assert [e.done for e in seen] == [1, 2, 3, 4, 5] and seen[0].total == result.delta.size
    assert not result.completed and np.isfinite(result.delta).sum() == 5
    assert box[0].end.reason == "cancelled" and box[0].end.result is result


def test_shutdown_ends_queued_jobs_and_the_worker(tokenizer, tmp_path):
    folder = save_tiny_opt(tmp_path / "m", "pre", tokenizer)
    svc = EngineService()
    load = svc.submit(LoadRequest(source=str(folder), device="cpu"))
    queued = [svc.submit(GenerationRequest(prompt="x")) for _ in range(3)]
    svc.shutdown(wait=False)
    assert svc.join(10.0)
    assert load.end is not None
    assert all(job.end is not None for job in queued)
    assert any(job.end.reason == "cancelled" for job in queued)
    with pytest.raises(RuntimeError):
        svc.submit(GenerationRequest(prompt="x"))


def test_calls_queued_at_shutdown_end_too():
    """Issue 23 (4): a `call` still queued when the engine shut down stayed pending for ever."""
    svc = EngineService()
    started, gate = threading.Event(), threading.Event()
    first = svc.call(lambda loaded: started.set() or gate.wait(10))
    queued = svc.call(lambda loaded: "never run")
    assert started.wait(10)
    svc.shutdown(wait=False)
    gate.set()
    assert svc.join(10.0) and first.result(timeout=1) is True
    with pytest.raises(JobCancelled):
        queued.result(timeout=1)


def test_stopping_a_load_that_is_running_ends_it_cancelled(tokenizer, tmp_path):
    """Issue 23 (1): a stopped load ended as an error ("Loading X was cancelled."), so the window's
    start-up load fell back to the demo instead."""
    folder = save_tiny_opt(tmp_path / "m", "pre", tokenizer)
    svc = EngineService()
    try:
        stop = threading.Event()
        seen = []

        def on_event(event):
            seen.append(event.message)
            if event.message.startswith("Loading the weights"):
                stop.set()  # the person presses Stop while the weights load

        job = svc.submit(LoadRequest(source=str(folder), device="cpu"), on_event=on_event, stop=stop)
        with pytest.raises(JobCancelled):
            job.future.result(timeout=60)
        assert job.end.reason == "cancelled" and job.end.message == f"Loading {folder} was stopped."
        assert "Ready" not in seen and svc.info is None
        assert svc.load(LoadRequest(source=str(folder), device="cpu")).result(timeout=60).n_layers == 3
    finally:
        svc.shutdown()


def test_stopping_a_download_ends_the_load_cancelled(monkeypatch):
    """The same for a load that is downloading its model: the stop raises inside the download."""
    endless_download(monkeypatch.setattr)
    svc = EngineService()
    try:
        box = []

        def on_event(event):
            if isinstance(event, LoadProgress) and event.message.startswith("Downloading"):
                box[0].stop()

        box.append(svc.submit(LoadRequest(source="facebook/opt-never", device="cpu"), on_event=on_event))
        with pytest.raises(JobCancelled):
            box[0].future.result(timeout=60)
        assert box[0].end.reason == "cancelled"
    finally:
        svc.shutdown()


def test_stop_while_the_prompt_is_scored_ends_between_chunks(long_engine, monkeypatch):
    """After its first token, a long prompt is scored against the whole vocabulary a chunk at a time:
    Stop lands between two chunks, not after all of them."""
    from opt_desktop.engine.running import capture

    chunks = []
    real = capture.prompt_distribution_stats
    box = []

    def counting(logits, *args):
        chunks.append(logits.shape[0])
        box[0].stop()
        return real(logits, *args)

    monkeypatch.setattr(capture, "prompt_distribution_stats", counting)
    ids = tuple([2] + list(range(4, 504)))
    events = []
    box.append(long_engine.submit(GenerationRequest(prompt_ids=ids, settings=GenerationSettings(max_new_tokens=3)),
                                  on_event=events.append))
    finished = box[0].future.result(timeout=60)
    assert finished.reason == "cancelled" and finished.n_tokens == 1  # the first token came before
    assert len(chunks) == 1  # 500 rows would be several chunks
    assert not any(isinstance(e, PromptScored) for e in events)


def test_stop_while_the_prompt_attention_is_reduced_ends_between_blocks(long_engine, monkeypatch):
    """The prompt's attention weights are recomputed a block of queries at a time after its first
    token: Stop lands between two blocks of a layer, not after every layer."""
    from opt_desktop.engine.running import capture

    blocks = []
    real = capture.prompt_attention_stats
    box = []

    def counting(weights, scores, offset):
        blocks.append(offset)
        box[0].stop()
        return real(weights, scores, offset)

    monkeypatch.setattr(capture, "prompt_attention_stats", counting)
    monkeypatch.setattr(attention, "_CHUNK_ELEMENTS", 4 * 64 * 500)  # blocks of 64 queries (4 heads)
    ids = tuple([2] + list(range(4, 504)))
    box.append(long_engine.submit(GenerationRequest(prompt_ids=ids, settings=GenerationSettings(max_new_tokens=3))))
    finished = box[0].future.result(timeout=60)
    assert finished.reason == "cancelled" and finished.n_tokens == 1
    assert blocks == [0]  # layer 0's first block, then Stop


@pytest.mark.parametrize("kind", ["attribution", "patching"])
def test_attribution_and_patching_are_jobs_that_stop_within_a_layer(long_engine, kind):
    from opt_desktop.engine.messages.requests import AttributionRequest, PatchingRequest

    ids = tuple([2] + list(range(10, 40)))
    request = (AttributionRequest(ids, method="ig", steps=64) if kind == "attribution"
               else PatchingRequest(ids, tuple([2] + list(range(50, 80))), target_id=7))
    layers = _model(long_engine).model.decoder.layers
    after = []
    box = []
    stop_at = layers[1].register_forward_pre_hook(lambda m, a: box[0].stop())
    count = layers[2].register_forward_pre_hook(lambda m, a: after.append(1))
    try:
        box.append(long_engine.submit(request))
        with pytest.raises(JobCancelled):
            box[0].future.result(timeout=120)
    finally:
        stop_at.remove()
        count.remove()
    assert box[0].end.reason == "cancelled" and box[0].kind == kind
    assert after == []  # the layer after the stop never ran
