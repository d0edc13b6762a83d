import os
import shutil
import sys
import tempfile
from pathlib import Path

# No display in CI: Qt draws offscreen. Set before anything imports Qt.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# The app's folders (config, data, cache, logs, damaged files) live in a temporary folder for the whole
# run, set before anything is imported, so no test (nor a subprocess it starts, nor a session-scoped
# fixture) reads or writes the person's real folders. Each test then gets its own (below).
_SUITE_HOME = tempfile.mkdtemp(prefix="opt-desktop-tests-")
os.environ["OPT_DESKTOP_HOME"] = _SUITE_HOME

sys.path.insert(0, str(Path(__file__).parent))


import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def app_home(tmp_path_factory, monkeypatch) -> Path:
    """This test's own app folders (opt_desktop.folders resolves every one under it): autosaves,
    recent files, presets and damaged files of one test never meet another's, or the person's."""
    root = tmp_path_factory.mktemp("app-home")
    monkeypatch.setenv("OPT_DESKTOP_HOME", str(root))
    return root


def pytest_report_header(config):
    from models import FIXTURES

    if FIXTURES.is_dir():
        return f"shared fixtures: {FIXTURES} (the real OPT tokenizer and configs)"
    return (f"shared fixtures: not found at {FIXTURES}; tests fall back to a generated tokenizer, and those that "
            "need the real OPT tokenizer or configs are skipped (their reasons are listed at the end)")


def pytest_sessionfinish(session, exitstatus):
    """Fail the run if any engine worker outlived its test (every fixture has been torn down by now)."""
    shutil.rmtree(_SUITE_HOME, ignore_errors=True)
    import threading
    import time

    deadline = time.monotonic() + 5.0
    while (leaked := [t.name for t in threading.enumerate() if t.name.startswith("opt-engine") and t.is_alive()]) \
            and time.monotonic() < deadline:
        time.sleep(0.1)
    if leaked:
        print(f"\nengine worker threads left running: {leaked}")
        session.exitstatus = 1


@pytest.fixture(scope="session")
def ssh_server(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 for the whole run (tests/ssh_server.py); the engines it
    starts use app folders of their own and never reach the network."""
    from ssh_server import SshServer, sshd_missing

    missing = sshd_missing()
    if missing:
        pytest.skip(missing)
    home = tmp_path_factory.mktemp("ssh-engine-home")
    env = {"OPT_DESKTOP_HOME": str(home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    with SshServer(tmp_path_factory.mktemp("sshd"), env=env) as server:
        yield server


@pytest.fixture(scope="session")
def induction_engine(tmp_path_factory):
    """An engine holding the hand-built OPT whose heads are a previous-token, an induction and a sink
    head (tests/induction_model.py), with the demo's small tokenizer."""
    from induction_model import save_induction_opt
    from opt_desktop.engine import EngineService, LoadRequest
    from opt_desktop.engine.loading.demo import build_demo_tokenizer

    folder = save_induction_opt(tmp_path_factory.mktemp("induction-opt"), build_demo_tokenizer())
    svc = EngineService()
    svc.load(LoadRequest(source=str(folder), device="cpu")).result()
    yield svc
    svc.shutdown()
    assert svc.join(5.0)
