"""The engine in its own process: the wire format carries every event exactly, a generation there
equals one in this process, Stop reaches it, and its death ends its jobs with one line."""

import io
import json
import os
import signal
import time

import numpy as np
import pytest

from fakes import fake_events
from opt_desktop.engine import GenerationRequest, GenerationSettings, LoadRequest, PromptError
from opt_desktop.engine.process import protocol
from opt_desktop.engine.process.engine_process import EngineDied, EngineProcess
from opt_desktop.engine.messages.errors import JobCancelled
from opt_desktop.engine.jobs.job import JobEnd, JobProgress
from opt_desktop.engine.process.process_messages import JobEnded, JobEvent, Submit
from opt_desktop.engine.messages.requests import DivergenceRequest
from opt_desktop.engine.messages.settings import HeadScale


def roundtrip(message):
    buf = io.BytesIO()
    protocol.write(buf, message)
    buf.seek(0)
    return protocol.read(buf)


def assert_same(a, b):
    if isinstance(a, np.generic):
        a = a.item()  # numpy scalars cross as plain numbers
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape
        np.testing.assert_array_equal(a, b)
    elif isinstance(a, (list, tuple)):
        assert type(a) is type(b) and len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            assert_same(a[k], b[k])
    elif hasattr(a, "__dataclass_fields__"):
        assert type(a) is type(b)
        for name in a.__dataclass_fields__:
            assert_same(getattr(a, name), getattr(b, name))
    elif isinstance(a, float) and np.isnan(a):
        assert np.isnan(b)
    else:
        assert a == b and type(a) is type(b)


def test_every_event_of_a_run_crosses_the_pipe_exactly():
    for event in fake_events(keep_rows=True):
        assert_same(event, roundtrip(JobEvent(7, event)).event)
    request = GenerationRequest(prompt="x", settings=GenerationSettings(seed=3, stop_strings=("\n",)),
                                head_mask=(HeadScale(layer=1, head=2, scale=0.5),), hidden_positions=(1, 2))
    assert roundtrip(Submit(1, request)).request == request
    div = DivergenceRequest((2, 5, 6), (HeadScale(layer=0, head=1),), (), (1,), ())
    assert roundtrip(Submit(2, div)).request == div
    end = roundtrip(JobEnded(3, JobEnd("done", result=JobProgress(1, 2))))
    assert end.end.result == JobProgress(1, 2) and end.end.reason == "done"


def test_a_frame_never_builds_an_unregistered_type():
    buf = io.BytesIO()
    text = json.dumps({"$t": "Popen", "args": ["rm", "-rf", "/"]}).encode()
    buf.write(protocol._HEADER.pack(protocol.MAGIC, len(text), 0) + text)
    buf.seek(0)
    with pytest.raises(protocol.ProtocolError, match="unknown type"):
        protocol.read(buf)
    with pytest.raises(TypeError, match="not registered"):
        protocol.encode(object())
    bad = io.BytesIO(b"XXXX" + bytes(8))
    with pytest.raises(protocol.ProtocolError):
        protocol.read(bad)
    lying = io.BytesIO()
    text = json.dumps({"$a": [0, 800, "<f4", [10, 20]]}).encode()
    lying.write(protocol._HEADER.pack(protocol.MAGIC, len(text), 8) + text + bytes(8))
    lying.seek(0)
    with pytest.raises(protocol.ProtocolError):
        protocol.read(lying)


@pytest.fixture(scope="module")
def process(checkpoint):
    died = []
    engine = EngineProcess(on_died=died.append)
    engine.died = died
    engine.submit(LoadRequest(source=str(checkpoint), device="cpu")).future.result(timeout=120)
    yield engine
    engine.shutdown()
    assert engine.join(10)


def test_a_run_in_the_engine_process_equals_one_here(process, engine):
    request = GenerationRequest(prompt="The weather", settings=GenerationSettings(max_new_tokens=6))
    here, there = [], []
    engine.generate(request, here.append).result(timeout=60)
    process.submit(request, on_event=there.append).future.result(timeout=60)
    assert [type(e).__name__ for e in there] == [type(e).__name__ for e in here]
    for a, b in zip(here, there):
        if type(a).__name__ == "Finished":
            assert a.token_ids == b.token_ids and a.reason == b.reason
        elif type(a).__name__ == "Started":
            assert a.prompt_ids == b.prompt_ids and a.model.n_layers == b.model.n_layers
        else:
            for name in ("token_id", "logprob", "rank", "top_ids"):
                if hasattr(a, name):
                    assert_same(getattr(a, name), getattr(b, name))
            if getattr(a, "fed", None) is not None:
                assert_same(a.fed.hidden, b.fed.hidden)
                assert_same(a.fed.attention, b.fed.attention)
    assert process.info is not None and process.info.n_layers == engine.info.n_layers
    assert process.count_tokens_later("The weather").result(timeout=10) == engine.count_tokens("The weather")


@pytest.mark.skipif(not hasattr(os, "getpriority"), reason="POSIX priorities")
def test_the_engine_process_runs_at_the_windows_priority(process):
    # Lowered, it got a tenth of a core beside any busy program (issue 22).
    assert os.getpriority(os.PRIO_PROCESS, process.pid) == os.getpriority(os.PRIO_PROCESS, 0)


def test_errors_and_stop_cross_too(process):
    with pytest.raises(PromptError):
        process.submit(GenerationRequest(prompt="word " * 400)).future.result(timeout=60)
    job = process.submit(GenerationRequest(prompt="Go", settings=GenerationSettings(max_new_tokens=100000 // 1000)))
    queued = process.submit(GenerationRequest(prompt="Later"))
    queued.stop()
    with pytest.raises(JobCancelled):
        queued.future.result(timeout=60)
    assert queued.end.reason == "cancelled"
    job.future.result(timeout=60)


def test_killing_the_engine_process_ends_its_jobs_with_one_line(checkpoint, family):
    if family != "pre":
        pytest.skip("one family is enough: the process's death does not depend on the model")
    died = []
    engine = EngineProcess(on_died=died.append)
    try:
        engine.submit(LoadRequest(source=str(checkpoint), device="cpu")).future.result(timeout=120)
        slow = engine.submit(GenerationRequest(prompt="Go on", settings=GenerationSettings(max_new_tokens=120)))
        queued = engine.submit(GenerationRequest(prompt="Waiting"))
        while slow.state != "running":
            time.sleep(0.01)
        os.kill(engine.pid, signal.SIGKILL)
        for job in (slow, queued):
            end = job.wait(30)
            assert end is not None and end.reason == "error"
            assert "stopped unexpectedly" in end.message and "\n" not in end.message
            with pytest.raises(EngineDied):
                job.future.result()
        assert len(died) == 1 and "killed" in died[0]
        assert engine.info is None
        engine.restart()
        engine.submit(LoadRequest(source=str(checkpoint), device="cpu")).future.result(timeout=120)
        assert engine.submit(GenerationRequest(prompt="Again", settings=GenerationSettings(max_new_tokens=2))
                             ).future.result(timeout=60).n_tokens == 2
    finally:
        engine.shutdown()
        engine.join(10)
