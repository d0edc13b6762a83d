"""What the window says after a load: one true message about which model is loaded now (or that none
is) and why; a stopped load ends as stopped; an unreachable Hub id points at the demo."""

import pytest

from models import save_tiny_opt
from opt_desktop.engine import LoadRequest
from opt_desktop.engine.loading import loader
from opt_desktop.engine.process.engine_process import EngineProcess
from opt_desktop.gui import session_dialogs
from opt_desktop.gui.app_state import AppState
from opt_desktop.gui.controller import Controller
from opt_desktop.gui.main_window import MainWindow
from opt_desktop.presets import PresetStore
from window_driver import new_window, run_until

UNCACHED = "facebook/opt-not-cached-anywhere"
OFFLINE = (f"Cannot load {UNCACHED}: offline mode is on (HF_HUB_OFFLINE=1) and the model is not in the "
           "local cache.")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_opt(tmp_path_factory.mktemp("tiny"), "pre")


def settled(w):
    """No load is running and the last one has said what it had to."""
    return lambda: not w.controller.is_loading and bool(w.banner.texts())


def test_a_start_whose_fallback_fails_too_says_one_true_thing(qtbot, loop, tmp_path, monkeypatch):
    gone = tmp_path / "demo-gone"
    gone.mkdir()
    monkeypatch.setattr(loader, "demo_folder", lambda: gone)  # the demo's files are missing (a broken install)
    w = new_window(qtbot, tmp_path, monkeypatch)
    w.models.load(LoadRequest(source=UNCACHED), fallback_to_demo=True)
    run_until(loop, settled(w))
    assert w.banner.texts() == [
        f"{OFFLINE} The built-in demo model could not be loaded either: demo is not an OPT checkpoint: it has no "
        "config.json. No model is loaded: choose one in the bar above and press Load."]
    assert w.banner.messages[0].kind == "error"
    assert w.controller.model is None and w.model_bar.model_label.text().startswith("No model loaded")
    assert AppState.load().last_model is None  # nothing loaded: nothing to start with next time
    w.close()


def test_a_fallback_that_loads_says_so_once_it_has_loaded(qtbot, loop, tmp_path, monkeypatch):
    w = new_window(qtbot, tmp_path, monkeypatch)
    w.models.load(LoadRequest(source=UNCACHED), fallback_to_demo=True)
    run_until(loop, lambda: w.controller.is_loading and w.model_bar.request().source == "demo")
    assert w.banner.texts() == []  # nothing claims the demo is loaded before it is
    run_until(loop, settled(w))
    assert w.controller.model.source == "demo"
    assert w.banner.texts() == [f"{OFFLINE} Loaded the built-in demo model instead (a tiny model trained on "
                                "Python's documentation, not OPT weights)."]
    assert AppState.load().last_model.source == "demo"  # the next start begins with it, without the message
    w.close()


def test_a_stopped_start_up_load_ends_stopped_and_never_falls_back(qtbot, loop, tmp_path, monkeypatch, tiny):
    w = new_window(qtbot, tmp_path, monkeypatch)
    read = loader._load_weights

    def stop_while_reading(*args, **kwargs):
        w.controller.stop()  # the person presses Stop while the weights are read
        return read(*args, **kwargs)

    monkeypatch.setattr(loader, "_load_weights", stop_while_reading)
    job = w.models.load(LoadRequest(source=str(tiny), device="cpu"), fallback_to_demo=True)
    run_until(loop, settled(w))
    assert job.end.reason == "cancelled"
    assert w.banner.texts() == [f"Loading {tiny} was stopped; no model is loaded."]
    assert [m.kind for m in w.banner.messages] == ["info"] and not w.banner.messages[0].details  # no traceback
    assert not w.controller.jobs("load") and w.controller.model is None  # no demo was tried
    w.close()


def test_an_unreachable_hub_id_names_the_demo_and_loads_it_in_one_click(qtbot, loop, tmp_path, monkeypatch):
    """With the engine in its own process, as the app runs it: the kind of error crosses too."""
    monkeypatch.setenv("OPT_DESKTOP_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(session_dialogs, "ask_unsaved", lambda parent, name, running=False: "discard")
    w = MainWindow(controller=Controller(EngineProcess()), state=AppState(), presets=PresetStore(tmp_path / "p"))
    qtbot.addWidget(w)
    w.show()
    w.models.load(LoadRequest(source=UNCACHED))  # chosen by the person: no fallback
    run_until(loop, settled(w), timeout=120)
    assert w.banner.texts() == [f"{OFFLINE} The built-in demo model needs no network: File ▸ Load the demo model."]
    [button] = w.banner.buttons
    assert button.text() == "Load the demo model"
    button.click()
    run_until(loop, lambda: w.controller.model is not None and not w.controller.is_loading, timeout=120)
    assert w.controller.model.source == "demo" and w.banner.texts() == []
    w.close()


def test_a_failure_that_let_go_of_the_model_says_none_is_loaded(qtbot, loop, tmp_path, monkeypatch, tiny):
    import shutil

    broken = tmp_path / "damaged"
    shutil.copytree(tiny, broken)
    (broken / "model.safetensors").write_bytes(b"\0" * 64)  # a truncated download: found, then unreadable
    w = new_window(qtbot, tmp_path, monkeypatch)
    w.models.load(LoadRequest(source="demo", device="cpu"))
    run_until(loop, lambda: w.controller.model is not None and not w.controller.is_loading)
    w.models.load(LoadRequest(source=str(broken), device="cpu"))
    run_until(loop, settled(w))
    [text] = w.banner.texts()
    assert text.startswith(f"The weights of {broken} are damaged or incomplete") and text.endswith(" No model is loaded.")
    assert w.controller.model is None
    w.close()


def test_the_model_bar_opens_the_model_manager_on_its_model(qtbot, loop, tmp_path, monkeypatch):
    from opt_desktop.gui.widgets.model_manager import ModelManager

    w = new_window(qtbot, tmp_path, monkeypatch)
    w.model_bar.set_request(LoadRequest(source="facebook/opt-350m", dtype="bfloat16"))
    w.model_bar.manager_button.click()
    [dialog] = w.findChildren(ModelManager)
    assert dialog.isVisible() and dialog.table.selected().source == "facebook/opt-350m"
    assert dialog.options.precision_combo.currentData() == "bfloat16"
    run_until(loop, lambda: not dialog.is_busy())
    dialog.reject()
    w.close()
