"""The side panel that edits `GenerationSettings`, field for field, plus named presets.

The logic behind every button (`apply_preset`, `save_preset`, `import_json`, ...) is a public
method that reports failures through the `error` signal and returns False, so the main window
shows the message and tests drive it without dialogs. Only the button handlers open dialogs.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QTimer, Signal
from PySide6.QtWidgets import (
    QButtonGroup,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QMessageBox,
    QPushButton,
    QRadioButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ...engine.messages.errors import SettingsError
from ...engine.messages.settings import GenerationSettings
from ...presets import PresetStore
from .seed_edit import SeedEdit
from .setting_slider import SettingSlider
from .stop_strings_edit import StopStringsEdit

GENERATION_CONFIG = "generation_config.json"
_JSON_FILTER = "Generation config (*.json);;All files (*)"

# Plain-words help for every field; the same text goes on the label and on the editor.
TIPS: dict[str, str] = {
    "max_new_tokens": "The most tokens the model may add after the prompt. It can stop sooner, "
                      "at a stop string or at the end-of-text token.",
    "greedy": "Greedy: always take the single most likely next token. The same prompt always "
              "gives the same text; long outputs tend to repeat themselves.",
    "sampling": "Sampling: draw each next token at random, weighted by its probability, after the "
                "filters below (temperature, top-k, top-p, typical-p, min-p).",
    "temperature": "How adventurous sampling is. Below 1 favours the likely tokens (safer, more "
                   "repetitive); above 1 evens out the odds (more surprising, less coherent). "
                   "Must be above 0 when sampling.",
    "top_k": "Sample only from the K most likely tokens. 0 turns this filter off.",
    "top_p": "Nucleus sampling: sample only from the most likely tokens whose probabilities add up "
             "to P. 1 turns this filter off.",
    "typical_p": "Sample only from tokens about as surprising as the model expects on average, "
                 "adding up to this much probability. 1 turns this filter off.",
    "min_p": "Drop tokens less likely than this fraction of the most likely token's probability. "
             "0 turns this filter off.",
    "repetition_penalty": "Makes tokens already in the prompt or output less likely (above 1) or "
                          "more likely (below 1). 1 means no penalty.",
    "no_repeat_ngram_size": "Never let the same run of N tokens appear twice. 0 turns this off; "
                            "3 stops most word-for-word loops.",
    "seed": "Starts the random number generator here, so a sampled run can be repeated exactly. "
            "Tick 'random' for a fresh seed on every run.",
    "stop_strings": "Generation stops as soon as the output contains one of these strings. One per "
                    "line. Type the two characters \\n for a newline (\\n\\n stops at a blank "
                    "line), \\t for a tab and \\\\ for a backslash.",
    "preset": "Named sets of all these settings. Greedy, Balanced and Creative are built in; "
              "keep your own with 'Save as…'.",
}

# Fields that mean nothing to greedy decoding; they are disabled (not cleared) when greedy.
SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "typical_p", "min_p", "seed")


def _config_file(path: str | Path) -> Path:
    """`path`, or the generation_config.json in it when it is a folder."""
    path = Path(path)
    return path / GENERATION_CONFIG if path.is_dir() else path


class SettingsPanel(QWidget):
    changed = Signal()      # the user edited something (not emitted by set_settings)
    error = Signal(str)     # one readable line for the main window to show

    def __init__(self, store: PresetStore | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._store = store if store is not None else PresetStore()
        self._loading = False
        self._last_dir = ""

        self._build_presets()
        self._build_fields()

        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self._preset_box)
        layout.addWidget(self._decoding_box)
        layout.addWidget(self._sampling_box)
        layout.addWidget(self._stop_box)
        layout.addStretch(1)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)

        self._refresh_presets()
        self.set_settings(GenerationSettings())
        if self._store.warnings:
            # Deferred: whoever creates the panel connects `error` after the constructor returns.
            QTimer.singleShot(0, self, self._report_store_warnings)

    # --- public API -----------------------------------------------------------------------

    def settings(self) -> GenerationSettings:
        """The settings on screen; raises `SettingsError` for an impossible combination."""
        return GenerationSettings.parse(
            max_new_tokens=self._sliders["max_new_tokens"].value(),
            do_sample=self._sampling.isChecked(),
            temperature=self._sliders["temperature"].value(),
            top_k=self._sliders["top_k"].value(),
            top_p=self._sliders["top_p"].value(),
            typical_p=self._sliders["typical_p"].value(),
            min_p=self._sliders["min_p"].value(),
            repetition_penalty=self._sliders["repetition_penalty"].value(),
            no_repeat_ngram_size=self._sliders["no_repeat_ngram_size"].value(),
            seed=self._seed.value(),
            stop_strings=self._stop.strings(),
        )

    def set_settings(self, s: GenerationSettings) -> None:
        """Show `s` in every field. Does not emit `changed`."""
        self._loading = True
        try:
            for name, slider in self._sliders.items():
                slider.set_value(getattr(s, name))
            (self._sampling if s.do_sample else self._greedy).setChecked(True)
            self._seed.set_value(s.seed)
            self._stop.set_strings(s.stop_strings)
        finally:
            self._loading = False
        self._update_enabled()
        self._sync_preset_combo()

    def show_max_new_tokens_in_force(self, requested: int, in_force: int) -> None:
        """A run started with fewer new tokens than asked (the prompt and the answer must fit in the
        model's context): the control shows the value in force, which the next run asks for too.
        Only when the control still shows what that run asked for (a re-run asks for its own)."""
        slider = self._sliders["max_new_tokens"]
        if in_force < requested == slider.value():
            slider.set_value(in_force)
            self._sync_preset_combo()

    def field(self, name: str) -> QWidget:
        """The editor for a `GenerationSettings` field ("do_sample" gives the Sampling button)."""
        if name == "do_sample":
            return self._sampling
        return self._editors[name]

    def current_preset(self) -> str | None:
        """The preset the fields match, or None for custom settings."""
        return self._preset_combo.currentText() if self._preset_combo.currentIndex() >= 0 else None

    @property
    def store(self) -> PresetStore:
        return self._store

    def apply_preset(self, name: str) -> bool:
        try:
            s = self._store.get(name)
        except SettingsError as exc:
            return self._fail(exc)
        self.set_settings(s)
        self._select_preset(name)
        self.changed.emit()
        return True

    def save_preset(self, name: str) -> bool:
        try:
            name = self._store.save(name, self.settings())
        except SettingsError as exc:
            return self._fail(exc)
        self._refresh_presets()
        self._select_preset(name)
        return True

    def delete_preset(self, name: str) -> bool:
        try:
            self._store.delete(name)
        except SettingsError as exc:
            return self._fail(exc)
        self._refresh_presets()
        self._sync_preset_combo()
        return True

    def import_json(self, path: str | Path) -> bool:
        """Load a generation_config.json (or a folder holding one); on failure nothing changes."""
        try:
            s = GenerationSettings.load_json(_config_file(path))
        except SettingsError as exc:
            return self._fail(f"Could not import: {exc}")
        self.set_settings(s)
        self.changed.emit()
        return True

    def export_json(self, path: str | Path) -> bool:
        """Write the current settings as a generation_config.json (into `path` if it is a folder)."""
        try:
            self.settings().save_json(_config_file(path))
        except SettingsError as exc:
            return self._fail(f"Could not export: {exc}")
        return True

    def reset_defaults(self) -> None:
        self.set_settings(GenerationSettings())
        self.changed.emit()

    # --- building -------------------------------------------------------------------------

    def _build_presets(self) -> None:
        self._preset_combo = QComboBox()
        self._preset_combo.setPlaceholderText("Custom")  # shown when no preset matches the fields
        self._preset_combo.setToolTip(TIPS["preset"])
        self._preset_combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self._preset_combo.setMinimumContentsLength(8)
        self._preset_combo.activated.connect(lambda i: self.apply_preset(self._preset_combo.itemText(i)))

        def button(text: str, tip: str, slot) -> QPushButton:
            b = QPushButton(text)
            b.setToolTip(tip)
            b.clicked.connect(slot)
            return b

        self._save_button = button("Save as…", "Keep the current settings as a named preset.", self._on_save_clicked)
        self._delete_button = button("Delete", "Delete the selected preset (built-in presets cannot be deleted).",
                                     self._on_delete_clicked)
        import_button = button("Import…", "Load settings from a transformers generation_config.json file.",
                               self._on_import_clicked)
        export_button = button("Export…", "Save these settings as a transformers generation_config.json file.",
                               self._on_export_clicked)
        reset_button = button("Defaults", "Reset every field to its default value.", self.reset_defaults)

        top = QHBoxLayout()
        top.addWidget(self._preset_combo, 1)
        top.addWidget(self._save_button)
        top.addWidget(self._delete_button)
        bottom = QHBoxLayout()
        for b in (import_button, export_button, reset_button):
            bottom.addWidget(b)
        self._preset_box = QGroupBox("Preset")
        box_layout = QVBoxLayout(self._preset_box)
        box_layout.addLayout(top)
        box_layout.addLayout(bottom)

    def _build_fields(self) -> None:
        self._sliders: dict[str, SettingSlider] = {
            "max_new_tokens": SettingSlider(1, 2048, page_step=64),
            "repetition_penalty": SettingSlider(0.5, 2.0, step=0.01, decimals=2),
            "no_repeat_ngram_size": SettingSlider(0, 10, page_step=1),
            "temperature": SettingSlider(0.01, 2.0, step=0.01, decimals=2),
            "top_k": SettingSlider(0, 200, page_step=10),
            "top_p": SettingSlider(0.01, 1.0, step=0.01, decimals=2),
            "typical_p": SettingSlider(0.01, 1.0, step=0.01, decimals=2),
            "min_p": SettingSlider(0.0, 0.5, step=0.01, decimals=2),
        }
        for slider in self._sliders.values():
            slider.edited.connect(self._on_user_edit)

        self._greedy = QRadioButton("Greedy")
        self._sampling = QRadioButton("Sampling")
        self._greedy.setToolTip(TIPS["greedy"])
        self._sampling.setToolTip(TIPS["sampling"])
        self._mode_group = QButtonGroup(self)
        self._mode_group.addButton(self._greedy)
        self._mode_group.addButton(self._sampling)
        self._sampling.toggled.connect(self._on_mode_toggled)
        mode_row = QWidget()
        mode_layout = QHBoxLayout(mode_row)
        mode_layout.setContentsMargins(0, 0, 0, 0)
        mode_layout.addWidget(self._greedy)
        mode_layout.addWidget(self._sampling)
        mode_layout.addStretch(1)

        self._seed = SeedEdit()
        self._seed.edited.connect(self._on_user_edit)
        self._stop = StopStringsEdit()
        self._stop.textChanged.connect(self._on_user_edit)
        self._editors: dict[str, QWidget] = {**self._sliders, "seed": self._seed, "stop_strings": self._stop}

        self._decoding_box = QGroupBox("Decoding")
        form = self._form(self._decoding_box)
        row_label = QLabel("Mode")
        row_label.setToolTip(TIPS["greedy"] + "\n\n" + TIPS["sampling"])
        form.addRow(row_label, mode_row)
        self._add_row(form, "Max new tokens", "max_new_tokens")
        self._add_row(form, "Repetition penalty", "repetition_penalty")
        self._add_row(form, "No-repeat n-gram", "no_repeat_ngram_size")

        # Disabling the whole group greys its labels too, and `field(name).isEnabled()` follows it.
        self._sampling_box = QGroupBox("Sampling")
        form = self._form(self._sampling_box)
        self._add_row(form, "Temperature", "temperature")
        self._add_row(form, "Top-k", "top_k")
        self._add_row(form, "Top-p", "top_p")
        self._add_row(form, "Typical-p", "typical_p")
        self._add_row(form, "Min-p", "min_p")
        self._add_row(form, "Seed", "seed")

        self._stop_box = QGroupBox("Stop strings")
        self._stop_box.setToolTip(TIPS["stop_strings"])
        self._stop.setToolTip(TIPS["stop_strings"])
        stop_layout = QVBoxLayout(self._stop_box)
        stop_layout.addWidget(self._stop)

    @staticmethod
    def _form(box: QGroupBox) -> QFormLayout:
        form = QFormLayout(box)
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setHorizontalSpacing(8)
        form.setVerticalSpacing(4)
        return form

    def _add_row(self, form: QFormLayout, text: str, name: str) -> None:
        label = QLabel(text)
        editor = self._editors[name]
        label.setToolTip(TIPS[name])
        editor.setToolTip(TIPS[name])
        label.setBuddy(editor)
        form.addRow(label, editor)

    # --- reactions ------------------------------------------------------------------------

    def _on_user_edit(self) -> None:
        if self._loading:
            return
        self._sync_preset_combo()
        self.changed.emit()

    def _on_mode_toggled(self, _checked: bool) -> None:
        self._update_enabled()
        self._on_user_edit()

    def _update_enabled(self) -> None:
        self._sampling_box.setEnabled(self._sampling.isChecked())

    def _fail(self, exc: Exception | str) -> bool:
        self.error.emit(str(exc))
        return False

    def _report_store_warnings(self) -> None:
        for warning in self._store.warnings:
            self.error.emit(warning)

    # --- preset combo ---------------------------------------------------------------------

    def _refresh_presets(self) -> None:
        self._preset_combo.blockSignals(True)
        try:
            self._preset_combo.clear()
            self._preset_combo.addItems(self._store.names())
        finally:
            self._preset_combo.blockSignals(False)

    def _select_preset(self, name: str | None) -> None:
        index = self._preset_combo.findText(name) if name is not None else -1
        self._preset_combo.setCurrentIndex(index)
        self._delete_button.setEnabled(name is not None and index >= 0 and not self._store.is_builtin(name))

    def _sync_preset_combo(self) -> None:
        """Select the preset the fields match, or show "Custom" when they match none."""
        try:
            current = self.settings()
        except SettingsError:
            current = None
        selected = self.current_preset()
        names = self._store.names()
        # Prefer the selected name when two presets hold the same settings.
        if selected in names:
            names.remove(selected)
            names.insert(0, selected)
        match = next((n for n in names if current is not None and self._store.get(n) == current), None)
        self._select_preset(match)

    # --- dialogs (button handlers only) ---------------------------------------------------

    def _on_save_clicked(self) -> None:
        selected = self.current_preset()
        suggestion = "" if selected is None or self._store.is_builtin(selected) else selected
        name, ok = QInputDialog.getText(self, "Save preset", "Preset name:", text=suggestion)
        if not ok or not name.strip():
            return
        name = name.strip()
        if name in self._store and not self._store.is_builtin(name):
            answer = QMessageBox.question(self, "Save preset", f"Replace the preset {name!r}?")
            if answer != QMessageBox.StandardButton.Yes:
                return
        self.save_preset(name)

    def _on_delete_clicked(self) -> None:
        name = self.current_preset()
        if name is None:
            return
        answer = QMessageBox.question(self, "Delete preset", f"Delete the preset {name!r}?")
        if answer == QMessageBox.StandardButton.Yes:
            self.delete_preset(name)

    def _on_import_clicked(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import generation config", self._last_dir, _JSON_FILTER)
        if path:
            self._last_dir = str(Path(path).parent)
            self.import_json(path)

    def _on_export_clicked(self) -> None:
        start = str(Path(self._last_dir) / GENERATION_CONFIG) if self._last_dir else GENERATION_CONFIG
        path, _ = QFileDialog.getSaveFileName(self, "Export generation config", start, _JSON_FILTER)
        if path:
            self._last_dir = str(Path(path).parent)
            self.export_json(path)
