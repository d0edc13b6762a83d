"""The engine on an SSH host, chosen in the window (offscreen), through a real OpenSSH server on
127.0.0.1 (tests/ssh_server.py): the connection's steps are shown, a run there equals the same run
here, a refused key and a connection killed mid-run are one line each with Reconnect (the partial
run kept), hosts are kept in the settings, and the model manager shows the server's cache and memory.
"""

import html

import numpy as np
import pytest

from hub_cache_fixture import build_hub_cache
from models import load_tokenizer, save_tiny_opt
from opt_desktop.gui import engine_commands
from opt_desktop.engine import EngineService, GenerationRequest, InspectSettings, LoadRequest
from opt_desktop.engine.process.ssh import SshEngine
from opt_desktop.gui.app_state import AppState
from opt_desktop.gui.widgets.model_manager import ModelManager
from opt_desktop.session import RunTrace
from ssh_server import SshServer, engine_command, sshd_missing
from window_driver import SEEDED, finished, new_window, run_until

STAGES = ["connecting", "authenticating", "starting", "greeted", "ready"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    # A context long enough that a run outlasts the moment a test cuts its connection.
    return save_tiny_opt(tmp_path_factory.mktemp("opt-window-ssh"), "pre", load_tokenizer(), context=1024)


@pytest.fixture
def w(qtbot, loop, tmp_path, monkeypatch):
    window = new_window(qtbot, tmp_path, monkeypatch)
    yield window
    window.close()


def connect(w, loop, host) -> list[str]:
    """Choose `host` in the engine chooser as a person would; the stages the window showed."""
    stages = []
    show = w.model_bar.connection.show_step
    w.model_bar.connection.show_step = lambda step: (stages.append(step.stage), show(step))
    w.engines._save_hosts([host], None)
    w.model_bar.engine_chooser.choose(host)
    run_until(loop, lambda: w.model_bar.connection.state in ("ready", "failed"), timeout=90)
    return stages


def load(w, loop, checkpoint) -> None:
    w.models.load(LoadRequest(source=str(checkpoint), device="cpu"))
    run_until(loop, lambda: w.controller.model is not None and not w.controller.is_loading, timeout=180)


def test_a_run_on_the_server_shows_its_steps_and_equals_the_same_run_here(w, loop, ssh_server, checkpoint):
    host = ssh_server.host(command=engine_command())
    stages = connect(w, loop, host)
    assert stages[0] == "connecting" and stages[-1] == "ready"
    assert [s for s in STAGES if s in stages] == STAGES  # every step shown, in order
    status = w.model_bar.connection
    assert status.isVisible() and not status.progress.isVisible() and not status.reconnect_button.isVisible()
    assert status.label.text().startswith("Engine 0.1.0 on ") and "RAM" in status.label.text()
    assert isinstance(w.controller.engine, SshEngine) and w.controller.place == host
    assert w.model_bar.engine_chooser.currentText() == "test server"

    load(w, loop, checkpoint)
    w.settings_panel.set_settings(SEEDED)
    w.prompt.set_text("The cat sat")
    w.runs.generate()
    run_until(loop, finished(w), timeout=120)
    trace = w.presenter.trace
    here = EngineService()
    events = []
    try:
        here.load(LoadRequest(source=str(checkpoint), device="cpu")).result(120)
        reference = here.generate(GenerationRequest(prompt="The cat sat", settings=SEEDED,
                                                    inspect=InspectSettings(keep_attention_rows=True)),
                                  events.append).result()
    finally:
        here.shutdown()
    assert trace.generated_ids == list(reference.token_ids) and trace.finished.reason == reference.reason

    # The attention view's matrix: the rows stayed on the server, which computes the one head shown.
    kept_here = RunTrace(events[0])
    for event in events[1:]:
        kept_here.apply(event)
    view = w.inspector.attention
    w.tabs.setCurrentWidget(w.inspector)
    view.show_head(1, 0)
    run_until(loop, lambda: view._matrix_key == (1, 0, trace.length), timeout=60)
    assert not trace.has_attention_rows and view.showing_matrix
    np.testing.assert_allclose(view._fetched[3][:-1], kept_here.attention_matrix(1, 0)[:-1], atol=2e-3,
                               equal_nan=True)

    w.model_bar.engine_chooser.choose(None)  # back to this computer: a local engine, the status hidden
    assert w.controller.place is None and w.controller.in_process and not status.isVisible()


def test_a_refused_key_is_one_line_with_reconnect(w, loop, ssh_server):
    host = ssh_server.host(command=engine_command(), key=ssh_server.stranger_key)
    connect(w, loop, host)
    status = w.model_bar.connection
    assert status.state == "failed" and status.reconnect_button.isVisible()
    [line] = w.banner.texts()
    assert line.startswith("test server refused the authentication (") and "\n" not in line
    assert status.label.text() == "Not connected to test server." and status.toolTip() == "" \
        and status.label.toolTip() == html.escape(line, quote=False)
    assert [b.text() for b in w.banner.buttons] == ["Reconnect"]


def test_a_connection_killed_mid_run_keeps_the_partial_run_and_reconnect_loads_again(w, loop, ssh_server,
                                                                                    checkpoint):
    connect(w, loop, ssh_server.host(command=engine_command()))
    load(w, loop, checkpoint)
    w.settings_panel.set_settings(SEEDED.model_copy(update={"max_new_tokens": 900}))
    w.prompt.set_text("The cat sat")
    w.runs.generate()
    run_until(loop, lambda: w.presenter.trace is not None and w.presenter.trace.n_generated >= 3, timeout=120)
    w.controller.engine.transport.kill()  # the ssh client dies: the link is gone
    run_until(loop, finished(w), timeout=60)
    trace = w.presenter.trace
    assert trace.finished.reason == "error" and 3 <= trace.n_generated < 900
    assert trace in w.keeper.session.runs  # kept, and saved with the session like any run
    [line] = w.banner.texts()
    assert line.startswith("Connection to test server lost") and "\n" not in line
    assert w.model_bar.connection.state == "failed"

    [reconnect] = [b for b in w.banner.buttons if b.text() == "Reconnect"]
    reconnect.click()
    run_until(loop, lambda: w.model_bar.connection.state == "ready" and w.controller.model is not None
              and not w.controller.is_loading, timeout=180)
    assert w.banner.texts() == [] and w.controller.model.source == str(checkpoint)


def test_hosts_are_added_in_a_dialog_and_kept_in_the_settings(w, loop, ssh_server, monkeypatch):
    monkeypatch.setattr(engine_commands, "SshEngine", _Unconnected)  # the host names no real server
    dialog = w.engines.add_host()
    dialog.destination_edit.setText("-oProxyCommand=touch")
    dialog.accept()
    assert dialog.isVisible() and dialog.error_label.text().startswith("SSH host: destination ")
    dialog.name_edit.setText("gpu box")
    dialog.destination_edit.setText("me@gpu.example.org")
    dialog.port_spin.setValue(2222)
    dialog.identity_edit.setText("~/.ssh/work_key")
    dialog.command_edit.setText("~/venvs/opt/bin/opt-desktop-engine")
    dialog.accept()
    [host] = AppState.load().ssh_hosts
    assert (host.name, host.destination, host.port, host.identity_file, host.command) == (
        "gpu box", "me@gpu.example.org", 2222, "~/.ssh/work_key", "~/venvs/opt/bin/opt-desktop-engine")
    chooser = w.model_bar.engine_chooser
    assert [chooser.itemText(i) for i in range(chooser.count())][:2] == ["This computer", "gpu box"]
    assert w.controller.place == host  # a host is added to be used

    edit = w.engines.edit_host(host)
    edit.port_spin.setValue(0)  # ssh's default
    edit.accept()
    [host] = AppState.load().ssh_hosts
    assert host.port is None and w.controller.place == host
    w.engines.edit_host(host).remove_button.click()
    assert AppState.load().ssh_hosts == [] and w.controller.place is None


class _Unconnected(EngineService):
    """Stands in for an SshEngine to a host that does not exist: an engine in this process."""

    def __init__(self, host, on_step=None, on_died=None):
        super().__init__()
        self.host = host


@pytest.fixture(scope="module")
def cached_server(tmp_path_factory, checkpoint):
    """A server whose Hugging Face cache (not this side's) holds facebook/opt-125m."""
    missing = sshd_missing()
    if missing:
        pytest.skip(missing)
    hub = tmp_path_factory.mktemp("server-hub")
    build_hub_cache(hub, "facebook/opt-125m", checkpoint)
    env = {"OPT_DESKTOP_HOME": str(tmp_path_factory.mktemp("server-home")), "HF_HUB_OFFLINE": "1",
           "HF_HUB_CACHE": str(hub), "TRANSFORMERS_VERBOSITY": "error"}
    with SshServer(tmp_path_factory.mktemp("sshd-cache"), env=env) as server:
        yield server, hub


def test_the_model_manager_shows_the_servers_cache_memory_and_folders(w, loop, qtbot, cached_server, checkpoint,
                                                                     tmp_path, monkeypatch):
    server, hub = cached_server
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-hub-here"))  # this side's cache holds nothing
    connect(w, loop, server.host(command=engine_command()))
    dialog = ModelManager(controller=w.controller, check_network=False)
    qtbot.addWidget(dialog)
    run_until(loop, lambda: not dialog.is_busy() and dialog.table.cache_text("facebook/opt-125m") != "",
              timeout=60)
    assert dialog.table.cache_text("facebook/opt-125m").startswith("✓")
    assert dialog.memory_label.text().startswith("test server: RAM ")
    combo = w.model_bar.source_combo  # the model list says which presets the server holds
    run_until(loop, lambda: "test server" in (combo.itemData(combo.findData("facebook/opt-125m"), 3) or ""))
    assert combo.itemData(combo.findData("facebook/opt-350m"), 3).startswith("Download ")
    dialog.add_folder(str(checkpoint))
    run_until(loop, lambda: not dialog.is_busy(), timeout=60)
    assert dialog.table.selected().label == f"{checkpoint.name} (on test server)"
    dialog.add_folder("~/no-such-folder")
    run_until(loop, lambda: not dialog.is_busy(), timeout=60)
    assert dialog.message.text().startswith("No such folder: ")
    dialog.close()


def test_the_next_start_connects_to_the_host_it_ran_on_and_loads_the_model_there(w, loop, qtbot, ssh_server,
                                                                                checkpoint):
    from opt_desktop.gui.app import build_parser, start
    from opt_desktop.gui.main_window import MainWindow

    host = ssh_server.host(command=engine_command())
    connect(w, loop, host)
    assert AppState.load().engine_host == "test server"
    w.close()
    state = AppState.load()
    again = MainWindow(state=state)
    qtbot.addWidget(again)
    start(again, build_parser().parse_args(["--model", str(checkpoint), "--device", "cpu"]), state)
    try:
        run_until(loop, lambda: again.controller.model is not None and not again.controller.is_loading, timeout=180)
        assert again.controller.place == host and again.controller.model.source == str(checkpoint)
        assert again.model_bar.connection.state == "ready" and again.banner.texts() == []
    finally:
        again.close()
