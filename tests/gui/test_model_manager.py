"""The model manager dialog, offscreen, on a real qasync loop, against a Hub cache folder built here."""

import logging
import threading
import time

import pytest
from PySide6.QtCore import Qt

from hub_cache_fixture import SlowFetch, build_hub_cache, repo_folder
from models import save_tiny_opt
from opt_desktop.engine import LoadRequest
from opt_desktop.engine.loading import hub_cache
from opt_desktop.engine.loading.catalog import OFFICIAL, GpuMemory, MachineMemory
from opt_desktop.gui.widgets.model_manager import MEMORY_COLUMN, ModelManager, describe_progress
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


def open_dialog(qtbot, loop, hub, **kw) -> ModelManager:
    dialog = ModelManager(cache=hub, check_network=False, **kw)
    qtbot.addWidget(dialog)
    dialog.show()
    idle(loop, dialog)
    return dialog


def idle(loop, dialog, timeout=10.0):
    """Run the event loop until the dialog's background work has ended."""
    run_until(loop, lambda: not dialog.is_busy(), timeout)


def slow_downloads(fetch):
    """A start_download that fetches with `fetch` instead of huggingface_hub."""
    return lambda repo, **kw: hub_cache.start_download(repo, fetch=fetch, **kw)


def test_lists_the_official_checkpoints_and_the_demo(qtbot, loop, hub):
    dialog = open_dialog(qtbot, loop, hub)
    assert dialog.sources() == [c.source for c in OFFICIAL] + ["demo"]
    assert dialog.table.rowCount() == 9
    demo_row = dialog.row_of("demo")
    assert "trained on Python's documentation (not OPT weights)" in dialog.table.item(demo_row, 0).text()
    assert dialog.cache_text("demo") == "built in"
    row = dialog.row_of("facebook/opt-66b")
    assert [dialog.table.item(row, c).text() for c in (1, 2, 3, 4)] == ["64", "72", "9216", "65.7B"]


def test_marks_the_cached_checkpoint(qtbot, loop, hub):
    dialog = open_dialog(qtbot, loop, hub)
    assert dialog.cache_text("facebook/opt-125m").startswith("✓")
    assert all(dialog.cache_text(c.source) == "" for c in OFFICIAL[1:])
    dialog.select("facebook/opt-125m")
    assert dialog.delete_button.isEnabled() and not dialog.download_button.isEnabled()
    dialog.select("facebook/opt-350m")
    assert dialog.download_button.isEnabled() and not dialog.delete_button.isEnabled()


def test_delete_asks_then_removes_it_from_the_cache(qtbot, loop, hub, monkeypatch):
    dialog = open_dialog(qtbot, loop, hub)
    dialog.select("facebook/opt-125m")
    asked = []
    monkeypatch.setattr(dialog, "confirm_delete", lambda repo, size: asked.append(repo) or False)
    qtbot.mouseClick(dialog.delete_button, Qt.MouseButton.LeftButton)
    assert asked == ["facebook/opt-125m"] and repo_folder(hub, "facebook/opt-125m").exists()  # declined

    monkeypatch.setattr(dialog, "confirm_delete", lambda repo, size: True)
    qtbot.mouseClick(dialog.delete_button, Qt.MouseButton.LeftButton)
    run_until(loop, lambda: dialog.cache_text("facebook/opt-125m") == "", 10)
    assert not repo_folder(hub, "facebook/opt-125m").exists()
    assert "Deleted facebook/opt-125m" in dialog.message.text()


def test_load_emits_the_request_the_dialog_shows(qtbot, loop, hub, tmp_path):
    dialog = open_dialog(qtbot, loop, hub, request=LoadRequest(source="facebook/opt-125m", dtype="bfloat16"))
    assert dialog.selected().source == "facebook/opt-125m"
    assert dialog.precision_combo.currentData() == "bfloat16"
    assert not dialog.max_memory_edit.isEnabled()  # only for "spread"

    dialog.select("facebook/opt-66b")
    dialog.precision_combo.setCurrentIndex(dialog.precision_combo.findData("float16"))
    dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cuda"))
    dialog.placement_combo.setCurrentIndex(dialog.placement_combo.findData("spread"))
    assert dialog.max_memory_edit.isEnabled()
    dialog.max_memory_edit.setText("0=70GiB, cpu=40GiB")
    dialog.offload_edit.setText(str(tmp_path / "offload"))
    with qtbot.waitSignal(dialog.load_requested, timeout=2000) as blocker:
        qtbot.mouseClick(dialog.load_button, Qt.MouseButton.LeftButton)
    assert blocker.args[0] == LoadRequest(source="facebook/opt-66b", dtype="float16", device="cuda",
                                          placement="spread", max_memory={"0": "70GiB", "cpu": "40GiB"},
                                          offload_folder=str(tmp_path / "offload"))


def test_int8_is_offered_and_a_bad_max_memory_is_explained(qtbot, loop, hub):
    dialog = open_dialog(qtbot, loop, hub)
    assert [dialog.precision_combo.itemData(i) for i in range(dialog.precision_combo.count())] == [
        "float32", "bfloat16", "float16", "int8"]
    dialog.select("demo")
    dialog.placement_combo.setCurrentIndex(dialog.placement_combo.findData("spread"))
    dialog.max_memory_edit.setText("lots")
    emitted = []
    dialog.load_requested.connect(emitted.append)
    dialog.load()
    assert emitted == [] and "device=size" in dialog.message.text() and dialog.isVisible()


def test_memory_cells_compare_with_this_machine(qtbot, loop, hub):
    dialog = open_dialog(qtbot, loop, hub)
    dialog.set_memory(MachineMemory(ram_total=16 * GIB, ram_available=12 * GIB,
                                    gpus=(GpuMemory(0, "Test GPU", 24 * GIB, 20 * GIB),)))
    assert "RAM 16.0 GiB" in dialog.memory_label.text() and "Test GPU" in dialog.memory_label.text()
    fp32, fp16 = MEMORY_COLUMN["float32"], MEMORY_COLUMN["float16"]

    def cell(source, col):
        return dialog.table.item(dialog.row_of(source), col).text()

    dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cuda"))
    assert cell("facebook/opt-125m", fp32).startswith("✓")
    assert cell("facebook/opt-6.7b", fp16).startswith("✓")  # 13 GB in 24
    assert cell("facebook/opt-13b", fp16).startswith("✗")  # 26 GB
    dialog.placement_combo.setCurrentIndex(dialog.placement_combo.findData("spread"))
    assert cell("facebook/opt-13b", fp16).startswith("✓")  # 24 + 16 GB
    assert cell("facebook/opt-66b", fp16).startswith("≈")  # the rest on disk
    dialog.device_combo.setCurrentIndex(dialog.device_combo.findData("cpu"))
    dialog.placement_combo.setCurrentIndex(dialog.placement_combo.findData("one-device"))
    assert cell("facebook/opt-13b", fp16).startswith("✗")
    assert cell("facebook/opt-1.3b", MEMORY_COLUMN["int8"]).startswith("✓")


def test_cancel_stops_a_slow_download_and_leaves_no_partial_file(qtbot, loop, hub):
    fetch = SlowFetch(chunk=4 * 2**20, total=2**30)  # 4 MiB chunks: the bar moves within a few chunks
    dialog = open_dialog(qtbot, loop, hub, start_download=slow_downloads(fetch))
    dialog.select("facebook/opt-1.3b")
    qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    assert dialog.progress.isVisible() and dialog.cancel_button.isEnabled()
    run_until(loop, lambda: dialog.progress.value() >= 10, 10)  # 1 % or more: progress reached the bar
    assert "Downloading facebook/opt-1.3b:" in dialog.progress_label.text() and "left" in dialog.progress_label.text()
    assert "MiB/s" in dialog.progress_label.text() and dialog.progress.maximum() == 1000
    assert dialog.progress.value() <= round(1000 * fetch.written / fetch.total)  # never ahead of the bytes
    assert list(hub.rglob("*.incomplete"))

    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    idle(loop, dialog)
    written = fetch.written
    time.sleep(0.1)
    assert fetch.written == written
    assert list(hub.rglob("*.incomplete")) == []
    assert "cancelled" in dialog.message.text() and not dialog.progress.isVisible()
    assert dialog.download_button.isEnabled()


def test_closing_cancels_a_running_download(qtbot, loop, hub):
    fetch = SlowFetch()
    dialog = open_dialog(qtbot, loop, hub, start_download=slow_downloads(fetch))
    dialog.select("facebook/opt-2.7b")
    dialog.download_selected()
    run_until(loop, lambda: fetch.written > 0, 10)
    assert list(hub.rglob("*.incomplete"))  # there is a partial file to remove
    dialog.reject()
    written = fetch.written
    time.sleep(0.1)
    assert fetch.written == written and list(hub.rglob("*.incomplete")) == []


def test_open_folder_checks_it_off_the_gui_thread(qtbot, loop, hub, tiny, tmp_path):
    dialog = open_dialog(qtbot, loop, hub)
    empty = tmp_path / "empty"
    empty.mkdir()
    dialog.add_folder(empty)
    idle(loop, dialog, 60)
    assert "no config.json" in dialog.message.text() and str(empty) not in dialog.sources()

    dialog.add_folder(tiny)
    idle(loop, dialog, 60)
    assert dialog.sources()[-1] == str(tiny.resolve()) and dialog.selected().source == str(tiny.resolve())
    row = dialog.row_of(str(tiny.resolve()))
    assert dialog.table.item(row, 1).text() == "3" and dialog.cache_text(str(tiny.resolve())) == "local folder"
    with qtbot.waitSignal(dialog.load_requested, timeout=2000) as blocker:
        dialog.load()
    assert blocker.args[0].source == str(tiny.resolve())


def test_progress_text():
    from opt_desktop.engine.loading.hub_cache import DownloadProgress

    text = describe_progress("facebook/opt-125m", DownloadProgress(done=120 * 2**20, total=250 * 2**20, elapsed=24.0))
    assert text == "Downloading facebook/opt-125m: 120 MiB of 250 MiB · 5.0 MiB/s · 26 s left"


def test_a_mode_this_machine_cannot_run_is_refused_in_the_dialog(qtbot, loop, tmp_path, monkeypatch):
    from opt_desktop.engine.loading import precision

    monkeypatch.setattr(precision, "capabilities", lambda probe=None: precision.Capabilities(
        cpu_bf16=True, int8_engine=None, cuda=False, mps=False, probed=True))
    dlg = ModelManager(None, cache=tmp_path / "hub", check_network=False)
    qtbot.addWidget(dlg)
    idle(loop, dlg)
    dlg.select("demo")
    dlg.precision_combo.setCurrentIndex(dlg.precision_combo.findData("int8"))
    emitted = []
    dlg.load_requested.connect(emitted.append)
    dlg.load()
    assert emitted == [] and dlg.message.text() == precision.NO_INT8
    dlg.precision_combo.setCurrentIndex(dlg.precision_combo.findData("float32"))
    dlg.load()
    assert [r.dtype for r in emitted] == ["float32"]


def test_background_results_reach_the_dialog_on_the_gui_thread(qtbot, loop, hub, monkeypatch):
    from PySide6.QtCore import QTimer

    gui_thread, seen = threading.current_thread(), []
    for name in ("_show_progress", "_set_cached", "set_memory", "show_message"):
        original = getattr(ModelManager, name)

        def spy(self, *args, _original=original, _name=name, **kwargs):
            seen.append((_name, threading.current_thread()))
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(ModelManager, name, spy)
    fetch = SlowFetch(chunk=4 * 2**20, total=2**30)
    dialog = open_dialog(qtbot, loop, hub, start_download=slow_downloads(fetch))
    dialog.select("facebook/opt-350m")
    dialog.download_selected()
    run_until(loop, lambda: sum(name == "_show_progress" for name, _ in seen) >= 2, 10)
    dialog.cancel_download()
    idle(loop, dialog)
    assert {"_show_progress", "_set_cached", "set_memory", "show_message"} <= {name for name, _ in seen}
    assert all(thread is gui_thread for _, thread in seen)
    assert not [t for t in dialog.findChildren(QTimer) if t.isActive()]  # nothing polls


def test_a_failure_is_one_line_in_the_dialog_and_a_traceback_in_the_log(qtbot, loop, hub, monkeypatch, caplog):
    def broken(cache=None):
        raise RuntimeError("the cache index is corrupt\nsecond line")

    dialog = open_dialog(qtbot, loop, hub)
    monkeypatch.setattr(hub_cache, "cached_models", broken)
    with caplog.at_level(logging.ERROR, logger="opt_desktop.gui.widgets.model_manager"):
        dialog.refresh_cache()
        idle(loop, dialog)
    text = dialog.message.text()
    assert "the cache index is corrupt" in text and "\n" not in text and "RuntimeError" not in text
    [record] = [r for r in caplog.records if r.exc_info]
    assert record.exc_info[0] is RuntimeError and "Traceback" in caplog.text

    def unreachable(repo_id, *, tqdm_class, cache):
        raise OSError("Network is unreachable")

    monkeypatch.undo()  # the cache reads again
    caplog.clear()
    dialog.select("facebook/opt-350m")
    with caplog.at_level(logging.ERROR, logger="opt_desktop.gui.widgets.model_manager"):
        dialog._start_download = slow_downloads(unreachable)
        dialog.download_selected()
        idle(loop, dialog)
    assert dialog.message.text() == "Cannot download facebook/opt-350m: Network is unreachable"
    [record] = [r for r in caplog.records if r.exc_info]
    assert "OSError: Network is unreachable" in caplog.text  # the original error, with its traceback
