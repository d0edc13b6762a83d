"""The same fakes for an engine in this process and for one in a child process.

In this process a test applies a fake with monkeypatch; an engine process gets it from
`worker_command(...)`, which runs the given statements in the child before its worker starts.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

_TESTS = Path(__file__).parent


def worker_command(*setup: str) -> list[str]:
    """The engine worker's command, running `setup` (Python statements, with the tests' folders on
    the path) first."""
    paths = [str(_TESTS), str(_TESTS / "engine"), str(_TESTS / "gui")]
    code = "; ".join(["import sys", f"sys.path[:0] = {paths!r}", *setup,
                      "from opt_desktop.engine.process.worker import main", "sys.exit(main())"])
    return [sys.executable, "-c", code]


def endless_download(setattr=setattr) -> None:
    """Every Hub id is missing from the cache, the Hub is reachable, and a download goes on until
    it is stopped (reporting its bytes as it goes)."""
    from opt_desktop.engine.loading import hub_cache, hub_download, hub_probe

    def fetch(repo_id, *, tqdm_class, revision=None, cache=None):
        bar = tqdm_class(total=10**9, unit="B", desc="Downloading model.safetensors")
        while True:
            bar.update(4096)
            time.sleep(0.002)

    setattr(hub_cache, "cached_snapshot", lambda repo_id, revision=None, cache=None: None)
    setattr(hub_probe, "hub_reachable", lambda timeout=2.0: True)
    setattr(hub_download, "fetch_snapshot", fetch)


ENDLESS_DOWNLOAD = worker_command("import worker_patches", "worker_patches.endless_download()")
