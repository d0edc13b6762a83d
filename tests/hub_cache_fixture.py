"""A Hugging Face Hub cache folder laid out the way huggingface_hub leaves it after a download."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def repo_folder(hub: Path, repo_id: str) -> Path:
    return hub / ("models--" + repo_id.replace("/", "--"))


def build_hub_cache(hub: Path, repo_id: str, checkpoint: Path, commit: str = COMMIT,
                    skip: tuple[str, ...] = ()) -> Path:
    """Copy `checkpoint`'s files into `hub` as blobs named by their hash, with the snapshot's
    relative symlinks and refs/main, like a real download. Returns the snapshot folder."""
    repo = repo_folder(hub, repo_id)
    snap = repo / "snapshots" / commit
    blobs = repo / "blobs"
    for folder in (snap, blobs, repo / "refs"):
        folder.mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    for f in sorted(checkpoint.iterdir()):
        if not f.is_file() or f.name in skip:
            continue
        data = f.read_bytes()
        blob = blobs / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snap / f.name
        if link.exists() or link.is_symlink():
            link.unlink()
        os.symlink(os.path.relpath(blob, snap), link)
    return snap


class SlowFetch:
    """Writes a blob chunk by chunk the way huggingface_hub does (a `.incomplete` file, a tqdm
    update per chunk) but never finishes by itself, and like an older huggingface_hub or an
    interrupted Xet transfer, does not clean up after itself."""

    def __init__(self, chunk=64 * 1024, total=10**9):
        self.chunk, self.total = chunk, total
        self.written = 0

    def __call__(self, repo_id, *, tqdm_class, cache=None, revision=None):
        if cache is None:  # the loader fetches into the shared cache
            from huggingface_hub import constants

            cache = constants.HF_HUB_CACHE
        blobs = repo_folder(Path(cache), repo_id) / "blobs"
        blobs.mkdir(parents=True, exist_ok=True)
        bar = tqdm_class(total=self.total, unit="B", desc="Downloading bytes")
        with open(blobs / "deadbeef.1234.incomplete", "wb") as f:
            while self.written < self.total:
                f.write(b"x" * self.chunk)
                self.written += self.chunk
                bar.update(self.chunk)
                time.sleep(0.005)
        raise AssertionError("the fake download should have been cancelled")
