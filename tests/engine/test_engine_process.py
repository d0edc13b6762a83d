"""The engine in its own process: the wire format carries every event exactly, a generation there
equals one in this process, Stop reaches it, and whatever goes wrong on the way (a death, a stray
line, another protocol version, a result that cannot be sent) ends every job once, with one true line."""

import io
import json
import os
import signal
import struct
import sys
import time

import numpy as np
import pytest

from fakes import fake_events
from opt_desktop.engine import GenerationRequest, GenerationSettings, LoadRequest, PromptError
from opt_desktop.engine.process import protocol
from odd_analysis import ODD_WORKER, OddRequest
from opt_desktop.engine.jobs.engine import Engine
from opt_desktop.engine.process.engine_process import EngineDied, EngineFailure, EngineProcess
from opt_desktop.engine.messages.errors import JobCancelled
from opt_desktop.engine.jobs.job import JobEnd, JobProgress
from opt_desktop.engine.process.process_messages import PROTOCOL_VERSION, Hello, JobEnded, JobEvent, Submit
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


def frame(text: bytes, blob: bytes = b"", version: int = protocol.PROTOCOL_VERSION) -> io.BytesIO:
    return io.BytesIO(protocol._HEADER.pack(protocol.MAGIC, version, len(text), len(blob)) + text + blob)


def test_a_frame_never_builds_an_unregistered_type():
    text = json.dumps({"$t": "Popen", "args": ["rm", "-rf", "/"]}).encode()
    with pytest.raises(protocol.ProtocolError, match="unknown type"):
        protocol.read(frame(text))
    with pytest.raises(TypeError, match="not registered"):
        protocol.encode(object())
    with pytest.raises(protocol.ProtocolError):
        protocol.read(io.BytesIO(b"XXXX" + bytes(12)))
    with pytest.raises(protocol.ProtocolError):
        protocol.read(frame(json.dumps({"$a": [0, 800, "<f4", [10, 20]]}).encode(), bytes(8)))


def test_the_header_holds_the_arrays_the_protocol_promises():
    """Issue 23 (4): the blob length was a uint32, so a frame over 4 GiB raised struct.error in the
    middle of sending; now the field holds 8 GiB, and a larger frame is refused before a byte is written."""
    assert protocol.MAX_BLOB == 8 * 2**30
    header = protocol._HEADER.pack(protocol.MAGIC, protocol.PROTOCOL_VERSION, 10, protocol.MAX_BLOB)
    assert protocol._HEADER.unpack(header)[3] == protocol.MAX_BLOB
    too_big = io.BytesIO(protocol._HEADER.pack(protocol.MAGIC, protocol.PROTOCOL_VERSION, 2, protocol.MAX_BLOB + 1))
    with pytest.raises(protocol.ProtocolError, match="larger than this protocol allows"):
        protocol.read(too_big)


def test_a_message_larger_than_a_frame_is_refused_whole(monkeypatch):
    monkeypatch.setattr(protocol, "MAX_BLOB", 1000)
    with pytest.raises(protocol.Unsendable, match="larger than this protocol allows"):
        protocol.encode(JobEvent(1, np.zeros(1000, np.float32)))


def test_a_frame_of_another_version_is_named_by_its_first_bytes():
    text = b'{"$t":"Hello","version":1,"pid":7}'
    with pytest.raises(protocol.VersionMismatch) as info:  # version 1's frames began b"OPTE"
        protocol.read(io.BytesIO(b"OPTE" + struct.pack("<II", len(text), 0) + text))
    assert info.value.version == 1
    with pytest.raises(protocol.VersionMismatch) as info:
        protocol.read(frame(text, version=9))
    assert info.value.version == 9
    with pytest.raises(protocol.ProtocolError, match="began with 'OPTI'") as info:  # text, not version 73
        protocol.read(io.BytesIO(b"OPTIONS: none\n" + bytes(8)))
    assert not isinstance(info.value, protocol.VersionMismatch)


def test_numpy_scalars_cross_as_plain_values():
    event = roundtrip(JobEvent(1, {"flag": np.bool_(True), "n": np.int64(3), "x": np.float32(0.5)})).event
    assert event == {"flag": True, "n": 3, "x": 0.5} and type(event["flag"]) is bool


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
    assert isinstance(process, Engine) and isinstance(engine, Engine)  # one interface, two transports
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


def _child_that_says(data: bytes) -> list[str]:
    """A child that writes `data` to its stdout, then hangs (as a stuck process would)."""
    code = (f"import sys, time; sys.stdout.buffer.write(bytes.fromhex({data.hex()!r})); sys.stdout.flush(); "
            "time.sleep(120)")
    return [sys.executable, "-c", code]


_V1_HELLO = b'{"$t":"Hello","version":1,"pid":7}'
NOT_UNDERSTOOD = [
    (b"Loading the model...\n", "sent something that is not an engine frame"),
    (b"ok\n", "sent something that is not an engine frame"),  # shorter than a header: judged as it arrives
    (b"".join(protocol.encode(Hello(99, 7))), f"speaks protocol version 99 and this window version {PROTOCOL_VERSION}"),
    (b"OPTE" + struct.pack("<II", len(_V1_HELLO), 0) + _V1_HELLO,
     f"speaks protocol version 1 and this window version {PROTOCOL_VERSION}"),
]


@pytest.mark.parametrize("data, says", NOT_UNDERSTOOD, ids=["a line", "a short line", "version 99", "version 1"])
def test_an_engine_that_cannot_be_understood_is_ended_with_every_job(data, says):
    """Issue 23 (2): the reader waited for such a child without ending it, so no job ever ended, and
    when it was finally killed the line said it had been "killed or ran out of memory"."""
    died = []
    engine = EngineProcess(on_died=died.append, command=_child_that_says(data))
    try:
        running = engine.submit(LoadRequest(source="demo", device="cpu"))
        queued = engine.submit(GenerationRequest(prompt="Waiting"))
        for job in (running, queued):
            end = job.wait(30)
            assert end is not None and end.reason == "error" and says in end.message and "\n" not in end.message
            assert "killed" not in end.message and "memory" not in end.message
            with pytest.raises(EngineDied):
                job.future.result()
        deadline = time.monotonic() + 10
        while not died and time.monotonic() < deadline:
            time.sleep(0.01)
        assert died == [running.end.message]
        assert engine.join(5)  # the child was ended, not left hanging
        late = engine.submit(GenerationRequest(prompt="Afterwards"))
        assert late.wait(5).reason == "error" and says in late.end.message  # it ends at once, once
    finally:
        engine.shutdown()
        engine.join(10)


def test_a_result_that_cannot_be_sent_still_ends_its_job():
    """Issue 23 (3): the end of a job whose result could not be encoded was never sent, so the window
    waited on it for ever; a numpy bool was such a result."""
    engine = EngineProcess(command=ODD_WORKER)
    try:
        flag = engine.submit(OddRequest("bool_"))
        odd = engine.submit(OddRequest("object"))
        after = engine.submit(OddRequest("bool_"))
        assert flag.future.result(timeout=60) == {"flag": True}
        end = odd.wait(60)
        assert end is not None and end.reason == "error" and "\n" not in end.message
        assert "could not be sent to the window" in end.message and "not registered" in end.message
        with pytest.raises(EngineFailure):
            odd.future.result()
        assert after.future.result(timeout=60) == {"flag": True}  # the engine goes on
    finally:
        engine.shutdown()
        engine.join(10)
