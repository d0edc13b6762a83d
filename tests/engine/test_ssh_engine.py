"""The engine on a server, through a real OpenSSH server on 127.0.0.1 (tests/ssh_server.py).

Over ssh a generation, a stop, attribution, patching and the lens table equal the same jobs in this
process; heavy arrays never cross; each way a connection fails is one line; a connection that dies
mid-run keeps what streamed, and reconnecting works.
"""

import os
import signal
import socket
import threading

import numpy as np
import psutil
import pytest

from models import save_tiny_opt
from opt_desktop.engine import EngineService, Finished, GenerationRequest, GenerationSettings, LoadRequest
from opt_desktop.engine.messages.events import PromptScored, Started, TokenGenerated
from opt_desktop.engine.messages.requests import AttributionRequest, LensTableRequest, PatchingRequest, TokenizeRequest
from opt_desktop.engine.process.remote_engine import EngineDied
from opt_desktop.engine.process.ssh import SshEngine
from opt_desktop.session import RunTrace, Session, load_session, save_session
from opt_desktop.session.run_end import close_record
from ssh_server import engine_command

PROMPT = "The quick brown fox jumps over"


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, tokenizer):
    # A context long enough that a run outlasts the moment a test cuts its connection.
    return save_tiny_opt(tmp_path_factory.mktemp("opt-ssh"), "pre", tokenizer, context=1024)


@pytest.fixture(scope="module")
def local(checkpoint):
    engine = EngineService()
    engine.load(LoadRequest(source=str(checkpoint), device="cpu")).result(120)
    yield engine
    engine.shutdown()
    engine.join(10)


def connect(server, **kwargs) -> tuple[SshEngine, list, list]:
    """An SshEngine to `server` (keyword arguments change its host), its steps and its deaths."""
    steps, died = [], []
    command = kwargs.pop("command", engine_command())
    timeout = kwargs.pop("hello_timeout", 30.0)
    engine = SshEngine(server.host(command=command, **kwargs), on_step=steps.append, on_died=died.append,
                       hello_timeout=timeout)
    return engine, steps, died


@pytest.fixture(scope="module")
def remote(ssh_server, checkpoint):
    engine, steps, died = connect(ssh_server)
    engine.load(LoadRequest(source=str(checkpoint), device="cpu")).result(180)
    yield engine, steps
    engine.shutdown()
    engine.join(10)
    assert not died


def run(engine, request, on_event=None):
    events = []

    def record(event):
        events.append(event)
        if on_event is not None:
            on_event(engine, event, events)

    job = engine.submit(request, on_event=record)
    job.wait(180)
    return job, events


_VARIES = {"elapsed_s", "time_to_first_token_s", "tokens_per_s", "memory_bytes", "residual", "attention_rows",
           "inspect", "seed"}


def assert_same_event(a, b, path="event"):
    if isinstance(a, np.ndarray):
        np.testing.assert_allclose(np.asarray(b, dtype=a.dtype), a, rtol=1e-5, atol=1e-6, err_msg=path)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same_event(x, y, f"{path}[{i}]")
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), path
        for k in a:
            assert_same_event(a[k], b[k], f"{path}.{k}")
    elif hasattr(a, "__dataclass_fields__"):
        assert type(a) is type(b), path
        for name in a.__dataclass_fields__:
            if name not in _VARIES:
                assert_same_event(getattr(a, name), getattr(b, name), f"{path}.{name}")
    elif isinstance(a, float):
        assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, rel=1e-5, abs=1e-6), path
    else:
        assert a == b, path


def test_connecting_shows_its_steps_then_the_engine_and_the_servers_devices(remote):
    engine, steps = remote
    stages = [s.stage for s in steps]
    assert stages == ["connecting", "authenticating", "starting", "greeted", "ready"]
    from opt_desktop import __version__

    assert engine.hello.engine == __version__ and engine.hello.host == socket.gethostname()
    ready = steps[-1]
    assert ready.machine is engine.machine and engine.machine.ram_total > 0
    assert __version__ in ready.text and "RAM" in ready.text  # and "no CUDA GPU" here, or each GPU with its memory
    assert "\n" not in ready.text


def test_a_generation_over_ssh_equals_one_here_and_sends_no_heavy_arrays(remote, local):
    engine, _ = remote
    request = GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=12))
    job, there = run(engine, request)
    _, here = run(local, request)
    assert job.end.reason == "done" and [type(e) for e in there] == [type(e) for e in here]
    for a, b in zip(here, there):
        assert_same_event(a, b)
    started = there[0]
    assert started.inspect["rows_on_demand"] and started.model.host == socket.gethostname()
    fed = [e.fed for e in there if isinstance(e, (TokenGenerated, PromptScored)) and e.fed is not None]
    assert fed and all(f.residual is None and f.attention_rows is None for f in fed)
    assert all(f.hidden and f.attention for f in fed)  # the per-token statistics stream as they do here
    assert any(f.residual is not None for e in here if isinstance(e, TokenGenerated) and (f := e.fed) is not None)


def test_stop_over_ssh_keeps_what_streamed(remote, local):
    engine, _ = remote
    request = GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=900))

    def stop_at_third(engine, event, events):
        if isinstance(event, TokenGenerated) and event.index == 2:
            engine.stop()

    job, there = run(engine, request, stop_at_third)
    finished = there[-1]
    assert isinstance(finished, Finished) and finished.reason == "cancelled" and job.end.reason == "cancelled"
    assert 3 <= finished.n_tokens < 900
    _, here = run(local, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=finished.n_tokens)))
    assert here[-1].token_ids == finished.token_ids


def test_attribution_patching_and_the_lens_table_over_ssh_equal_those_here(remote, local):
    engine, _ = remote
    ids = engine.submit(TokenizeRequest(PROMPT)).future.result(60).ids
    assert ids == local.submit(TokenizeRequest(PROMPT)).future.result(60).ids
    target = engine.submit(TokenizeRequest(" the", add_bos=False, single="target")).future.result(60).ids[0]
    corrupt = ids[:3] + (target,) + ids[4:]
    for request in (AttributionRequest(ids, None, "ig", 8), AttributionRequest(ids, target, "ixg"),
                    PatchingRequest(ids, corrupt, target), LensTableRequest(ids)):
        there = engine.submit(request).future.result(120)
        here = local.submit(request).future.result(120)
        assert_same_event(here, there, type(request).__name__)


def _kill_ssh_client(engine):
    os.kill(engine.transport.pid, signal.SIGKILL)


def _kill_servers_sshd(engine):
    # The engine's parent on the server is sshd's process for this connection (the shell execs the command).
    psutil.Process(engine.hello.pid).parent().kill()


def _kill_engine(engine):
    os.kill(engine.hello.pid, signal.SIGKILL)


@pytest.mark.parametrize("kill, says", [
    (_kill_ssh_client, "Connection to test server lost"),
    (_kill_servers_sshd, "Connection to test server lost"),
    (_kill_engine, "The engine on test server stopped unexpectedly (it was killed or ran out of memory)"),
], ids=["ssh client killed", "server's sshd killed", "engine killed"])
def test_a_connection_that_dies_mid_run_keeps_the_partial_run(ssh_server, checkpoint, tmp_path, kill, says):
    engine, _, died = connect(ssh_server)
    try:
        engine.load(LoadRequest(source=str(checkpoint), device="cpu")).result(180)
        cut = threading.Event()

        def cut_after_three(engine, event, events):
            if isinstance(event, TokenGenerated) and event.index == 2 and not cut.is_set():
                cut.set()
                kill(engine)

        job, events = run(engine, GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=900)),
                          cut_after_three)
        assert job.end is not None and job.end.reason == "error"
        assert job.end.message.startswith(says) and "\n" not in job.end.message
        assert "reconnect" in job.end.message
        with pytest.raises(EngineDied):
            job.future.result()
        assert died == [job.end.message]
        # What streamed is kept, and saved as a run that ended in error.
        assert isinstance(events[0], Started) and not any(isinstance(e, Finished) for e in events)
        trace = RunTrace(events[0])
        for event in events[1:]:
            trace.apply(event)
        close_record(trace, job.end.reason, job.end.message)
        assert trace.n_generated >= 3
        save_session(Session([trace]), tmp_path / "partial.optsession")
        saved = load_session(tmp_path / "partial.optsession").runs[0]
        assert saved.finished.reason == "error" and saved.generated_ids == trace.generated_ids
        # Reconnect: a new connection, the model loaded again.
        engine.restart()
        engine.load(LoadRequest(source=str(checkpoint), device="cpu")).result(180)
        again = engine.generate(GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=2)),
                                lambda e: None).result(60)
        assert again.n_tokens == 2
    finally:
        engine.shutdown()
        engine.join(10)


def test_one_heads_attention_over_ssh_equals_the_rows_a_run_keeps_here(remote, local):
    """The attention view's matrix for a run made on a server: computed there, teacher-forced under the
    run's head mask and hidden positions, equal to what a run here keeps."""
    from opt_desktop.engine import HeadScale, InspectSettings
    from opt_desktop.engine.messages.requests import HeadRowsRequest

    engine, _ = remote
    masked = (HeadScale(layer=0, head=1, scale=0.0),)
    request = GenerationRequest(prompt=PROMPT, settings=GenerationSettings(max_new_tokens=70),
                                head_mask=masked, hidden_positions=(2,),
                                inspect=InspectSettings(keep_attention_rows=True))
    events = []
    local.generate(request, events.append).result(120)
    trace = RunTrace(events[0])
    for event in events[1:]:
        trace.apply(event)
    kept = trace.attention_matrix(1, 0)
    ask = trace.lens_request()
    for L, H in ((1, 0), (0, 1)):
        head = HeadRowsRequest(ask["token_ids"], L, H, ask["hidden_positions"], ask["mask_schedule"])
        there = engine.submit(head).future.result(120)
        here = local.submit(head).future.result(120)
        np.testing.assert_allclose(there, here, atol=1e-6, equal_nan=True)
        # rows a run keeps are float16, and the prompt's come from SDPA's arithmetic
        np.testing.assert_allclose(there[:-1], trace.attention_matrix(L, H)[:-1], atol=2e-3, equal_nan=True)
    assert kept.shape == there.shape
