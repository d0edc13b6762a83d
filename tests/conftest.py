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
