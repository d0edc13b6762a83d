"""The shared Hub cache, offline, against a cache folder built here; downloads that really cancel."""

import os
import subprocess
import sys
import threading
import time

import pytest

from hub_cache_fixture import COMMIT, SlowFetch, build_hub_cache, repo_folder
from opt_desktop.engine import LoadRequest, ModelLoadError
from opt_desktop.engine.loading import hub_cache
from opt_desktop.engine.messages.job_context import JobContext
from opt_desktop.engine.loading.hub_cache import (
    Download,
    DownloadCancelled,
    DownloadFailed,
    DownloadProgress,
    cached_models,
    cached_snapshot,
    delete_cached,
    hub_reachable,
    missing_parts,
    start_download,
)

REPO = "facebook/opt-125m"
OFFLINE = ("Cannot load facebook/opt-125m: offline mode is on (HF_HUB_OFFLINE=1) "
           "and the model is not in the local cache.")
UNREACHABLE = ("Cannot load facebook/opt-125m: the Hugging Face Hub is unreachable "
               "and the model is not in the local cache.")


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hub cache that huggingface_hub (and so the loader) uses for this test."""
    import huggingface_hub.constants

    folder = tmp_path / "hub"
    folder.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(folder))
    return folder


def test_a_cached_model_is_listed_complete(hub, checkpoint):
    snap = build_hub_cache(hub, REPO, checkpoint)
    models = cached_models()
    assert set(models) == {REPO}
    m = models[REPO]
    assert m.complete and m.snapshot == snap and m.revisions == (COMMIT,)
    assert m.size_on_disk == sum(f.stat().st_size for f in checkpoint.iterdir() if f.is_file())
    assert cached_snapshot(REPO) == snap


def test_a_partial_download_is_not_complete(hub, checkpoint):
    build_hub_cache(hub, REPO, checkpoint, skip=("model.safetensors",))
    assert not cached_models()[REPO].complete
    assert cached_snapshot(REPO) is None
    assert missing_parts(repo_folder(hub, REPO) / "snapshots" / COMMIT) == [
        "weights (*.safetensors or pytorch_model.bin)"]


def test_empty_or_absent_cache_lists_nothing(tmp_path):
    assert cached_models(tmp_path / "nowhere") == {}
    assert cached_snapshot(REPO, tmp_path / "nowhere") is None


def test_loads_by_hub_id_from_the_cache_with_its_revision(hub, checkpoint, family):
    from opt_desktop.engine.loading.loader import load_model

    build_hub_cache(hub, REPO, checkpoint)
    seen = []
    loaded = load_model(LoadRequest(source=REPO, device="cpu"), JobContext(on_event=seen.append))
    assert loaded.info.source == REPO and loaded.info.revision == COMMIT
    assert loaded.info.pre_layer_norm == (family == "pre")
    assert any("cache" in p.message for p in seen)


def test_a_pinned_revision_loads_that_commit_and_only_that(hub, checkpoint):
    """Re-running a saved run pins the commit it used; a commit that is not cached is not silently replaced."""
    from opt_desktop.engine.messages.errors import ModelLoadError
    from opt_desktop.engine.loading.loader import load_model

    build_hub_cache(hub, REPO, checkpoint)
    loaded = load_model(LoadRequest(source=REPO, device="cpu", revision=COMMIT))
    assert loaded.info.revision == COMMIT
    with pytest.raises(ModelLoadError, match="not in the local cache"):
        load_model(LoadRequest(source=REPO, device="cpu", revision="f" * 40))


def test_cache_location_follows_hf_home(tmp_path, checkpoint):
    """HF_HOME set before huggingface_hub is imported, as a person (or another tool) sets it."""
    build_hub_cache(tmp_path / "hub", REPO, checkpoint)
    code = "from opt_desktop.engine.loading.hub_cache import cached_models, cache_dir; print(cache_dir(), sorted(cached_models()))"
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == f"{tmp_path / 'hub'} ['{REPO}']", out.stderr


def test_delete_removes_every_revision(hub, checkpoint):
    build_hub_cache(hub, REPO, checkpoint)
    build_hub_cache(hub, "facebook/opt-350m", checkpoint)
    freed = delete_cached(REPO)
    assert freed > 0
    assert not repo_folder(hub, REPO).exists()
    assert set(cached_models()) == {"facebook/opt-350m"}  # the other model stays
    assert delete_cached(REPO) == 0


def test_delete_clears_a_repo_holding_only_partial_files(hub):
    blobs = repo_folder(hub, REPO) / "blobs"
    blobs.mkdir(parents=True)
    (repo_folder(hub, REPO) / "snapshots").mkdir()
    (blobs / "abc.incomplete").write_bytes(b"half")
    delete_cached(REPO)
    assert not repo_folder(hub, REPO).exists()


def test_not_cached_and_offline_fails_fast_with_a_clear_message(hub):
    from opt_desktop.engine.loading.loader import locate

    t0 = time.monotonic()
    with pytest.raises(ModelLoadError) as info:
        locate(LoadRequest(source=REPO))
    assert time.monotonic() - t0 < 1.0
    assert str(info.value) == OFFLINE  # says which variable turned the network off


def test_not_cached_and_no_answer_says_the_hub_is_unreachable(hub, monkeypatch):
    import huggingface_hub.constants

    from opt_desktop.engine.loading import hub_cache
    from opt_desktop.engine.loading.loader import locate

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_cache, "hub_reachable", lambda timeout=2.0: False)
    with pytest.raises(ModelLoadError) as info:
        locate(LoadRequest(source=REPO))
    assert str(info.value) == UNREACHABLE


def test_hub_reachable_offline_answers_at_once():
    t0 = time.monotonic()
    assert hub_reachable() is False  # tests run with HF_HUB_OFFLINE=1
    assert time.monotonic() - t0 < 0.1


def test_hub_reachable_online_never_waits_past_its_timeout(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    # An address that never answers (TEST-NET-1, RFC 5737): only the timeout can end the wait.
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://192.0.2.1")
    t0 = time.monotonic()
    assert hub_reachable(timeout=0.5) is False
    assert time.monotonic() - t0 < 1.0


def test_check_folder_says_what_is_missing(tmp_path, checkpoint):
    from opt_desktop.engine.loading.loader import check_folder

    assert check_folder(checkpoint) is None
    assert check_folder(tmp_path / "none") == f"No such folder: {tmp_path / 'none'}"
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in checkpoint.iterdir():
        if f.name not in ("vocab.json", "merges.txt", "tokenizer.json"):
            (partial / f.name).write_bytes(f.read_bytes())
    message = check_folder(partial)
    assert "no tokenizer files" in message and "vocab.json and merges.txt" in message
    (partial / "config.json").write_text('{"model_type": "llama"}')
    assert "not an OPT checkpoint" in check_folder(partial)


# --- downloads -------------------------------------------------------------------------------------

def test_progress_rate_and_time_left():
    p = DownloadProgress(done=50 * 2**20, total=250 * 2**20, elapsed=10.0)
    assert p.rate == 5 * 2**20 and p.fraction == pytest.approx(0.2) and p.eta == pytest.approx(40.0)
    assert DownloadProgress().eta is None and DownloadProgress().fraction is None


def test_cancel_stops_the_download_and_removes_partial_files(tmp_path):
    hub = tmp_path / "hub"
    other = repo_folder(hub, REPO) / "blobs" / "other-tool.incomplete"  # someone else's download
    other.parent.mkdir(parents=True)
    other.write_bytes(b"theirs")
    fetch = SlowFetch()
    download = start_download(REPO, cache=hub, fetch=fetch)
    deadline = time.monotonic() + 10
    while download.progress.done < 5 * fetch.chunk and time.monotonic() < deadline:
        time.sleep(0.01)
    p = download.progress
    assert p.done > 0 and p.total == fetch.total and p.rate > 0 and p.eta is not None
    assert download.state == "running"
    assert (repo_folder(hub, REPO) / "blobs" / "deadbeef.1234.incomplete").exists()

    download.cancel()
    assert download.wait(5.0)
    written = fetch.written
    time.sleep(0.1)
    assert fetch.written == written  # really stopped
    assert download.state == "cancelled" and download.error is None and download.folder is None
    assert sorted(p.name for p in hub.rglob("*.incomplete")) == ["other-tool.incomplete"]
    assert not [t for t in threading.enumerate() if t.name.startswith("opt-download")]


def test_a_download_is_a_job_on_an_executor_reporting_progress_from_its_worker(tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    fetch, seen = SlowFetch(), []
    executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opt-test-worker")
    download = start_download(REPO, cache=tmp_path / "hub", fetch=fetch, executor=executor,
                              on_progress=lambda p: seen.append((threading.current_thread().name, p)))
    deadline = time.monotonic() + 10
    while len(seen) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert len(seen) >= 3 and all(name.startswith("opt-test-worker") for name, _ in seen)
    assert [p.done for _, p in seen] == sorted(p.done for _, p in seen) and seen[-1][1].total == fetch.total
    download.cancel()
    with pytest.raises(DownloadCancelled):
        download.future.result(5)
    assert download.state == "cancelled" and not list(tmp_path.rglob("*.incomplete"))
    executor.shutdown(wait=True)


def test_a_failed_download_ends_its_future_with_one_line_and_keeps_the_cause(tmp_path):
    download = start_download(REPO, cache=tmp_path / "hub")
    with pytest.raises(DownloadFailed) as info:
        download.future.result(10)
    assert str(info.value) == "Cannot download facebook/opt-125m: the Hugging Face Hub is unreachable."
    assert info.value.__cause__ is not None  # the original error, for the log's traceback


def test_download_of_a_cached_model_finishes_offline(tmp_path, checkpoint):
    snap = build_hub_cache(tmp_path / "hub", REPO, checkpoint)
    download = start_download(REPO, cache=tmp_path / "hub")
    assert download.wait(30)
    assert download.state == "done" and download.folder == snap


def test_download_offline_and_not_cached_fails_with_one_line(tmp_path):
    download = Download(REPO, cache=tmp_path / "hub").start()
    assert download.wait(5)
    assert download.state == "failed"
    assert download.error == "Cannot download facebook/opt-125m: the Hugging Face Hub is unreachable."


def test_download_stop_raises_inside_the_progress_bar():
    stop = threading.Event()
    seen = []
    bar = hub_cache.byte_tqdm(seen.append, stop)(total=100, unit="B")
    bar.update(10)
    assert seen and seen[-1].n == 10
    stop.set()
    with pytest.raises(hub_cache.DownloadCancelled):
        bar.update(10)
    bar.close()
