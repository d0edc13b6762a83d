"""The shared Hugging Face cache: what is in it, and deleting from it (no network, no torch, no Qt).

Everything goes through huggingface_hub and its cache (HF_HOME / HF_HUB_CACHE), so a model fetched
here is not fetched again by other tools, and the other way round. Reaching the Hub is hub_probe.py;
downloading into the cache is hub_download.py.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from .folder_check import missing_parts


def cache_dir() -> Path:
    """The Hub cache huggingface_hub uses (HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub)."""
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def repo_folder(repo_id: str, cache: str | Path | None = None) -> Path:
    """Where huggingface_hub keeps `repo_id`'s blobs and snapshots in `cache` (default: the shared one)."""
    return Path(cache if cache is not None else cache_dir()) / ("models--" + repo_id.replace("/", "--"))


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
