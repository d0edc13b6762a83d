import json

import pytest
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QComboBox, QFileDialog, QInputDialog, QLabel, QMessageBox, QPushButton
from transformers import GenerationConfig

from opt_desktop.engine.messages.errors import SettingsError
from opt_desktop.engine.messages.settings import GenerationSettings
from opt_desktop.gui.widgets.settings_panel import SAMPLING_FIELDS, SettingsPanel
from opt_desktop.gui.widgets.stop_strings_edit import escape_stop_string, unescape_stop_string
from opt_desktop.presets import BUILTIN_PRESETS, PRESETS_FILE, PresetStore

ALL_FIELDS = tuple(GenerationSettings.model_fields)
EVERY_FIELD_CHANGED = GenerationSettings(
    max_new_tokens=321, do_sample=True, temperature=0.55, top_k=17, top_p=0.8, typical_p=0.95, min_p=0.05,
    repetition_penalty=1.3, no_repeat_ngram_size=3, seed=2**40 + 7, stop_strings=("\n\n", "END", "a\\nb", " "),
)


@pytest.fixture
def panel(qtbot, tmp_path):
    p = SettingsPanel(PresetStore(tmp_path / "config"))
    qtbot.addWidget(p)
    p.resize(320, 560)
    p.show()  # mouse clicks only reach a laid-out, visible widget
    qtbot.waitExposed(p)
    return p


class Recorder:
    def __init__(self, signal):
        self.calls = []
        signal.connect(lambda *args: self.calls.append(args))


def test_every_field_differs_from_default_in_the_fixture():
    defaults = GenerationSettings()
    assert all(getattr(EVERY_FIELD_CHANGED, f) != getattr(defaults, f) for f in ALL_FIELDS)


@pytest.mark.parametrize("settings", [
    EVERY_FIELD_CHANGED,
    EVERY_FIELD_CHANGED.replace(do_sample=False),  # disabled fields still keep and report their values
    GenerationSettings(),
    # Outside the sliders' ranges (an imported file): shown and read back exactly, not clamped.
    GenerationSettings(max_new_tokens=5000, temperature=3.5, top_k=1000, min_p=0.9, repetition_penalty=4.0,
                       no_repeat_ngram_size=20, top_p=0.005),
    GenerationSettings(temperature=0.0),  # greedy does not care about temperature
    # Values off the slider grid are kept exactly when set from code.
    GenerationSettings(do_sample=True, temperature=0.875, top_p=0.333),
    *BUILTIN_PRESETS.values(),
])
def test_set_settings_round_trips_every_field(panel, settings):
    changed = Recorder(panel.changed)
    panel.set_settings(settings)
    assert panel.settings() == settings
    assert changed.calls == []  # only the user's edits count as changes


def test_greedy_disables_sampling_fields_and_sampling_enables_them(panel, qtbot):
    changed = Recorder(panel.changed)
    panel.set_settings(GenerationSettings(do_sample=False))
    always = [f for f in ALL_FIELDS if f not in SAMPLING_FIELDS]
    assert not any(panel.field(f).isEnabled() for f in SAMPLING_FIELDS)
    assert all(panel.field(f).isEnabled() for f in always)

    qtbot.mouseClick(panel.field("do_sample"), Qt.MouseButton.LeftButton)
    assert panel.settings().do_sample is True
    assert all(panel.field(f).isEnabled() for f in SAMPLING_FIELDS + tuple(always))
    assert changed.calls  # a click is a user edit

    panel.set_settings(GenerationSettings(do_sample=False))
    assert not any(panel.field(f).isEnabled() for f in SAMPLING_FIELDS)


def test_random_seed_means_none(panel, qtbot):
    panel.set_settings(GenerationSettings(do_sample=True, seed=42))
    seed = panel.field("seed")
    assert seed.number_edit().isEnabled() and seed.number_edit().text() == "42"
    changed = Recorder(panel.changed)
    qtbot.mouseClick(seed.random_checkbox(), Qt.MouseButton.LeftButton)
    assert panel.settings().seed is None
    assert not seed.number_edit().isEnabled()
    assert changed.calls
    # Unticking brings back a concrete seed (the previous one), never an empty box.
    qtbot.mouseClick(seed.random_checkbox(), Qt.MouseButton.LeftButton)
    assert panel.settings().seed == 42


def test_seed_typed_by_the_user(panel, qtbot):
    panel.set_settings(GenerationSettings(do_sample=True, seed=1))
    edit = panel.field("seed").number_edit()
    edit.clear()
    qtbot.keyClicks(edit, "9x8")  # the validator refuses the letter
    assert panel.settings().seed == 98
    edit.clear()
    with pytest.raises(SettingsError, match="seed"):
        panel.settings()
    qtbot.keyClicks(edit, "9" * 25)  # the validator stops at 19 digits ...
    assert edit.text() == "9" * 19
    with pytest.raises(SettingsError, match="at most"):  # ... which can still exceed 2**63 - 1
        panel.settings()


def test_stop_strings_backslash_n_means_newline(panel, qtbot):
    stop = panel.field("stop_strings")
    changed = Recorder(panel.changed)
    stop.clear()
    qtbot.keyClicks(stop, r"\n\n")
    assert panel.settings().stop_strings == ("\n\n",)
    assert changed.calls
    stop.setPlainText("END\n\n" + r"a\\nb" + "\n" + r"tab\there" + "\n" + r"c:\path")
    assert panel.settings().stop_strings == ("END", "a\\nb", "tab\there", "c:\\path")
    panel.set_settings(GenerationSettings(stop_strings=("x\ny", "lit\\n")))
    assert stop.toPlainText() == "x\\ny\nlit\\\\n"
    assert "\\n" in stop.toolTip()


@pytest.mark.parametrize("s", ["", "plain", "\n", "\\", "\\n", "a\r\nb\t", "\\\\n\n", "end\\"])
def test_stop_string_escape_round_trip(s):
    line = escape_stop_string(s)
    assert "\n" not in line
    assert unescape_stop_string(line) == s


def test_every_field_has_a_plain_words_tooltip(panel):
    for name in ALL_FIELDS:
        assert len(panel.field(name).toolTip()) > 20, name
    labels = [w for w in panel.findChildren(QLabel) if w.buddy() is not None]
    assert len(labels) >= len(ALL_FIELDS) - 2  # every form row but the mode buttons and stop box
    assert all(label.toolTip() for label in labels)


def test_user_slider_edits_snap_to_the_shown_step(panel):
    panel.set_settings(GenerationSettings(do_sample=True))
    changed = Recorder(panel.changed)
    panel.field("temperature").slider().setValue(0.7234)  # what a drag produces
    assert panel.settings().temperature == 0.72
    panel.field("top_k").slider().setValue(30)
    assert panel.settings().top_k == 30
    assert len(changed.calls) == 2


@pytest.mark.parametrize("name", list(BUILTIN_PRESETS))
def test_builtin_presets_round_trip_through_generation_config_json(panel, tmp_path, name):
    assert panel.apply_preset(name)
    expected = BUILTIN_PRESETS[name]
    assert panel.settings() == expected
    folder = tmp_path / "export"
    folder.mkdir()
    assert panel.export_json(folder / "generation_config.json")

    gc = GenerationConfig.from_pretrained(folder)  # transformers reads what we wrote
    assert gc.do_sample == expected.do_sample and gc.max_new_tokens == expected.max_new_tokens
    if expected.do_sample:
        assert (gc.temperature, gc.top_k, gc.top_p) == (expected.temperature, expected.top_k, expected.top_p)
    assert GenerationSettings.from_generation_config(gc) == expected

    panel.reset_defaults()
    panel.set_settings(EVERY_FIELD_CHANGED)
    assert panel.import_json(folder / "generation_config.json")
    assert panel.settings() == expected


def test_export_into_a_folder_and_import_from_it(panel, tmp_path):
    panel.set_settings(EVERY_FIELD_CHANGED)
    assert panel.export_json(tmp_path)
    assert (tmp_path / "generation_config.json").is_file()
    panel.reset_defaults()
    assert panel.import_json(tmp_path)
    assert panel.settings() == EVERY_FIELD_CHANGED


@pytest.mark.parametrize("content", [
    "{not json",
    "[1, 2, 3]",
    json.dumps({"do_sample": True, "temperature": -2}),
    json.dumps({"max_new_tokens": 0}),
])
def test_corrupt_import_shows_an_error_and_changes_nothing(panel, tmp_path, content):
    path = tmp_path / "generation_config.json"
    path.write_text(content, encoding="utf-8")
    panel.set_settings(EVERY_FIELD_CHANGED)
    errors, changed = Recorder(panel.error), Recorder(panel.changed)
    assert panel.import_json(path) is False
    assert len(errors.calls) == 1 and errors.calls[0][0].startswith("Could not import")
    assert "\n" not in errors.calls[0][0]
    assert changed.calls == []
    assert panel.settings() == EVERY_FIELD_CHANGED


def test_import_of_a_missing_file_is_an_error(panel, tmp_path):
    errors = Recorder(panel.error)
    assert panel.import_json(tmp_path / "nope.json") is False
    assert "no such file" in errors.calls[0][0]


def test_impossible_combination_raises_and_export_reports_it(panel, tmp_path):
    panel.set_settings(GenerationSettings(temperature=0.0))  # fine while greedy
    panel.field("do_sample").click()
    with pytest.raises(SettingsError, match="temperature"):
        panel.settings()
    errors = Recorder(panel.error)
    assert panel.export_json(tmp_path / "generation_config.json") is False
    assert "temperature" in errors.calls[0][0]
    assert not (tmp_path / "generation_config.json").exists()


def test_presets_save_apply_delete_through_the_panel(qtbot, tmp_path):
    store = PresetStore(tmp_path)
    panel = SettingsPanel(store)
    qtbot.addWidget(panel)
    combo = panel.findChild(QComboBox)
    assert [combo.itemText(i) for i in range(combo.count())] == list(BUILTIN_PRESETS)
    assert panel.current_preset() == "Greedy"  # the defaults are exactly the Greedy preset

    panel.set_settings(EVERY_FIELD_CHANGED)
    assert panel.current_preset() is None and combo.currentIndex() == -1  # "Custom"
    assert panel.save_preset("mine")
    assert panel.current_preset() == "mine"
    assert PresetStore(tmp_path).get("mine") == EVERY_FIELD_CHANGED  # written to disk

    changed = Recorder(panel.changed)
    assert panel.apply_preset("Creative")
    assert panel.settings() == BUILTIN_PRESETS["Creative"] and panel.current_preset() == "Creative"
    assert changed.calls
    assert panel.apply_preset("mine")
    assert panel.settings() == EVERY_FIELD_CHANGED

    assert panel.delete_preset("mine")
    assert "mine" not in [combo.itemText(i) for i in range(combo.count())]
    assert PresetStore(tmp_path).names() == list(BUILTIN_PRESETS)
    assert panel.settings() == EVERY_FIELD_CHANGED  # deleting a preset leaves the fields alone


def test_builtin_presets_cannot_be_deleted_or_overwritten(panel):
    errors = Recorder(panel.error)
    assert panel.delete_preset("Greedy") is False
    assert panel.save_preset("Balanced") is False
    assert panel.apply_preset("no such preset") is False
    assert len(errors.calls) == 3
    assert "cannot be deleted" in errors.calls[0][0] and "cannot be overwritten" in errors.calls[1][0]
    assert panel.store.names() == list(BUILTIN_PRESETS)


def test_user_edit_switches_the_combo_to_custom_and_back(panel):
    panel.apply_preset("Balanced")
    combo = panel.findChild(QComboBox)
    panel.field("top_k").slider().setValue(51)
    assert panel.current_preset() is None and combo.placeholderText() == "Custom"
    panel.field("top_k").slider().setValue(50)
    assert panel.current_preset() == "Balanced"
    combo.activated.emit(combo.findText("Creative"))  # the user picks from the drop-down
    assert panel.settings() == BUILTIN_PRESETS["Creative"]


def button(panel, text):
    return next(b for b in panel.findChildren(QPushButton) if b.text() == text)


def test_delete_button_only_for_user_presets(panel):
    panel.apply_preset("Greedy")
    assert not button(panel, "Delete").isEnabled()
    panel.set_settings(EVERY_FIELD_CHANGED)
    panel.save_preset("mine")
    assert button(panel, "Delete").isEnabled()


def test_buttons_go_through_their_dialogs(panel, qtbot, tmp_path, monkeypatch):
    """The dialogs are replaced; this checks the wiring from each button to its logic method."""
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(lambda *a, **k: ("  mine ", True)))
    monkeypatch.setattr(QMessageBox, "question", staticmethod(lambda *a, **k: QMessageBox.StandardButton.Yes))
    target = str(tmp_path / "out.json")
    monkeypatch.setattr(QFileDialog, "getSaveFileName", staticmethod(lambda *a, **k: (target, "")))
    monkeypatch.setattr(QFileDialog, "getOpenFileName", staticmethod(lambda *a, **k: (target, "")))

    panel.set_settings(EVERY_FIELD_CHANGED)
    qtbot.mouseClick(button(panel, "Save as…"), Qt.MouseButton.LeftButton)
    assert panel.store.get("mine") == EVERY_FIELD_CHANGED and panel.current_preset() == "mine"
    qtbot.mouseClick(button(panel, "Export…"), Qt.MouseButton.LeftButton)
    assert GenerationSettings.load_json(target) == EVERY_FIELD_CHANGED
    qtbot.mouseClick(button(panel, "Defaults"), Qt.MouseButton.LeftButton)
    assert panel.settings() == GenerationSettings()
    qtbot.mouseClick(button(panel, "Import…"), Qt.MouseButton.LeftButton)
    assert panel.settings() == EVERY_FIELD_CHANGED
    qtbot.mouseClick(button(panel, "Delete"), Qt.MouseButton.LeftButton)
    assert "mine" not in panel.store.names()


def test_corrupt_presets_file_keeps_builtins_and_reports_once(qtbot, tmp_path):
    (tmp_path / PRESETS_FILE).write_text("{oops", encoding="utf-8")
    panel = SettingsPanel(PresetStore(tmp_path))
    qtbot.addWidget(panel)
    errors = Recorder(panel.error)  # connected after construction, as the main window does
    qtbot.waitUntil(lambda: len(errors.calls) == 1)
    assert "presets" in errors.calls[0][0] and "built-in" in errors.calls[0][0]
    assert panel.apply_preset("Creative")


def test_reset_defaults(panel):
    panel.set_settings(EVERY_FIELD_CHANGED)
    changed = Recorder(panel.changed)
    panel.reset_defaults()
    assert panel.settings() == GenerationSettings()
    assert changed.calls


def test_fits_a_narrow_side_panel(panel):
    assert panel.minimumSizeHint().width() <= 330
