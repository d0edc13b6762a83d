"""The model manager dialog, offscreen, on a real qasync loop, against a Hub cache folder built here;
its downloads are jobs of a real engine (in this process: the fetch can be replaced by a slow one)."""

import logging
import subprocess
import sys
import threading
import time

import pytest
from PySide6.QtCore import Qt

from hub_cache_fixture import SlowFetch, build_hub_cache, repo_folder
from models import save_tiny_opt
from opt_desktop.engine import EngineService, LoadRequest
from opt_desktop.engine.loading import hub_cache, hub_download
from opt_desktop.engine.loading.catalog import OFFICIAL, GpuMemory, MachineMemory
from opt_desktop.gui.controller import Controller
from opt_desktop.gui.widgets.download_progress import DownloadProgress, describe_progress
from opt_desktop.gui.widgets.model_manager import ModelManager
from opt_desktop.gui.widgets.model_table import MEMORY_COLUMN
from window_driver import run_until

GIB = 2**30


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_opt(tmp_path_factory.mktemp("tiny"), "pre")


@pytest.fixture
def hub(tmp_path, tiny):
    hub = tmp_path / "hub"
    build_hub_cache(hub, "facebook/opt-125m", tiny)
    return hub


@pytest.fixture
def controller(loop):
    c = Controller(EngineService())
    yield c
    assert c.shutdown(timeout=5.0)


def open_dialog(qtbot, loop, hub, controller, **kw) -> ModelManager:
    dialog = ModelManager(controller=controller, cache=hub, check_network=False, **kw)
    qtbot.addWidget(dialog)
    dialog.show()
    idle(loop, dialog)
    return dialog


def idle(loop, dialog, timeout=10.0):
    """Run the event loop until the dialog's background work has ended."""
    run_until(loop, lambda: not dialog.is_busy(), timeout)


@pytest.fixture
def slow_fetch(monkeypatch):
    """The engine's downloads fetch with a SlowFetch instead of huggingface_hub."""
    fetch = SlowFetch(chunk=4 * 2**20, total=2**30)  # 4 MiB chunks: the bar moves within a few chunks
    monkeypatch.setattr(hub_download, "fetch_snapshot", fetch)
    return fetch


def test_lists_the_official_checkpoints_and_the_demo(qtbot, loop, hub, controller):
    dialog = open_dialog(qtbot, loop, hub, controller)
    assert dialog.table.sources() == [c.source for c in OFFICIAL] + ["demo"]
    assert dialog.table.rowCount() == 9
    demo_row = dialog.table.row_of("demo")
    assert "trained on Python's documentation (not OPT weights)" in dialog.table.item(demo_row, 0).text()
    assert dialog.table.cache_text("demo") == "built in"
    row = dialog.table.row_of("facebook/opt-66b")
    assert [dialog.table.item(row, c).text() for c in (1, 2, 3, 4)] == ["64", "72", "9216", "65.7B"]


def test_marks_the_cached_checkpoint(qtbot, loop, hub, controller):
    dialog = open_dialog(qtbot, loop, hub, controller)
    assert dialog.table.cache_text("facebook/opt-125m").startswith("✓")
    assert all(dialog.table.cache_text(c.source) == "" for c in OFFICIAL[1:])
    dialog.table.select("facebook/opt-125m")
    assert dialog.delete_button.isEnabled() and not dialog.download_button.isEnabled()
    dialog.table.select("facebook/opt-350m")
    assert dialog.download_button.isEnabled() and not dialog.delete_button.isEnabled()


def test_delete_asks_then_removes_it_from_the_cache(qtbot, loop, hub, controller, monkeypatch):
    dialog = open_dialog(qtbot, loop, hub, controller)
    dialog.table.select("facebook/opt-125m")
    asked = []
    monkeypatch.setattr(dialog, "confirm_delete", lambda repo, size: asked.append(repo) or False)
    qtbot.mouseClick(dialog.delete_button, Qt.MouseButton.LeftButton)
    assert asked == ["facebook/opt-125m"] and repo_folder(hub, "facebook/opt-125m").exists()  # declined

    monkeypatch.setattr(dialog, "confirm_delete", lambda repo, size: True)
    qtbot.mouseClick(dialog.delete_button, Qt.MouseButton.LeftButton)
    run_until(loop, lambda: dialog.table.cache_text("facebook/opt-125m") == "", 10)
    assert not repo_folder(hub, "facebook/opt-125m").exists()
    assert "Deleted facebook/opt-125m" in dialog.message.text()


def test_load_emits_the_request_the_dialog_shows(qtbot, loop, hub, controller, tmp_path):
    dialog = open_dialog(qtbot, loop, hub, controller, request=LoadRequest(source="facebook/opt-125m", dtype="bfloat16"))
    assert dialog.table.selected().source == "facebook/opt-125m"
    assert dialog.options.precision_combo.currentData() == "bfloat16"
    assert not dialog.options.max_memory_edit.isEnabled()  # only for "spread"

    dialog.table.select("facebook/opt-66b")
    dialog.options.precision_combo.setCurrentIndex(dialog.options.precision_combo.findData("float16"))
    dialog.options.device_combo.setCurrentIndex(dialog.options.device_combo.findData("cuda"))
    dialog.options.placement_combo.setCurrentIndex(dialog.options.placement_combo.findData("spread"))
    assert dialog.options.max_memory_edit.isEnabled()
    dialog.options.max_memory_edit.setText("0=70GiB, cpu=40GiB")
    dialog.options.offload_edit.setText(str(tmp_path / "offload"))
    with qtbot.waitSignal(dialog.load_requested, timeout=2000) as blocker:
        qtbot.mouseClick(dialog.load_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] == LoadRequest(source="facebook/opt-66b", dtype="float16", device="cuda",
                                          placement="spread", max_memory={"0": "70GiB", "cpu": "40GiB"},
                                          offload_folder=str(tmp_path / "offload"))


def test_int8_is_offered_and_a_bad_max_memory_is_explained(qtbot, loop, hub, controller):
    dialog = open_dialog(qtbot, loop, hub, controller)
    assert [dialog.options.precision_combo.itemData(i) for i in range(dialog.options.precision_combo.count())] == [
        "float32", "bfloat16", "float16", "int8"]
    dialog.table.select("demo")
    dialog.options.placement_combo.setCurrentIndex(dialog.options.placement_combo.findData("spread"))
    dialog.options.max_memory_edit.setText("lots")
    emitted = []
    dialog.load_requested.connect(emitted.append)
    dialog.load()
    assert emitted == [] and "device=size" in dialog.message.text() and dialog.isVisible()


def test_memory_cells_compare_with_this_machine(qtbot, loop, hub, controller):
    dialog = open_dialog(qtbot, loop, hub, controller)
    dialog.set_memory(MachineMemory(ram_total=16 * GIB, ram_available=12 * GIB,
                                    gpus=(GpuMemory(0, "Test GPU", 24 * GIB, 20 * GIB),)))
    assert "RAM 16.0 GiB" in dialog.memory_label.text() and "Test GPU" in dialog.memory_label.text()
    fp32, fp16 = MEMORY_COLUMN["float32"], MEMORY_COLUMN["float16"]

    def cell(source, col):
        return dialog.table.item(dialog.table.row_of(source), col).text()

    dialog.options.device_combo.setCurrentIndex(dialog.options.device_combo.findData("cuda"))
    assert cell("facebook/opt-125m", fp32).startswith("✓")
    assert cell("facebook/opt-6.7b", fp16).startswith("✓")  # 13 GB in 24
    assert cell("facebook/opt-13b", fp16).startswith("✗")  # 26 GB
    dialog.options.placement_combo.setCurrentIndex(dialog.options.placement_combo.findData("spread"))
    assert cell("facebook/opt-13b", fp16).startswith("✓")  # 24 + 16 GB
    assert cell("facebook/opt-66b", fp16).startswith("≈")  # the rest on disk
    dialog.options.device_combo.setCurrentIndex(dialog.options.device_combo.findData("cpu"))
    dialog.options.placement_combo.setCurrentIndex(dialog.options.placement_combo.findData("one-device"))
    assert cell("facebook/opt-13b", fp16).startswith("✗")
    assert cell("facebook/opt-1.3b", MEMORY_COLUMN["int8"]).startswith("✓")


def test_stop_ends_a_slow_download_and_leaves_no_partial_file(qtbot, loop, hub, controller, slow_fetch):
    fetch = slow_fetch
    dialog = open_dialog(qtbot, loop, hub, controller)
    dialog.table.select("facebook/opt-1.3b")
    qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    [job] = controller.jobs("download")  # the engine downloads, not the window
    assert dialog.downloads.bar.isVisible() and dialog.stop_button.isEnabled()
    run_until(loop, lambda: dialog.downloads.bar.value() >= 10, 10)  # 1 % or more: progress reached the bar
    assert "Downloading facebook/opt-1.3b:" in dialog.downloads.label.text() and "left" in dialog.downloads.label.text()
    assert "MiB/s" in dialog.downloads.label.text() and dialog.downloads.bar.maximum() == 1000
    assert dialog.downloads.bar.value() <= round(1000 * fetch.written / fetch.total)  # never ahead of the bytes
    assert list(hub.rglob("*.incomplete"))

    qtbot.mouseClick(dialog.stop_button, Qt.MouseButton.LeftButton)
    idle(loop, dialog)
    written = fetch.written
    time.sleep(0.1)
    assert fetch.written == written
    assert list(hub.rglob("*.incomplete")) == []
    assert job.end.reason == "cancelled"
    assert dialog.message.text() == "Download of facebook/opt-1.3b stopped; its partial files were removed."
    assert not dialog.downloads.isVisible() and dialog.download_button.isEnabled()


def test_closing_stops_a_running_download(qtbot, loop, hub, controller, slow_fetch):
    fetch = slow_fetch
    dialog = open_dialog(qtbot, loop, hub, controller)
    dialog.table.select("facebook/opt-2.7b")
    dialog.download_selected()
    run_until(loop, lambda: fetch.written > 0, 10)
    assert list(hub.rglob("*.incomplete"))  # there is a partial file to remove
    [job] = controller.jobs("download")
    dialog.reject()
    assert job.wait(5).reason == "cancelled"
    written = fetch.written
    time.sleep(0.1)
    assert fetch.written == written and list(hub.rglob("*.incomplete")) == []


def test_a_download_finds_a_cached_model_and_marks_it(qtbot, loop, hub, controller, tiny):
    """No fake fetch: huggingface_hub itself, offline, against the cache folder built here."""
    build_hub_cache(hub, "facebook/opt-350m", tiny)
    dialog = open_dialog(qtbot, loop, hub, controller)
    dialog.table.set_cached({}, hub)  # as if the cache had been read before the model arrived
    dialog.table.select("facebook/opt-350m")
    dialog.download_selected()
    idle(loop, dialog, 30)
    assert dialog.message.text() == "Downloaded facebook/opt-350m into the Hugging Face cache."
    assert dialog.table.cache_text("facebook/opt-350m").startswith("✓")


def test_open_folder_checks_it_off_the_gui_thread(qtbot, loop, hub, controller, tiny, tmp_path):
    dialog = open_dialog(qtbot, loop, hub, controller)
    empty = tmp_path / "empty"
    empty.mkdir()
    dialog.add_folder(empty)
    idle(loop, dialog, 60)
    assert "no config.json" in dialog.message.text() and str(empty) not in dialog.table.sources()

    dialog.add_folder(tiny)
    idle(loop, dialog, 60)
    assert dialog.table.sources()[-1] == str(tiny.resolve()) and dialog.table.selected().source == str(tiny.resolve())
    row = dialog.table.row_of(str(tiny.resolve()))
    assert dialog.table.item(row, 1).text() == "3" and dialog.table.cache_text(str(tiny.resolve())) == "local folder"
    with qtbot.waitSignal(dialog.load_requested, timeout=2000) as blocker:
        dialog.load()
    assert blocker.args[0].source == str(tiny.resolve())


def test_progress_rate_and_time_left():
    p = DownloadProgress(done=50 * 2**20, total=250 * 2**20, elapsed=10.0)
    assert p.rate == 5 * 2**20 and p.fraction == pytest.approx(0.2) and p.eta == pytest.approx(40.0)
    assert DownloadProgress().eta is None and DownloadProgress().fraction is None


def test_progress_text():
    text = describe_progress("facebook/opt-125m", DownloadProgress(done=120 * 2**20, total=250 * 2**20, elapsed=24.0))
    assert text == "Downloading facebook/opt-125m: 120 MiB of 250 MiB · 5.0 MiB/s · 26 s left"


def test_a_mode_this_machine_cannot_run_is_refused_in_the_dialog(qtbot, loop, controller, tmp_path, monkeypatch):
    from opt_desktop.engine.loading import precision

    monkeypatch.setattr(precision, "capabilities", lambda probe=None: precision.Capabilities(
        cpu_bf16=True, int8_engine=None, cuda=False, mps=False, probed=True))
    dlg = ModelManager(None, controller=controller, cache=tmp_path / "hub", check_network=False)
    qtbot.addWidget(dlg)
    idle(loop, dlg)
    dlg.table.select("demo")
    dlg.options.precision_combo.setCurrentIndex(dlg.options.precision_combo.findData("int8"))
    emitted = []
    dlg.load_requested.connect(emitted.append)
    dlg.load()
    assert emitted == [] and dlg.message.text() == precision.NO_INT8
    dlg.options.precision_combo.setCurrentIndex(dlg.options.precision_combo.findData("float32"))
    dlg.load()
    assert [r.dtype for r in emitted] == ["float32"]


def test_background_results_reach_the_dialog_on_the_gui_thread(qtbot, loop, hub, controller, slow_fetch,
                                                              monkeypatch):
    from PySide6.QtCore import QTimer

    gui_thread, seen = threading.current_thread(), []
    for name in ("show_download_progress", "_set_cached", "set_memory", "show_message"):
        original = getattr(ModelManager, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            seen.append((_name, threading.current_thread()))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ModelManager, name, spy)
    dialog = open_dialog(qtbot, loop, hub, controller)
    dialog.table.select("facebook/opt-350m")
    dialog.download_selected()
    run_until(loop, lambda: sum(name == "show_download_progress" for name, _ in seen) >= 2, 10)
    dialog.stop_download()
    idle(loop, dialog)
    assert {"show_download_progress", "_set_cached", "set_memory", "show_message"} <= {name for name, _ in seen}
    assert all(thread is gui_thread for _, thread in seen)
    assert not [t for t in dialog.findChildren(QTimer) if t.isActive()]  # nothing polls


def test_a_failure_is_one_line_in_the_dialog_and_a_traceback_in_the_log(qtbot, loop, hub, controller,
                                                                       monkeypatch, caplog):
    def broken(cache=None):
        raise RuntimeError("the cache index is corrupt\nsecond line")

    dialog = open_dialog(qtbot, loop, hub, controller)
    monkeypatch.setattr(hub_cache, "cached_models", broken)
    with caplog.at_level(logging.ERROR, logger="opt_desktop.gui.widgets.model_manager"):
        dialog.refresh_cache()
        idle(loop, dialog)
    text = dialog.message.text()
    assert "the cache index is corrupt" in text and "\n" not in text and "RuntimeError" not in text
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.exc_info[0] is RuntimeError and "Traceback" in caplog.text

    def unreachable(repo_id, *, tqdm_class, cache, revision=None):
        raise OSError("Network is unreachable")

    monkeypatch.undo()  # the cache reads again
    monkeypatch.setattr(hub_download, "fetch_snapshot", unreachable)
    caplog.clear()
    dialog.table.select("facebook/opt-350m")
    with caplog.at_level(logging.WARNING):
        dialog.download_selected()
        idle(loop, dialog)
    assert dialog.message.text() == "Cannot download facebook/opt-350m: Network is unreachable"
    # The engine logged it once, with the original error's traceback.
    [record] = [r for r in caplog.records if "Network is unreachable" in r.getMessage()]
    assert "OSError: Network is unreachable" in record.getMessage() and "Traceback" in record.getMessage()


def test_adding_a_folder_imports_no_torch_in_the_window(tiny):
    """The window's process never imports torch (issue 23): the folder is checked from its files."""
    code = f"""
import asyncio, os, sys, time
os.environ["QT_QPA_PLATFORM"] = "offscreen"
from PySide6.QtWidgets import QApplication
import qasync
app = QApplication([])
loop = qasync.QEventLoop(app)
asyncio.set_event_loop(loop)
from opt_desktop.engine import EngineService
from opt_desktop.gui.controller import Controller
from opt_desktop.gui.widgets.model_manager import ModelManager

async def main():
    dialog = ModelManager(controller=Controller(EngineService()), check_network=False)
    dialog.add_folder({str(tiny)!r})
    deadline = time.monotonic() + 60
    while dialog.is_busy() and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    print(dialog.table.cache_text({str(tiny.resolve())!r}), "|", "torch" in sys.modules)

with loop:
    loop.run_until_complete(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip().splitlines()[-1:] == ["local folder | False"], out.stderr


def test_says_why_nothing_can_be_downloaded_now(qtbot, loop, hub, controller):
    dialog = ModelManager(controller=controller, cache=hub)  # asks the Hub: tests run with HF_HUB_OFFLINE=1
    qtbot.addWidget(dialog)
    idle(loop, dialog)
    assert dialog.hub_label.text() == ("No downloads now: offline mode is on (HF_HUB_OFFLINE=1). Cached models, "
                                       "local folders and the demo model still load.")
