"""Downloads are engine jobs: the same stop, progress and end as any job, in this process or the engine's."""

import threading
import time

import pytest

from hub_cache_fixture import SlowFetch, build_hub_cache, repo_folder
from opt_desktop.engine import EngineService
from opt_desktop.engine.jobs.job import JobProgress
from opt_desktop.engine.loading import hub_download
from opt_desktop.engine.messages.errors import DownloadError, JobCancelled
from opt_desktop.engine.messages.job_context import JobContext
from opt_desktop.engine.messages.requests import DownloadRequest
from opt_desktop.engine.messages.results import Downloaded

REPO = "facebook/opt-125m"
OFFLINE_LINE = "Cannot download facebook/opt-125m: the Hugging Face Hub is unreachable."


@pytest.fixture
def service():
    svc = EngineService()
    yield svc
    svc.shutdown()


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def test_a_download_is_a_job_that_reports_bytes_from_the_worker(service, tmp_path, monkeypatch):
    fetch, seen = SlowFetch(), []
    monkeypatch.setattr(hub_download, "fetch_snapshot", fetch)
    job = service.submit(DownloadRequest(REPO, cache=str(tmp_path / "hub")),
                         on_event=lambda e: seen.append((threading.current_thread().name, e)))
    assert job.kind == "download"
    wait_for(lambda: len(seen) >= 3)
    job.stop()
    end = job.wait(5)
    events = [e for _, e in seen]
    assert all(isinstance(e, JobProgress) for e in events)
    assert all(name == "opt-engine-worker" for name, _ in seen)  # the engine's one worker, like every job
    assert [e.done for e in events] == sorted(e.done for e in events) and events[-1].total == fetch.total
    assert end.reason == "cancelled"


def test_a_stop_ends_it_cancelled_and_removes_only_its_partial_files(service, tmp_path, monkeypatch):
    hub = tmp_path / "hub"
    other = repo_folder(hub, REPO) / "blobs" / "other-tool.incomplete"  # someone else's download
    other.parent.mkdir(parents=True)
    other.write_bytes(b"theirs")
    fetch, seen = SlowFetch(), []
    monkeypatch.setattr(hub_download, "fetch_snapshot", fetch)
    job = service.submit(DownloadRequest(REPO, cache=str(hub)), on_event=seen.append)
    wait_for(lambda: fetch.written >= 5 * fetch.chunk)
    assert (repo_folder(hub, REPO) / "blobs" / "deadbeef.1234.incomplete").exists()

    job.stop()
    end = job.wait(5)
    written = fetch.written
    time.sleep(0.1)
    assert fetch.written == written  # really stopped
    assert end.reason == "cancelled" and end.details == ""  # no traceback for a stop
    assert end.message == f"Download of {REPO} stopped; its partial files were removed."
    with pytest.raises(JobCancelled):
        job.future.result(0)
    assert sorted(p.name for p in hub.rglob("*.incomplete")) == ["other-tool.incomplete"]
    wait_for(lambda: not [t for t in threading.enumerate() if t.name.startswith("opt-download")], 2.0)


def test_a_failed_download_ends_with_one_line_and_keeps_the_cause(service, tmp_path):
    job = service.submit(DownloadRequest(REPO, cache=str(tmp_path / "hub")))  # offline, not cached
    end = job.wait(10)
    assert end.reason == "error" and end.message == OFFLINE_LINE
    exc = job.future.exception(0)
    assert isinstance(exc, DownloadError) and exc.__cause__ is not None  # the original, for the log
    assert "LocalEntryNotFoundError" in end.details


def test_downloading_a_cached_model_finishes_offline(service, tmp_path, checkpoint):
    snap = build_hub_cache(tmp_path / "hub", REPO, checkpoint)
    job = service.submit(DownloadRequest(REPO, cache=str(tmp_path / "hub")))
    end = job.wait(30)
    assert end.reason == "done"
    assert end.result == Downloaded(repo_id=REPO, folder=str(snap), bytes_fetched=0)


def test_a_download_needs_no_model_and_leaves_the_loaded_one_alone(engine, tmp_path, checkpoint):
    before = engine.info
    snap = build_hub_cache(tmp_path / "hub", REPO, checkpoint)
    end = engine.submit(DownloadRequest(REPO, cache=str(tmp_path / "hub"))).wait(30)
    assert end.reason == "done" and end.result.folder == str(snap)
    assert engine.info is before


def test_the_progress_bar_raises_job_cancelled_on_stop():
    job = JobContext()
    seen = []
    bar = hub_download.byte_tqdm(seen.append, job)(total=100, unit="B")
    bar.update(10)
    assert seen and seen[-1].n == 10
    job.stop()
    with pytest.raises(JobCancelled):
        bar.update(10)
    bar.close()


# --- in the engine process: the same job, its result and its end crossing the wire -------------------

def test_a_download_runs_in_the_engine_process(tmp_path, checkpoint):
    from opt_desktop.engine.process.engine_process import EngineProcess

    snap = build_hub_cache(tmp_path / "hub", REPO, checkpoint)
    engine = EngineProcess()
    try:
        done = engine.submit(DownloadRequest(REPO, cache=str(tmp_path / "hub")))
        end = done.wait(60)
        assert end.reason == "done" and end.result == Downloaded(REPO, str(snap), 0)
        failed = engine.submit(DownloadRequest(REPO, cache=str(tmp_path / "empty")))
        end = failed.wait(60)
        assert end.reason == "error" and end.message == OFFLINE_LINE
        assert isinstance(failed.future.exception(0), DownloadError)  # the same kind of error here
    finally:
        engine.shutdown()


# --- a load that has to download: a stop ends it "cancelled" too ------------------------------------

def test_a_load_stopped_while_it_downloads_ends_cancelled_and_leaves_no_partial_file(service, tmp_path,
                                                                                     monkeypatch):
    import huggingface_hub.constants

    from opt_desktop.engine import LoadRequest
    from opt_desktop.engine.loading import hub_probe

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub_probe, "hub_reachable", lambda timeout=2.0: True)
    fetch = SlowFetch()
    monkeypatch.setattr(hub_download, "fetch_snapshot", fetch)
    job = service.submit(LoadRequest(source=REPO, device="cpu"))
    wait_for(lambda: fetch.written >= 3 * fetch.chunk)
    job.stop()
    end = job.wait(5)
    assert end.reason == "cancelled" and end.details == ""
    assert end.message == f"Loading {REPO} was stopped."
    assert list((tmp_path / "hub").rglob("*.incomplete")) == []


def test_a_load_stopped_while_it_reads_the_weights_ends_cancelled(service, checkpoint, monkeypatch):
    from opt_desktop.engine import LoadRequest
    from opt_desktop.engine.loading import loader

    read = loader._load_weights

    def stop_while_reading(*args, **kwargs):
        service.stop()  # the person presses Stop while the weights are read
        return read(*args, **kwargs)

    monkeypatch.setattr(loader, "_load_weights", stop_while_reading)
    job = service.submit(LoadRequest(source=str(checkpoint), device="cpu"))
    end = job.wait(60)
    assert end.reason == "cancelled" and end.message == f"Loading {checkpoint} was stopped."
    assert service.info is None


# --- over HTTP, in the engine process: huggingface_hub itself against a Hub on 127.0.0.1 ----------------

@pytest.fixture
def engine_online(tmp_path, monkeypatch):
    """An engine process whose Hub is `hub` (a FakeHub) and whose shared cache is tmp_path/hf/hub."""
    from opt_desktop.engine.process.engine_process import EngineProcess

    made = []

    def start(hub):
        monkeypatch.setenv("HF_ENDPOINT", hub.start())
        monkeypatch.setenv("HF_HUB_OFFLINE", "0")  # the engine's, not this process's (already imported)
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
        made.append((hub, EngineProcess()))
        return made[-1][1]

    yield start
    for hub, engine in made:
        engine.shutdown()
        hub.stop()


def test_a_download_in_the_engine_process_sends_its_progress_and_the_model_then_loads(engine_online, tmp_path,
                                                                                    checkpoint):
    from fake_hub import COMMIT, FakeHub
    from opt_desktop.engine import LoadRequest

    hub = FakeHub.of_folder(REPO, checkpoint)
    engine = engine_online(hub)
    seen = []
    job = engine.submit(DownloadRequest(REPO), on_event=seen.append)
    end = job.wait(300)  # generous: the machine may be busy with other work
    assert end.reason == "done", end.message
    snapshot = tmp_path / "hf" / "hub" / "models--facebook--opt-125m" / "snapshots" / COMMIT
    assert end.result.repo_id == REPO and end.result.folder == str(snapshot)
    weights = len(hub.files["model.safetensors"])
    assert end.result.bytes_fetched >= weights
    progress = [e for e in seen if isinstance(e, JobProgress)]  # frames that crossed from the engine process
    assert progress and progress[-1].done == progress[-1].total == end.result.bytes_fetched
    assert [p.done for p in progress] == sorted(p.done for p in progress)
    assert {f.name for f in snapshot.iterdir()} == set(hub.files)

    loaded = engine.submit(LoadRequest(source=REPO, device="cpu")).wait(300)  # from the cache it filled
    assert loaded.reason == "done" and engine.info.source == REPO and engine.info.revision == COMMIT


def test_a_stop_reaches_a_download_in_the_engine_process(engine_online, tmp_path):
    from fake_hub import FakeHub

    size = 60 * 2**20  # huggingface_hub reports every 10 MiB (3 s apart here): a stop lands at the next report
    hub = FakeHub(REPO, {"config.json": b'{"model_type": "opt"}', "model.safetensors": bytes(size)},
                  slow={"model.safetensors": 0.02})
    engine = engine_online(hub)
    seen = []
    job = engine.submit(DownloadRequest(REPO), on_event=seen.append)
    wait_for(lambda: hub.sent.get("model.safetensors", 0) > 0 and any(
        isinstance(e, JobProgress) and e.done >= 10 * 2**20 for e in seen), 300)  # the weights are coming
    job.stop()
    end = job.wait(120)
    assert end.reason == "cancelled" and end.message == f"Download of {REPO} stopped; its partial files were removed."
    wait_for(lambda: "model.safetensors" in hub.dropped, 60)  # the engine hung up on the transfer...
    assert hub.sent["model.safetensors"] < size  # ...part-way
    assert list((tmp_path / "hf").rglob("*.incomplete")) == []
