"""ModelBar: the request it builds, the demo's label, Load, loading state, progress and the model label."""

from __future__ import annotations

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from fakes import fake_info
from opt_desktop.engine.messages.errors import SettingsError
from opt_desktop.engine.messages.events import LoadProgress, ModeAccuracy
from opt_desktop.engine.loading.precision import Capabilities
from opt_desktop.engine.messages.settings import LoadRequest
from opt_desktop.gui.widgets.model_bar import DEMO_LABEL, PRESETS, ModelBar


@pytest.fixture
def bar(qtbot):
    b = ModelBar()
    qtbot.addWidget(b)
    b.show()
    qtbot.waitExposed(b)
    return b


def sources(bar):
    return [bar.source_combo.itemData(i) for i in range(bar.source_combo.count())]


def test_demo_first_with_a_readable_label(bar):
    assert bar.source_combo.itemText(0) == DEMO_LABEL
    assert sources(bar)[: 1 + len(PRESETS)] == ["demo"] + [s for s, _ in PRESETS]
    assert bar.source_combo.currentText() == DEMO_LABEL
    assert bar.request().source == "demo"


@pytest.mark.parametrize("request_", [
    LoadRequest(source="facebook/opt-350m", dtype="float16", device="cpu"),
    LoadRequest(source="demo", dtype="bfloat16", device="auto"),
    LoadRequest(source="/data/models/my-opt", dtype="float32", device="cuda"),
    LoadRequest(source="someone/opt-finetune", dtype="float32", device="mps"),
    LoadRequest(source="facebook/opt-125m", dtype="int8", device="cpu"),
])
def test_request_round_trips(bar, request_):
    bar.set_request(request_)
    assert bar.request() == request_


def test_typed_source_is_used_as_typed(bar):
    bar.source_combo.setEditText("  facebook/opt-1.3b ")
    assert bar.request().source == "facebook/opt-1.3b"
    bar.source_combo.setEditText("demo")
    assert bar.request().source == "demo"


def test_empty_source_raises_and_load_says_why(bar, qtbot):
    bar.source_combo.setEditText("   ")
    with pytest.raises(SettingsError):
        bar.request()
    with qtbot.assertNotEmitted(bar.load_requested):
        qtbot.mouseClick(bar.load_button, Qt.MouseButton.LeftButton)
    assert "empty" in bar.status_label.text()


def test_load_emits_the_request(bar, qtbot):
    wanted = LoadRequest(source="facebook/opt-125m", dtype="bfloat16", device="cpu")
    bar.set_request(wanted)
    with qtbot.waitSignal(bar.load_requested, timeout=1000) as blocker:
        qtbot.mouseClick(bar.load_button, Qt.MouseButton.LeftButton)
    assert blocker.args == [wanted]


def test_enter_in_the_source_emits_the_request(bar, qtbot):
    bar.source_combo.setEditText("facebook/opt-2.7b")
    with qtbot.waitSignal(bar.load_requested, timeout=1000) as blocker:
        qtbot.keyClick(bar.source_combo.lineEdit(), Qt.Key.Key_Return)
    assert blocker.args[0].source == "facebook/opt-2.7b"


def test_loading_disables_load_and_shows_progress(bar, qtbot):
    assert not bar.progress.isVisible()
    bar.set_loading(True)
    assert not bar.load_button.isEnabled() and bar.progress.isVisible() and bar.is_loading()
    with qtbot.assertNotEmitted(bar.load_requested):
        qtbot.keyClick(bar.source_combo.lineEdit(), Qt.Key.Key_Return)
    bar.set_progress(LoadProgress("Reading the config"))
    assert bar.progress.maximum() == 0  # indeterminate
    assert bar.status_label.text() == "Reading the config"
    bar.set_progress(LoadProgress("Downloading weights", 0.25))
    assert bar.progress.maximum() > 0
    assert bar.progress.value() / bar.progress.maximum() == pytest.approx(0.25)
    assert bar.status_label.text() == "Downloading weights"
    bar.set_loading(False)
    assert bar.load_button.isEnabled() and not bar.progress.isVisible()


def test_model_label(bar):
    assert "No model" in bar.model_label.text()
    info = fake_info()
    bar.set_model(info)
    text = bar.model_label.text()
    assert "random weights" in text and "float32" in text and "cpu" in text and "12.3K" in text
    assert "48.8 KiB" in text
    bar.set_model(None)
    assert "No model" in bar.model_label.text()


def test_model_label_sizes(bar):
    from dataclasses import replace

    bar.set_model(replace(fake_info(), label="facebook/opt-1.3b", n_params=1_315_758_080,
                          memory_bytes=2_631_516_160, dtype="float16", device="cuda"))
    text = bar.model_label.text()
    assert "1.3B parameters" in text and "2.5 GiB" in text
    bar.set_model(replace(fake_info(), n_params=125_239_296))
    assert "125M parameters" in bar.model_label.text()


def test_recent_sources_follow_the_presets(bar):
    bar.set_request(LoadRequest(source="/tmp/typed", dtype="float32", device="auto"))
    bar.set_recent(["/models/a", "facebook/opt-125m", "/models/a", "someone/opt-x"])
    items = sources(bar)
    presets = ["demo"] + [s for s, _ in PRESETS]
    assert items[: len(presets)] == presets
    assert [s for s in items[len(presets):] if s] == ["/models/a", "someone/opt-x"]  # deduplicated, no presets
    assert bar.request().source == "/tmp/typed"  # what was typed survives
    bar.source_combo.setCurrentIndex(items.index("someone/opt-x"))
    assert bar.request().source == "someone/opt-x"


def test_folder_button_puts_the_path_in_the_combo(bar, qtbot, monkeypatch, tmp_path):
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(tmp_path)))
    qtbot.mouseClick(bar.folder_button, Qt.MouseButton.LeftButton)
    assert bar.request().source == str(tmp_path)
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: ""))  # cancelled
    qtbot.mouseClick(bar.folder_button, Qt.MouseButton.LeftButton)
    assert bar.request().source == str(tmp_path)


CPU_ONLY = Capabilities(cpu_bf16=True, int8_engine="x86", cuda=False, mps=False, probed=True)
WITH_GPU = Capabilities(cpu_bf16=True, int8_engine="x86", cuda=True, mps=False, probed=True)


def modes(bar):
    combo = bar.dtype_combo
    return {combo.itemData(i): (combo.itemText(i), combo.model().item(i).isEnabled(),
                                combo.itemData(i, Qt.ItemDataRole.ToolTipRole)) for i in range(combo.count())}


def test_every_mode_is_offered_and_the_approximate_ones_say_so(bar):
    bar.set_capabilities(Capabilities(cpu_bf16=True, int8_engine="x86"))  # before torch: "auto" is not known yet
    shown = modes(bar)
    assert list(shown) == ["float32", "bfloat16", "float16", "int8"]
    assert "approx" not in shown["float32"][0] and "Exact" in shown["float32"][2]
    for mode in ("bfloat16", "float16", "int8"):
        assert "approx" in shown[mode][0] and "Approximate" in shown[mode][2] and shown[mode][1]


def test_modes_this_machine_cannot_run_are_greyed_out_with_the_reason(bar, qtbot):
    bar.set_capabilities(CPU_ONLY)
    bar.set_request(LoadRequest(source="demo", dtype="float32", device="auto"))  # auto is the CPU here
    shown = modes(bar)
    assert not shown["float16"][1] and "GPUs" in shown["float16"][2]
    assert shown["int8"][1] and shown["bfloat16"][1] and "fast here" in shown["bfloat16"][2]

    bar.set_capabilities(WITH_GPU)  # auto is now the GPU: int8 cannot run there, float16 can
    shown = modes(bar)
    assert not shown["int8"][1] and "CPU only" in shown["int8"][2] and shown["float16"][1]
    bar.set_request(LoadRequest(source="demo", dtype="float16", device="cpu"))
    assert not modes(bar)["float16"][1]


def test_load_refuses_a_mode_that_cannot_run_and_says_why(bar, qtbot):
    bar.set_capabilities(Capabilities(cpu_bf16=False, int8_engine=None, cuda=False, mps=False, probed=True))
    assert "slower than float32" in modes(bar)["bfloat16"][2]  # allowed, but said to be slow
    bar.set_request(LoadRequest(source="demo", dtype="int8", device="cpu"))
    assert "quantized" in bar.status_label.text() and not modes(bar)["int8"][1]
    with qtbot.assertNotEmitted(bar.load_requested):
        qtbot.mouseClick(bar.load_button, Qt.MouseButton.LeftButton)
    assert "int8" in bar.status_label.text()
    bar.set_request(LoadRequest(source="demo", dtype="bfloat16", device="cpu"))
    assert bar.status_label.text() == ""
    with qtbot.waitSignal(bar.load_requested, timeout=1000):
        qtbot.mouseClick(bar.load_button, Qt.MouseButton.LeftButton)


def test_model_tooltip_gives_the_measured_accuracy(bar):
    from dataclasses import replace

    bar.set_model(replace(fake_info(), dtype="int8",
                          accuracy=ModeAccuracy(mean_kl=0.00312, top1_agreement=0.9811, n_positions=53)))
    assert "int8 (approximate)" in bar.model_label.text()
    tip = bar.model_label.toolTip()
    assert "mean KL 0.00312" in tip and "top-1 agreement 98%" in tip and "vs float32" in tip
    bar.set_model(replace(fake_info(), dtype="bfloat16", device="cuda"))
    assert "not measured" in bar.model_label.toolTip()
    bar.set_model(fake_info())
    assert "exact" in bar.model_label.toolTip() and "approximate" not in bar.model_label.text()


def test_a_spread_model_shows_where_its_parts_went(qtbot):
    import dataclasses

    from opt_desktop.engine.messages.events import ModelInfo

    bar = ModelBar()
    qtbot.addWidget(bar)
    info = ModelInfo(source="facebook/opt-66b", label="facebook/opt-66b", n_layers=64, n_heads=72, hidden_size=9216,
                     word_embed_proj_dim=9216, ffn_dim=36864, vocab_size=50272, context_length=2048,
                     n_params=65_700_000_000, dtype="float16", device="cuda", memory_bytes=131 * 2**30,
                     pre_layer_norm=True,
                     placement=(("layers 0-31", "cuda:0"), ("layers 32-63", "cuda:1"), ("lm_head", "cpu")))
    bar.set_model(info)
    assert "layers 0-31: cuda:0 · layers 32-63: cuda:1 · lm_head: cpu" in bar.model_label.text()
    bar.set_model(dataclasses.replace(info, placement=()))
    assert " · cuda · " in bar.model_label.text()
