"""The shared Hub cache and the Hub probe, offline, against a cache folder built here."""

import os
import subprocess
import sys
import time

import pytest

from hub_cache_fixture import COMMIT, build_hub_cache, repo_folder
from opt_desktop.engine import LoadRequest, ModelLoadError
from opt_desktop.engine.loading.folder_check import check_folder, missing_parts
from opt_desktop.engine.loading.hub_cache import cached_models, cached_snapshot, delete_cached
from opt_desktop.engine.loading.hub_probe import hub_reachable
from opt_desktop.engine.messages.errors import HubUnreachableError
from opt_desktop.engine.messages.job_context import JobContext

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
    with pytest.raises(HubUnreachableError) as info:  # a ModelLoadError a front end can offer the demo for
        locate(LoadRequest(source=REPO))
    assert time.monotonic() - t0 < 1.0
    assert str(info.value) == OFFLINE  # says which variable turned the network off


def test_not_cached_and_no_answer_says_the_hub_is_unreachable(hub, monkeypatch):
    import huggingface_hub.constants

    from opt_desktop.engine.loading import hub_probe
    from opt_desktop.engine.loading.loader import locate

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub_probe, "hub_reachable", lambda timeout=2.0: False)
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
    assert check_folder(checkpoint)["model_type"] == "opt"
    with pytest.raises(ModelLoadError, match="^No such folder: "):
        check_folder(tmp_path / "none")
    partial = tmp_path / "partial"
    partial.mkdir()
    for f in checkpoint.iterdir():
        if f.name not in ("vocab.json", "merges.txt", "tokenizer.json"):
            (partial / f.name).write_bytes(f.read_bytes())
    with pytest.raises(ModelLoadError) as info:
        check_folder(partial)
    assert "no tokenizer files" in str(info.value) and "vocab.json and merges.txt" in str(info.value)
    (partial / "config.json").write_text('{"model_type": "llama"}')
    with pytest.raises(ModelLoadError, match="not an OPT checkpoint"):
        check_folder(partial)


def test_check_folder_agrees_with_the_loader(tmp_path, checkpoint):
    """The torch-free check refuses what a load refuses, with the same line."""
    from opt_desktop.engine.loading.loader import locate

    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    for folder in (broken, tmp_path / "absent", checkpoint):
        try:
            check_folder(folder)
            checked = None
        except ModelLoadError as exc:
            checked = str(exc)
        try:
            locate(LoadRequest(source=str(folder), device="cpu"))
            located = None
        except ModelLoadError as exc:
            located = str(exc)
        assert checked == located


def test_check_folder_imports_no_torch(checkpoint):
    code = ("import sys\nfrom opt_desktop.engine.loading.folder_check import check_folder\n"
            f"check_folder({str(checkpoint)!r})\nprint('torch' in sys.modules, 'transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["False", "False"], out.stderr
