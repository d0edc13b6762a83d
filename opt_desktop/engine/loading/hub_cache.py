"""The shared Hugging Face cache: what is in it, downloading into it off the GUI thread (a job on an
executor, with progress and a real Cancel), deleting from it, and whether the Hub can be reached at all.

Everything goes through huggingface_hub and its cache (HF_HOME / HF_HUB_CACHE), so a model fetched
here is not fetched again by other tools, and the other way round. No torch, no Qt.
"""

from __future__ import annotations

import dataclasses
import os
import threading
import time
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal

# What a Hub download needs. The weights come in a second step, so only one format comes down.
SMALL_FILES = ["config.json", "generation_config.json", "tokenizer*", "vocab.json", "merges.txt",
               "special_tokens_map.json"]
SAFETENSORS = ["*.safetensors", "*.safetensors.index.json"]
# Older OPT repos have only PyTorch .bin weights; transformers reads them with weights_only=True.
PYTORCH_BIN = ["pytorch_model*.bin", "pytorch_model*.json"]

UNREACHABLE = "the Hugging Face Hub is unreachable"


def cache_dir() -> Path:
    """The Hub cache huggingface_hub uses (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


# --- what a checkpoint folder holds -------------------------------------------------------------

def missing_parts(folder: Path) -> list[str]:
    """What an OPT checkpoint folder lacks to be loaded, in words; empty when it is complete."""
    import json

    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    index = next(iter(folder.glob("*.index.json")), None)
    if index is not None:
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            shards = set()
        if not shards or any(not (folder / s).is_file() for s in shards):
            missing.append(f"weight shards listed in {index.name}")
    elif not any(folder.glob("*.safetensors")) and not any(folder.glob("pytorch_model*.bin")):
        missing.append("weights (*.safetensors or pytorch_model.bin)")
    if not (folder / "tokenizer.json").is_file() and not (
            (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        missing.append("tokenizer files (tokenizer.json, or vocab.json and merges.txt)")
    return missing


# --- what the cache holds -------------------------------------------------------------------------

@dataclass(frozen=True)
class CachedModel:
    repo_id: str
    size_on_disk: int
    revisions: tuple[str, ...]  # commit hashes held in the cache
    snapshot: Path | None  # a snapshot with everything needed to load, if one is there

    @property
    def complete(self) -> bool:
        return self.snapshot is not None


def cached_models(cache: str | Path | None = None) -> dict[str, CachedModel]:
    """Every model repo in the cache, by id. An absent cache folder is an empty cache."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache if cache is not None else cache_dir())
    except (CacheNotFound, ValueError, OSError):
        return {}
    out = {}
    for repo in info.repos:
        if repo.repo_type != "model":
            continue
        revisions = sorted(repo.revisions, key=lambda r: r.last_modified, reverse=True)
        # Prefer the snapshot `main` points at, then the newest complete one.
        revisions.sort(key=lambda r: "main" not in r.refs)
        snapshot = next((r.snapshot_path for r in revisions if not missing_parts(r.snapshot_path)), None)
        out[repo.repo_id] = CachedModel(repo_id=repo.repo_id, size_on_disk=repo.size_on_disk,
                                        revisions=tuple(r.commit_hash for r in revisions), snapshot=snapshot)
    return out


def cached_snapshot(repo_id: str, cache: str | Path | None = None, revision: str | None = None) -> Path | None:
    """The cached snapshot of `repo_id` at `revision` (default `main`), when it holds all a load needs;
    no network."""
    from huggingface_hub import try_to_load_from_cache

    try:
        config = try_to_load_from_cache(repo_id, "config.json", cache_dir=cache, revision=revision)
    except ValueError:  # not a valid repo id
        return None
    if not isinstance(config, str):
        return None
    folder = Path(config).parent
    return None if missing_parts(folder) else folder


def delete_cached(repo_id: str, cache: str | Path | None = None) -> int:
    """Delete every cached revision of `repo_id` with huggingface_hub's delete strategy; bytes freed."""
    import shutil

    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(cache if cache is not None else cache_dir())
    except (CacheNotFound, ValueError, OSError):
        return 0
    repo = next((r for r in info.repos if r.repo_id == repo_id and r.repo_type == "model"), None)
    if repo is None:
        return 0
    freed = 0
    if repo.revisions:
        # Commit hashes are meant to be unique across repos; a cache view holding only this repo makes sure.
        only = dataclasses.replace(info, repos=frozenset({repo}))
        strategy = only.delete_revisions(*(r.commit_hash for r in repo.revisions))
        freed = strategy.expected_freed_size
        strategy.execute()
    if repo.repo_path.exists():  # only partial downloads were left: no revision to delete
        shutil.rmtree(repo.repo_path, ignore_errors=True)
    return freed


# --- the network ----------------------------------------------------------------------------------

def unreachable_reason() -> str:
    """Why the Hub is not being asked: offline mode (naming the variable that set it) or no answer."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
            value = os.environ.get(name, "")
            if value.strip().upper() in ("1", "ON", "YES", "TRUE"):
                return f"offline mode is on ({name}={value})"
        return "offline mode is on"
    return UNREACHABLE


def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hub answers within `timeout` seconds. False at once with HF_HUB_OFFLINE=1.

    The request runs on a daemon thread and is abandoned at the deadline, so a slow DNS lookup
    (which ignores socket timeouts) cannot hold the caller longer than `timeout`.
    """
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return False
    answer: list[bool] = []

    def probe() -> None:
        from huggingface_hub.utils import get_session

        try:
            get_session().head(constants.ENDPOINT, timeout=timeout, follow_redirects=False)
            answer.append(True)  # any HTTP answer, even an error status, means the Hub is there
        except Exception:  # offline mode, DNS, refused, timeout, proxy: all mean "not now"
            answer.append(False)

    # A daemon thread, not an executor: a probe stuck in DNS is abandoned, where an executor's thread
    # would hold up the interpreter's exit until it ended.
    thread = threading.Thread(target=probe, name="opt-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer and answer[0])


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


# --- a download, as a job on an executor ------------------------------------------------------------

class DownloadCancelled(Exception):
    """Raised inside huggingface_hub's download loop to stop it."""


@dataclass(frozen=True)
class DownloadProgress:
    done: int = 0  # bytes
    total: int = 0  # bytes known so far (grows as files start)
    elapsed: float = 0.0  # seconds

    @property
    def rate(self) -> float:
        """Bytes a second, averaged over the download so far."""
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None

    @property
    def eta(self) -> float | None:
        """Seconds left at the current rate; None while unknown."""
        if not self.total or self.rate <= 0:
            return None
        return max(0.0, (self.total - self.done) / self.rate)


DownloadState = Literal["running", "cancelling", "done", "cancelled", "failed"]
FetchFn = Callable[..., Path]


def byte_tqdm(on_update: Callable[[object], None], stop: threading.Event):
    """A tqdm stand-in for huggingface_hub: reports every byte bar's position and raises on stop."""
    from tqdm.auto import tqdm

    class _Bytes(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # progress goes to the caller, not the terminal
            super().__init__(*args, **kwargs)

        def update(self, n=1):
            if stop.is_set():
                raise DownloadCancelled
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


class DownloadFailed(Exception):
    """A download ended with an error; str() is one line a person can act on, __cause__ the original."""


ProgressFn = Callable[[DownloadProgress], None]


class Download:
    """Fetch one repo into the shared cache as a job on an executor.

    `future` (a concurrent.futures.Future, there once started) resolves to the snapshot folder, or
    raises DownloadCancelled or DownloadFailed; a GUI awaits it (`asyncio.wrap_future`). Progress goes
    to `on_progress` on the worker thread (the caller hops it to its own thread) and is readable as
    `progress` from any thread. `cancel()` stops it at the next chunk; the partial files it left are
    removed before the future resolves.
    """

    def __init__(self, repo_id: str, *, cache: str | Path | None = None, fetch: FetchFn = fetch_snapshot,
                 on_progress: ProgressFn | None = None):
        self.repo_id = repo_id
        self._cache = Path(cache) if cache is not None else None
        self._fetch = fetch
        self._on_progress = on_progress
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._bars: dict[int, tuple[int, int]] = {}  # id(bar) -> (n, total)
        self._t0 = 0.0
        self._progress = DownloadProgress()
        self._state: DownloadState = "running"
        self._own_executor: ThreadPoolExecutor | None = None
        self.future: Future | None = None
        self.error: str | None = None
        self.folder: Path | None = None

    # --- readable from any thread ----------------------------------------------------------------

    @property
    def progress(self) -> DownloadProgress:
        return self._progress

    @property
    def state(self) -> DownloadState:
        return self._state

    def done(self) -> bool:
        return self._state in ("done", "cancelled", "failed")

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the download has ended (True) or `timeout` seconds have passed (False)."""
        if self.future is None:
            return True
        finished, _ = wait_futures([self.future], timeout)
        if finished and self._own_executor is not None:
            self._own_executor.shutdown(wait=True)  # its one thread is ending now: let it go
        return bool(finished)

    # --- control ---------------------------------------------------------------------------------

    def start(self, executor: Executor | None = None) -> "Download":
        """Submit the download to `executor`, or to a one-thread executor of its own."""
        self._t0 = time.monotonic()
        if executor is None:
            executor = self._own_executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="opt-download")
        self.future = executor.submit(self._run)
        if self._own_executor is not None:
            self._own_executor.shutdown(wait=False)  # no more work: its thread ends with the download
        return self

    def cancel(self) -> None:
        if self.done():
            return
        self._state = "cancelling"
        self._stop.set()
        _abort_xet()

    # --- the worker --------------------------------------------------------------------------------

    def _on_update(self, bar) -> None:
        with self._lock:
            self._bars[id(bar)] = (int(bar.n), int(bar.total or 0))
            # huggingface_hub drives a transfer bar and a reconstruction bar with the same bytes:
            # the furthest one is the download's position.
            done = max(n for n, _ in self._bars.values())
            total = max(t for _, t in self._bars.values())
            self._progress = progress = DownloadProgress(done=done, total=max(total, done),
                                                         elapsed=time.monotonic() - self._t0)
        if self._on_progress is not None:
            self._on_progress(progress)

    def _repo_folder(self) -> Path:
        from huggingface_hub import constants

        base = self._cache if self._cache is not None else Path(constants.HF_HUB_CACHE)
        return base / ("models--" + self.repo_id.replace("/", "--"))

    def _partials(self) -> set[Path]:
        return set((self._repo_folder() / "blobs").glob("*.incomplete"))

    def _run(self) -> Path:
        before = self._partials()  # another tool's download in progress is not ours to remove
        try:
            folder = Path(self._fetch(self.repo_id, tqdm_class=byte_tqdm(self._on_update, self._stop),
                                      cache=self._cache))
        except BaseException as exc:  # noqa: BLE001 - the future carries one line; the cause is kept for the log
            for path in self._partials() - before:
                try:
                    path.unlink()
                except OSError:
                    pass
            if isinstance(exc, DownloadCancelled) or self._stop.is_set():
                self._state = "cancelled"
                raise DownloadCancelled(f"Download of {self.repo_id} cancelled.") from None
            self.error = download_error(self.repo_id, exc)
            self._state = "failed"
            raise DownloadFailed(self.error) from exc
        self.folder = folder
        self._state = "done"
        return folder


def start_download(repo_id: str, *, cache: str | Path | None = None, fetch: FetchFn = fetch_snapshot,
                   on_progress: ProgressFn | None = None, executor: Executor | None = None) -> Download:
    """Start fetching `repo_id` into the shared cache (on `executor`, else a thread of its own)."""
    return Download(repo_id, cache=cache, fetch=fetch, on_progress=on_progress).start(executor)


def _abort_xet() -> None:
    """Xet transfers run in Rust and do not see the progress callback raise: abort them too.

    huggingface_hub does the same on Ctrl+C; the next download starts a fresh Xet session.
    """
    try:
        from huggingface_hub.utils._xet import abort_xet_session
    except ImportError:
        return
    try:
        abort_xet_session()
    except Exception:
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
