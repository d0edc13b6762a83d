import os
import sys
from pathlib import Path

# No display in CI: Qt draws offscreen. Set before anything imports Qt.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _private_app_dirs(tmp_path_factory, monkeypatch):
    """Autosaves, recent files and presets of a test never touch the person's real folders."""
    root = tmp_path_factory.mktemp("app-dirs")
    monkeypatch.setenv("OPT_DESKTOP_DATA_DIR", str(root / "data"))
    if "OPT_DESKTOP_CONFIG_DIR" not in os.environ:
        monkeypatch.setenv("OPT_DESKTOP_CONFIG_DIR", str(root / "config"))


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if any engine worker outlived its test (every fixture has been torn down by now)."""
    import threading
    import time

    deadline = time.monotonic() + 5.0
    while (leaked := [t.name for t in threading.enumerate() if t.name.startswith("opt-engine") and t.is_alive()]) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    if leaked:
        print(f"\nengine worker threads left running: {leaked}")
        session.exitstatus = 1
