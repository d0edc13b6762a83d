"""Downloading a checkpoint into the Hugging Face cache, as an engine job (no torch, no Qt).

`download(request, job)` is what the engine's worker runs for a DownloadRequest, so a download
happens where the engine runs (this process, the engine process, later a remote one) and reports
its bytes as the job's progress like any other job. A stop ends it at the next chunk as
"cancelled" (JobCancelled), and the partial files it left are removed before the job ends.
"""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Callable

from ..messages.errors import DownloadError, JobCancelled
from ..messages.job_context import STOPPED, JobContext
from ..messages.requests import DownloadRequest
from ..messages.results import Downloaded
from .hub_cache import repo_folder
from .hub_probe import UNREACHABLE

# What a Hub download needs. The weights come in a second step, so only one format comes down.
SMALL_FILES = ["config.json", "generation_config.json", "tokenizer*", "vocab.json", "merges.txt",
               "special_tokens_map.json"]
SAFETENSORS = ["*.safetensors", "*.safetensors.index.json"]
# Older OPT repos have only PyTorch .bin weights; transformers reads them with weights_only=True.
PYTORCH_BIN = ["pytorch_model*.bin", "pytorch_model*.json"]


def fetch_snapshot(repo_id: str, *, tqdm_class=None, cache: str | Path | None = None,
                   revision: str | None = None) -> Path:
    """Download (or find in the cache) what loading `repo_id` needs: small files, then one weights format.

    Raises huggingface_hub's errors (LocalEntryNotFoundError when offline and not cached, ...), and
    whatever `tqdm_class.update` raises to stop it.
    """
    from huggingface_hub import snapshot_download

    kw = dict(tqdm_class=tqdm_class, cache_dir=cache, revision=revision)
    snapshot_download(repo_id, allow_patterns=SMALL_FILES, **kw)
    folder = Path(snapshot_download(repo_id, allow_patterns=SAFETENSORS, **kw))
    if not any(folder.glob("*.safetensors")):
        folder = Path(snapshot_download(repo_id, allow_patterns=PYTORCH_BIN, **kw))
    return folder


def byte_tqdm(on_update: Callable[[object], None], job: JobContext):
    """A tqdm stand-in for huggingface_hub: reports every byte bar's position and raises
    JobCancelled inside the download loop once `job` is stopped (its `check()`)."""
    from tqdm.auto import tqdm

    class _Bytes(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # progress goes to the caller, not the terminal
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            job.check()
            out = super().update(n)
            if self.unit == "B":
                on_update(self)
            return out

        def close(self):
            super().close()
            try:
                self.fp.close()
            except Exception:
                pass

    return _Bytes


class BytePosition:
    """The download's position in bytes over huggingface_hub's bars. Each of its snapshot_download
    calls (small files, then weights) drives a transfer bar and a reconstruction bar with the same
    bytes: each kind is summed over the calls, and the further of the two is where the download is."""

    def __init__(self, report: Callable[[int, int], None]):
        self._report = report
        # bar -> (transfer bar?, n, total); the bar itself is the key, so a finished bar's id is never reused
        self._bars: dict[object, tuple[bool, int, int]] = {}
        self._lock = threading.Lock()  # huggingface_hub fetches files on several threads
        self.done = 0

    def update(self, bar) -> None:
        with self._lock:
            transfer = (bar.desc or "").lower().startswith("download")
            self._bars[bar] = (transfer, int(bar.n), int(bar.total or 0))
            kinds = [[(n, t) for k, n, t in self._bars.values() if k is kind] for kind in (True, False)]
            done = max(sum(n for n, _ in bars) for bars in kinds)
            total = max(max(sum(t for _, t in bars) for bars in kinds), done)
            self.done = done
            self._report(done, total)  # under the lock: reports from several threads stay in order


def download(request: DownloadRequest, job: JobContext) -> Downloaded:
    """Fetch `request.repo_id` into the cache as the engine job `job` (its stop, its progress(done,
    total) in bytes). Ends with Downloaded, JobCancelled (stopped) or DownloadError (one line; the
    original error is its __cause__, for the log)."""
    repo_id = request.repo_id
    position = BytePosition(job.progress)
    try:
        with stoppable(repo_id, job, request.cache):
            folder = fetch_snapshot(repo_id, tqdm_class=byte_tqdm(position.update, job),
                                    cache=request.cache, revision=request.revision)
    except JobCancelled:
        raise JobCancelled(f"Download of {repo_id} stopped; its partial files were removed.") from None
    except Exception as exc:  # noqa: BLE001 - the job ends with one line; the cause is kept for the log
        raise DownloadError(download_error(repo_id, exc)) from exc
    return Downloaded(repo_id=repo_id, folder=str(folder), bytes_fetched=position.done)


@contextmanager
def stoppable(repo_id: str, job: JobContext, cache: str | Path | None = None):
    """Around a fetch of `repo_id` whose progress bars raise on the job's stop (byte_tqdm): Xet
    transfers, which run in Rust and never see the bar raise, are aborted when `job` is stopped; and whatever ends
    the fetch early, the partial files it left are removed (another tool's download is left alone).
    A stop that ends the fetch surfaces as JobCancelled, whatever huggingface_hub wrapped it in."""
    stop = job.stop_event
    blobs = repo_folder(repo_id, cache) / "blobs"
    before = set(blobs.glob("*.incomplete"))
    ended = threading.Event()

    def watch() -> None:  # a Job's stop is a bare Event: waiting on it is the only way to hear it
        while not ended.is_set():
            if stop.wait(0.2):
                if not ended.is_set():
                    _abort_xet()
                return

    threading.Thread(target=watch, name="opt-download-stop", daemon=True).start()
    try:
        yield
    except BaseException:
        for path in set(blobs.glob("*.incomplete")) - before:
            try:
                path.unlink()
            except OSError:
                pass
        if stop.is_set():
            raise JobCancelled(STOPPED) from None
        raise
    finally:
        ended.set()


def _abort_xet() -> None:
    try:
        from huggingface_hub.utils._xet import abort_xet_session
    except ImportError:
        return
    try:
        abort_xet_session()
    except Exception:  # noqa: BLE001 - aborting is best effort; the bar's raise ends plain transfers
        pass


def download_error(repo_id: str, exc: BaseException) -> str:
    """huggingface_hub's exceptions as one line a person can act on."""
    from huggingface_hub.errors import (
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    if isinstance(exc, GatedRepoError):  # a subclass of RepositoryNotFoundError: test it first
        return f"{repo_id} is gated on the Hub: log in with `hf auth login` and accept its licence."
    if isinstance(exc, (RepositoryNotFoundError, HFValidationError)):
        return f"{repo_id} is not a model on the Hugging Face Hub."
    if isinstance(exc, RevisionNotFoundError):
        return f"{repo_id}: the requested revision does not exist on the Hub."
    if isinstance(exc, LocalEntryNotFoundError):
        return f"Cannot download {repo_id}: {UNREACHABLE}."
    text = str(exc).strip().splitlines()
    return f"Cannot download {repo_id}: {text[0] if text else type(exc).__name__}"
