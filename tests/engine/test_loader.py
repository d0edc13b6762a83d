"""Loading from a folder, from the Hub cache (offline), the demo, and every way it can fail."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from opt_desktop.engine import EngineService, LoadRequest, ModelLoadError
from opt_desktop.engine.running.attention import ATTN_IMPLEMENTATION
from opt_desktop.engine.loading.loader import load_model
from opt_desktop.engine.messages.job_context import JobContext

CLI = [sys.executable, "-m", "opt_desktop.cli"]


def test_demo_model_is_the_trained_one_and_says_so():
    loaded = load_model(LoadRequest(source="demo", device="cpu"))
    assert not loaded.info.random_weights
    assert "tiny model trained on Python's documentation (not OPT weights)" in loaded.info.label
    assert loaded.info.n_layers >= 2 and loaded.info.pre_layer_norm
    assert loaded.model.config._attn_implementation == ATTN_IMPLEMENTATION


def test_random_demo_model_is_labelled_random():
    loaded = load_model(LoadRequest(source="demo-random", device="cpu"))
    assert loaded.info.random_weights and "random weights" in loaded.info.label
    assert loaded.info.n_layers >= 2 and loaded.info.pre_layer_norm
    assert loaded.model.config._attn_implementation == ATTN_IMPLEMENTATION


@pytest.mark.parametrize("source", ["demo", "demo-random"])
def test_demo_models_are_the_same_every_time(source):
    a = load_model(LoadRequest(source=source, device="cpu")).model
    b = load_model(LoadRequest(source=source, device="cpu")).model
    assert all((pa == pb).all() for pa, pb in zip(a.parameters(), b.parameters()))


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_folder_loads_with_dtype(checkpoint, dtype):
    loaded = load_model(LoadRequest(source=str(checkpoint), dtype=dtype, device="cpu"))
    assert str(next(loaded.model.parameters()).dtype) == f"torch.{dtype}"
    assert loaded.info.dtype == dtype and loaded.info.device == "cpu"
    assert loaded.model.config._attn_implementation == ATTN_IMPLEMENTATION


def test_progress_is_reported(checkpoint):
    seen = []
    load_model(LoadRequest(source=str(checkpoint), device="cpu"), JobContext(on_event=seen.append))
    assert seen and seen[-1].fraction == 1.0


def _error(source, **kw) -> str:
    with pytest.raises(ModelLoadError) as info:
        load_model(LoadRequest(source=source, device="cpu", **kw))
    message = str(info.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def test_missing_folder(tmp_path):
    assert _error(str(tmp_path / "nope")) == f"No such folder: {tmp_path / 'nope'}"


def test_folder_without_config(tmp_path):
    assert "no config.json" in _error(str(tmp_path))


def test_not_an_opt_checkpoint(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    assert "not an OPT checkpoint" in _error(str(tmp_path)) and "gpt2" in _error(str(tmp_path))


def test_corrupt_config(tmp_path):
    (tmp_path / "config.json").write_text("{not json")
    assert "not valid JSON" in _error(str(tmp_path))


def test_folder_without_weights(tmp_path, checkpoint):
    (tmp_path / "config.json").write_text((checkpoint / "config.json").read_text())
    assert "no weights" in _error(str(tmp_path))


def test_a_file_is_not_a_folder(tmp_path):
    f = tmp_path / "model.bin"
    f.write_bytes(b"x")
    assert "is a file" in _error(str(f))


def test_cuda_without_gpu_is_a_clear_error():
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ModelLoadError, match="no CUDA GPU"):
        load_model(LoadRequest(source="demo", device="cuda"))


def test_failed_load_keeps_the_service_usable(checkpoint):
    svc = EngineService()
    try:
        svc.load(LoadRequest(source=str(checkpoint), device="cpu")).result()
        with pytest.raises(ModelLoadError):
            svc.load(LoadRequest(source="/definitely/not/here")).result()
        assert svc.info.source == str(checkpoint)  # a bad source leaves the current model in place
        assert svc.load(LoadRequest(source="demo", device="cpu")).result().source == "demo"
    finally:
        svc.shutdown()


# --- the Hub path, offline, against a cache folder built here ----------------------------------

def _hub_cache(home: Path, repo_id: str, checkpoint: Path) -> None:
    """Lay out HF_HOME/hub the way huggingface_hub leaves it after a download."""
    sha = "0123456789abcdef0123456789abcdef01234567"
    repo = home / "hub" / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / sha
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(sha)
    for f in checkpoint.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())


def _cli(args, home, offline=True):
    env = {**os.environ, "HF_HOME": str(home), "TRANSFORMERS_VERBOSITY": "error"}
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run(CLI + args, env=env, capture_output=True, text=True, timeout=240)


def test_hub_id_loads_from_the_offline_cache(tmp_path, checkpoint, family):
    _hub_cache(tmp_path, "facebook/opt-tiny", checkpoint)
    out = _cli(["info", "--model", "facebook/opt-tiny", "--device", "cpu"], tmp_path)
    assert out.returncode == 0, out.stderr
    assert "facebook/opt-tiny" in out.stdout
    assert ("pre-LN" if family == "pre" else "post-LN") in out.stdout


def test_hub_unreachable_and_not_cached(tmp_path):
    out = _cli(["info", "--model", "facebook/opt-125m"], tmp_path)
    assert out.returncode == 1
    assert out.stderr.strip() == ("error: Cannot load facebook/opt-125m: offline mode is on (HF_HUB_OFFLINE=1) "
                                  "and the model is not in the local cache.")


def test_download_progress_reports_bytes_and_honours_stop():
    """huggingface_hub drives the tqdm class it is given; ours turns bytes into LoadProgress."""
    import threading

    from opt_desktop.engine.loading.loader import _progress_tqdm
    from opt_desktop.engine.messages.errors import JobCancelled

    seen, stop = [], threading.Event()
    bars = _progress_tqdm(JobContext(on_event=seen.append, stop=stop), "facebook/opt-125m")
    bar = bars(desc="Downloading bytes", total=4 * 2**20, unit="B")
    rebuilt = bars(desc="Reconstructing (incomplete total...)", total=4 * 2**20, unit="B")  # the same bytes again
    bar.update(2**20)
    rebuilt.update(2**20)
    assert seen[-1].fraction == pytest.approx(0.25)
    assert seen[-1].message == "Downloading facebook/opt-125m: 1.0 MiB / 4.0 MiB"
    rebuilt.close()
    stop.set()
    with pytest.raises(JobCancelled):
        bar.update(2**20)
    bar.close()
