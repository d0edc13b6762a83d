import json
import subprocess
import sys

import pytest

from opt_desktop.engine.messages.errors import SettingsError
from opt_desktop.engine.messages.settings import GenerationSettings
from opt_desktop import folders
from opt_desktop.presets import BUILTIN_PRESETS, PRESETS_FILE, PresetStore

MINE = GenerationSettings(do_sample=True, temperature=0.55, top_k=17, top_p=0.8, typical_p=0.95, min_p=0.05,
                          repetition_penalty=1.3, no_repeat_ngram_size=3, seed=1234, max_new_tokens=300,
                          stop_strings=("\n\n", "END"))


def test_builtins_are_listed_first_and_sensible(tmp_path):
    store = PresetStore(tmp_path)
    assert store.names()[:3] == ["Greedy", "Balanced", "Creative"]
    assert store.get("Greedy").do_sample is False
    balanced, creative = store.get("Balanced"), store.get("Creative")
    assert balanced.do_sample and balanced.temperature == 0.7 and balanced.top_p == 0.9 and balanced.top_k == 50
    assert creative.do_sample and creative.temperature == 1.0 and creative.top_p == 0.95 and creative.top_k == 0
    assert all(store.is_builtin(n) for n in BUILTIN_PRESETS)
    assert store.warnings == []
    assert not (tmp_path / PRESETS_FILE).exists()  # nothing written until the user saves


def test_user_presets_persist_across_instances(tmp_path):
    store = PresetStore(tmp_path)
    assert store.save("  mine  ", MINE) == "mine"
    store.save("another", GenerationSettings(max_new_tokens=5))
    again = PresetStore(tmp_path)
    assert again.names() == ["Greedy", "Balanced", "Creative", "another", "mine"]
    assert again.get("mine") == MINE
    assert not again.is_builtin("mine")
    again.delete("mine")
    assert PresetStore(tmp_path).names() == ["Greedy", "Balanced", "Creative", "another"]


def test_save_overwrites_a_user_preset(tmp_path):
    store = PresetStore(tmp_path)
    store.save("mine", MINE)
    store.save("mine", GenerationSettings(max_new_tokens=9))
    assert PresetStore(tmp_path).get("mine").max_new_tokens == 9


@pytest.mark.parametrize("name", ["Greedy", "balanced", "CREATIVE"])
def test_builtins_cannot_be_overwritten(tmp_path, name):
    store = PresetStore(tmp_path)
    with pytest.raises(SettingsError, match="built-in"):
        store.save(name, MINE)
    assert store.get("Greedy") == BUILTIN_PRESETS["Greedy"]


def test_builtins_cannot_be_deleted(tmp_path):
    store = PresetStore(tmp_path)
    with pytest.raises(SettingsError, match="built-in preset and cannot be deleted"):
        store.delete("Balanced")
    assert "Balanced" in store.names()


def test_unknown_and_bad_names(tmp_path):
    store = PresetStore(tmp_path)
    with pytest.raises(SettingsError, match="no preset called"):
        store.get("nope")
    with pytest.raises(SettingsError, match="no preset called"):
        store.delete("nope")
    with pytest.raises(SettingsError, match="needs a name"):
        store.save("   ", MINE)
    with pytest.raises(SettingsError, match="one line"):
        store.save("a\nb", MINE)


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b'{"presets": 3}', b"\xff\xfe\x00garbage"])
def test_corrupt_file_keeps_builtins_with_a_warning(tmp_path, content):
    (tmp_path / PRESETS_FILE).write_bytes(content)
    store = PresetStore(tmp_path)
    assert store.names() == list(BUILTIN_PRESETS)
    assert len(store.warnings) == 1 and str(tmp_path / PRESETS_FILE) in store.warnings[0]
    assert "\n" not in store.warnings[0] and "built-in" in store.warnings[0]
    # The unreadable file is moved aside at once, never destroyed, and never stands in the way again.
    moved = list(folders.damaged_dir().iterdir())
    assert len(moved) == 1 and moved[0].read_bytes() == content and str(moved[0]) in store.warnings[0]
    assert not (tmp_path / PRESETS_FILE).exists()
    assert PresetStore(tmp_path).warnings == []
    store.save("mine", MINE)
    assert PresetStore(tmp_path).get("mine") == MINE


def test_one_bad_entry_is_skipped_and_the_rest_kept(tmp_path):
    good = MINE.model_dump(mode="json")
    data = {"version": 1, "presets": {"good": good, "hot": {**good, "temperature": -1},
                                      "odd": {"no_such_field": 1}, "Greedy": good, "list": [1]}}
    (tmp_path / PRESETS_FILE).write_text(json.dumps(data), encoding="utf-8")
    store = PresetStore(tmp_path)
    assert store.names() == list(BUILTIN_PRESETS) + ["good"]
    assert store.get("good") == MINE
    assert store.get("Greedy") == BUILTIN_PRESETS["Greedy"]
    assert len(store.warnings) == 1 and "4 presets" in store.warnings[0]


def test_write_is_atomic_and_leaves_no_temp_files(tmp_path):
    store = PresetStore(tmp_path / "new" / "folder")
    store.save("mine", MINE)
    folder = tmp_path / "new" / "folder"
    assert [p.name for p in folder.iterdir()] == [PRESETS_FILE]
    assert json.loads((folder / PRESETS_FILE).read_text(encoding="utf-8"))["presets"]["mine"]["seed"] == 1234


def test_failed_write_is_an_error_and_changes_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    store = PresetStore(blocker / "sub")  # the folder cannot be created under a file
    with pytest.raises(SettingsError, match="Could not save presets"):
        store.save("mine", MINE)
    assert "mine" not in store.names()


def test_presets_module_does_not_import_qt():
    code = ("import sys, opt_desktop.presets; "
            "bad = [m for m in sys.modules if m.startswith(('PySide6', 'PyQt', 'superqt', 'qtpy'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_deeply_nested_file_is_moved_aside(tmp_path):
    (tmp_path / PRESETS_FILE).write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    store = PresetStore(tmp_path)
    assert store.names() == list(BUILTIN_PRESETS) and len(store.warnings) == 1
    assert "RecursionError" not in store.warnings[0] and "nested too deeply" in store.warnings[0]


def test_default_folder_is_the_apps_config_folder(app_home):
    assert PresetStore().path == app_home / "config" / PRESETS_FILE
