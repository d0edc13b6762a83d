"""The model manager dialog, offscreen, against a Hub cache folder built here."""

import time

import pytest
from PySide6.QtCore import Qt

from hub_cache_fixture import SlowFetch, build_hub_cache, repo_folder
from models import save_tiny_opt
from opt_desktop.engine import LoadRequest
from opt_desktop.engine.catalog import OFFICIAL, GpuMemory, MachineMemory
from opt_desktop.engine.hub_cache import Download
from opt_desktop.gui.widgets.model_manager import MEMORY_COLUMN, ModelManager, describe_progress

GIB = 2**30


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return save_tiny_opt(tmp_path_factory.mktemp("tiny"), "pre")


@pytest.fixture
def hub(tmp_path, tiny):
    hub = tmp_path / "hub"
    build_hub_cache(hub, "facebook/opt-125m", tiny)
    return hub


def open_dialog(qtbot, hub, **kw) -> ModelManager:
    dialog = ModelManager(cache=hub, check_network=False, **kw)
    qtbot.addWidget(dialog)
    dialog.show()
    qtbot.waitUntil(lambda: not dialog.is_busy(), timeout=10_000)
    return dialog


def test_lists_the_official_checkpoints_and_the_demo(qtbot, hub):
    dialog = open_dialog(qtbot, hub)
    assert dialog.sources() == [c.source for c in OFFICIAL] + ["demo"]
    assert dialog.table.rowCount() == 9
    demo_row = dialog.row_of("demo")
    assert "random weights" in dialog.table.item(demo_row, 0).text()
    assert dialog.cache_text("demo") == "built in"
    row = dialog.row_of("facebook/opt-66b")
    assert [dialog.table.item(row, c).text() for c in (1, 2, 3, 4)] == ["64", "72", "9216", "65.7B"]


def test_marks_the_cached_checkpoint(qtbot, hub):
    dialog = open_dialog(qtbot, hub)
    assert dialog.cache_text("facebook/opt-125m").startswith("✓")
    assert all(dialog.cache_text(c.source) == "" for c in OFFICIAL[1:])
    dialog.select("facebook/opt-125m")
    assert dialog.delete_button.isEnabled() and not dialog.download_button.isEnabled()
    dialog.select("facebook/opt-350m")
    assert dialog.download_button.isEnabled() and not dialog.delete_button.isEnabled()


def test_delete_asks_then_removes_it_from_the_cache(qtbot, hub, monkeypatch):
    dialog = open_dialog(qtbot, hub)
    dialog.select("facebook/opt-125m")
    asked = []
    monkeypatch.setattr(dialog, "confirm_delete", lambda repo, size: asked.append(repo) or False)
    qtbot.mouseClick(dialog.delete_button, Qt.MouseButton.LeftButton)
    assert asked == ["facebook/opt-125m"] and repo_folder(hub, "facebook/opt-125m").exists()  # declined

    monkeypatch.setattr(dialog, "confirm_delete", lambda repo, size: True)
    qtbot.mouseClick(dialog.delete_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: dialog.cache_text("facebook/opt-125m") == "", timeout=10_000)
    assert not repo_folder(hub, "facebook/opt-125m").exists()
    assert "Deleted facebook/opt-125m" in dialog.message.text()


def test_load_emits_the_request_the_dialog_shows(qtbot, hub, tmp_path):
    dialog = open_dialog(qtbot, hub, request=LoadRequest(source="facebook/opt-125m", dtype="bfloat16"))
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


def test_int8_is_offered_and_a_bad_max_memory_is_explained(qtbot, hub):
    dialog = open_dialog(qtbot, hub)
    assert [dialog.precision_combo.itemData(i) for i in range(dialog.precision_combo.count())] == [
        "float32", "bfloat16", "float16", "int8"]
    dialog.select("demo")
    dialog.placement_combo.setCurrentIndex(dialog.placement_combo.findData("spread"))
    dialog.max_memory_edit.setText("lots")
    emitted = []
    dialog.load_requested.connect(emitted.append)
    dialog.load()
    assert emitted == [] and "device=size" in dialog.message.text() and dialog.isVisible()


def test_memory_cells_compare_with_this_machine(qtbot, hub):
    dialog = open_dialog(qtbot, hub)
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


def test_cancel_stops_a_slow_download_and_leaves_no_partial_file(qtbot, hub):
    fetch = SlowFetch()
    dialog = open_dialog(qtbot, hub, start_download=lambda repo, cache: Download(repo, cache=cache,
                                                                                 fetch=fetch).start())
    dialog.select("facebook/opt-1.3b")
    qtbot.mouseClick(dialog.download_button, Qt.MouseButton.LeftButton)
    assert dialog.progress.isVisible() and dialog.cancel_button.isEnabled()
    qtbot.waitUntil(lambda: "iB/s" in dialog.progress_label.text(),
                    timeout=10_000)
    assert "Downloading facebook/opt-1.3b:" in dialog.progress_label.text() and "left" in dialog.progress_label.text()
    assert dialog.progress.value() >= 0 and list(hub.rglob("*.incomplete"))

    qtbot.mouseClick(dialog.cancel_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not dialog.is_busy(), timeout=10_000)
    written = fetch.written
    time.sleep(0.1)
    assert fetch.written == written
    assert list(hub.rglob("*.incomplete")) == []
    assert "cancelled" in dialog.message.text() and not dialog.progress.isVisible()
    assert dialog.download_button.isEnabled()


def test_closing_cancels_a_running_download(qtbot, hub):
    fetch = SlowFetch()
    dialog = open_dialog(qtbot, hub, start_download=lambda repo, cache: Download(repo, cache=cache,
                                                                                 fetch=fetch).start())
    dialog.select("facebook/opt-2.7b")
    dialog.download_selected()
    qtbot.waitUntil(lambda: fetch.written > 0, timeout=10_000)
    dialog.reject()
    written = fetch.written
    time.sleep(0.1)
    assert fetch.written == written and list(hub.rglob("*.incomplete")) == []


def test_open_folder_checks_it_off_the_gui_thread(qtbot, hub, tiny, tmp_path):
    dialog = open_dialog(qtbot, hub)
    empty = tmp_path / "empty"
    empty.mkdir()
    dialog.add_folder(empty)
    qtbot.waitUntil(lambda: not dialog.is_busy(), timeout=60_000)
    assert "no config.json" in dialog.message.text() and str(empty) not in dialog.sources()

    dialog.add_folder(tiny)
    qtbot.waitUntil(lambda: not dialog.is_busy(), timeout=60_000)
    assert dialog.sources()[-1] == str(tiny.resolve()) and dialog.selected().source == str(tiny.resolve())
    row = dialog.row_of(str(tiny.resolve()))
    assert dialog.table.item(row, 1).text() == "3" and dialog.cache_text(str(tiny.resolve())) == "local folder"
    with qtbot.waitSignal(dialog.load_requested, timeout=2000) as blocker:
        dialog.load()
    assert blocker.args[0].source == str(tiny.resolve())


def test_progress_text():
    from opt_desktop.engine.hub_cache import DownloadProgress

    text = describe_progress("facebook/opt-125m", DownloadProgress(done=120 * 2**20, total=250 * 2**20, elapsed=24.0))
    assert text == "Downloading facebook/opt-125m: 120 MiB of 250 MiB · 5.0 MiB/s · 26 s left"


def test_a_mode_this_machine_cannot_run_is_refused_in_the_dialog(qtbot, tmp_path, monkeypatch):
    from opt_desktop.engine import precision

    monkeypatch.setattr(precision, "capabilities", lambda probe=None: precision.Capabilities(
        cpu_bf16=True, int8_engine=None, cuda=False, mps=False, probed=True))
    dlg = ModelManager(None, cache=tmp_path / "hub", check_network=False)
    qtbot.addWidget(dlg)
    dlg.select("demo")
    dlg.precision_combo.setCurrentIndex(dlg.precision_combo.findData("int8"))
    emitted = []
    dlg.load_requested.connect(emitted.append)
    dlg.load()
    assert emitted == [] and dlg.message.text() == precision.NO_INT8
    dlg.precision_combo.setCurrentIndex(dlg.precision_combo.findData("float32"))
    dlg.load()
    assert [r.dtype for r in emitted] == ["float32"]
