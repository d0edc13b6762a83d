"""A pytest plugin (pyproject.toml's addopts load it): when the bundle's smoke test is among the
collected tests, the bundle starts building in the background at once, at the lowest priority, so
PyInstaller's minutes overlap the rest of the suite instead of following it; tests/test_bundle.py
waits for it. With the smoke test deselected (`-m "not bundle"`, a -k, a single file), nothing starts.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NAME = "OPT Desktop"  # packaging/build_bundle.py's NAME
# The lowest priority: the build takes only the cycles the suite leaves idle, and yields even to the
# engine processes the tests start (nice 10, engine/process/worker.py), which a load must not outlast.
NICENESS = 19


class _Build:
    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="opt-desktop-bundle-"))
        self.log = self.folder / "build.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [sys.executable, str(ROOT / "packaging" / "build_bundle.py"), "--dist", str(self.folder / "dist"),
                 "--work", str(self.folder / "work"), "--no-check", "--no-startup"],
                cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=lambda: os.nice(NICENESS))

    def wait(self, timeout: float) -> Path:
        """The built bundle folder; RuntimeError with the build's output when it failed."""
        status = self.process.wait(timeout)
        if status != 0:
            raise RuntimeError(f"building the bundle failed (status {status}):\n"
                               f"{self.log.read_text(errors='replace')[-5000:]}")
        return self.folder / "dist" / NAME

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        shutil.rmtree(self.folder, ignore_errors=True)


_build: _Build | None = None


def wanted(items) -> bool:
    return (sys.platform.startswith("linux") and not os.environ.get("OPT_DESKTOP_BUNDLE")
            and importlib.util.find_spec("PyInstaller") is not None
            and any(item.get_closest_marker("bundle") for item in items))


def pytest_collection_finish(session) -> None:
    global _build
    if _build is None and not session.config.option.collectonly and wanted(session.items):
        _build = _Build()


def pytest_unconfigure(config) -> None:
    global _build
    if _build is not None:
        _build.close()
        _build = None


def started() -> _Build | None:
    """The background build, if this run started one."""
    return _build
