"""Pick a model (Hub id, local folder or the demo), a dtype and a device; load it and watch it load."""

from __future__ import annotations

import html
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QSizePolicy,
    QVBoxLayout,
    QWidget,
)

from ...engine.loading import precision
from ...engine.loading.demo import DEMO_LABEL
from ...engine.messages.events import LoadProgress, ModelInfo
from ...engine.loading.placement import placement_summary
from ...engine.messages.settings import DEMO_SOURCE, LoadRequest
from ...formatting import format_bytes, format_count

# (Hub id, approximate download in float16) — the size helps people pick one their machine can hold.
PRESETS: tuple[tuple[str, str], ...] = (
    ("facebook/opt-125m", "about 250 MB"),
    ("facebook/opt-350m", "about 700 MB"),
    ("facebook/opt-1.3b", "about 2.6 GB"),
    ("facebook/opt-2.7b", "about 5.3 GB"),
    ("facebook/opt-6.7b", "about 13 GB"),
    ("facebook/opt-13b", "about 26 GB"),
    ("facebook/opt-30b", "about 60 GB"),
    ("facebook/opt-66b", "about 130 GB"),
)

# Precision modes: (value, what the combo shows). Every mode but float32 is approximate.
DTYPES: tuple[tuple[str, str], ...] = tuple(
    (mode, f"{mode} (approx.)" if precision.is_approximate(mode) else mode) for mode in precision.MODES)
DEVICES: tuple[tuple[str, str], ...] = (
    ("auto", "The best device this machine has: CUDA, then MPS, then the CPU."),
    ("cpu", "The processor: works everywhere, slowest."),
    ("cuda", "An NVIDIA GPU."),
    ("mps", "An Apple-silicon GPU."),
)


def _combo(items: tuple[tuple[str, str], ...], tip: str) -> QComboBox:
    box = QComboBox()
    for value, help_text in items:
        box.addItem(value, value)
        box.setItemData(box.count() - 1, help_text, Qt.ItemDataRole.ToolTipRole)
    box.setToolTip(tip)
    return box


class ModelBar(QWidget):
    """A strip across the top of the window: source, dtype, device, Load; then loading state or the model."""

    load_requested = Signal(object)  # LoadRequest
    manager_requested = Signal()  # the person wants the model manager

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._loading = False
        self._info: ModelInfo | None = None
        self._recent: list[str] = []

        self.source_combo = QComboBox(self)
        self.source_combo.setEditable(True)
        self.source_combo.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)  # recent ones come from set_recent
        self.source_combo.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Fixed)
        self.source_combo.setMinimumContentsLength(24)
        self.source_combo.setToolTip("A Hugging Face Hub id (facebook/opt-…), a local folder, or the demo model.")
        self.source_combo.lineEdit().setPlaceholderText("Hub id, folder or demo")
        self.source_combo.lineEdit().returnPressed.connect(self._on_load)
        self.folder_button = QPushButton("Folder…", self)
        self.folder_button.setToolTip("Load a model saved in a local folder (config.json and weights).")
        self.folder_button.clicked.connect(self._choose_folder)
        self.manager_button = QPushButton("Models…", self)
        self.manager_button.setToolTip("The model manager (Ctrl+M): every OPT size, the memory each needs on this "
                                       "machine, downloads and the Hugging Face cache.")
        self.manager_button.clicked.connect(self.manager_requested)
        self.dtype_combo = QComboBox(self)
        for value, text in DTYPES:
            self.dtype_combo.addItem(text, value)
        self.dtype_combo.currentIndexChanged.connect(self._show_mode_problem)
        self.device_combo = _combo(DEVICES, "Where the model runs.")
        self.device_combo.currentIndexChanged.connect(self._refresh_modes)
        self._caps = precision.capabilities()  # a guess until torch has loaded; see set_model
        self.load_button = QPushButton("Load", self)
        self.load_button.clicked.connect(self._on_load)

        self.model_label = QLabel(self)
        self.model_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.status_label = QLabel(self)
        self.status_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.progress = QProgressBar(self)
        self.progress.setTextVisible(False)
        self.progress.setMaximumWidth(180)
        self.progress.hide()

        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(QLabel("Model", self))
        top.addWidget(self.source_combo, 1)
        top.addWidget(self.folder_button)
        top.addWidget(self.manager_button)
        top.addSpacing(8)
        top.addWidget(QLabel("dtype", self))
        top.addWidget(self.dtype_combo)
        top.addWidget(QLabel("device", self))
        top.addWidget(self.device_combo)
        top.addSpacing(8)
        top.addWidget(self.load_button)
        bottom = QHBoxLayout()
        bottom.setContentsMargins(0, 0, 0, 0)
        bottom.addWidget(self.model_label, 1)
        bottom.addWidget(self.status_label)
        bottom.addWidget(self.progress)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(4)
        layout.addLayout(top)
        layout.addLayout(bottom)

        self._fill_sources()
        self._refresh_modes()
        self.set_model(None)

    # --- public API -----------------------------------------------------------------------------

    def request(self) -> LoadRequest:
        """The request the controls describe; raises SettingsError for an empty source."""
        return LoadRequest.parse(source=self._source(), dtype=self.dtype_combo.currentData(),
                                 device=self.device_combo.currentData())

    def set_request(self, request: LoadRequest) -> None:
        self._set_source(request.source)
        self._select(self.dtype_combo, request.dtype)
        self._select(self.device_combo, request.device)

    def set_recent(self, sources: list[str]) -> None:
        """Sources loaded before, newest first; shown after the presets."""
        self._recent = list(dict.fromkeys(s for s in sources if s))
        self._fill_sources()

    def set_loading(self, loading: bool) -> None:
        self._loading = loading
        if self._info is None:
            self.set_model(None)  # "Loading the model…" rather than "No model loaded"
        self.load_button.setEnabled(not loading)
        self.progress.setVisible(loading)
        if loading:
            self.progress.setRange(0, 0)  # busy until the first progress step says otherwise
            self.status_label.setText("Loading…")
        else:
            self._show_mode_problem()  # clears the status, or says why the chosen mode cannot run

    def is_loading(self) -> bool:
        return self._loading

    def set_progress(self, progress: LoadProgress) -> None:
        self.status_label.setText(progress.message)
        if progress.fraction is None:
            self.progress.setRange(0, 0)  # indeterminate: Qt animates a busy bar
        else:
            self.progress.setRange(0, 1000)
            self.progress.setValue(round(min(max(progress.fraction, 0.0), 1.0) * 1000))

    def set_capabilities(self, caps: precision.Capabilities) -> None:
        """What this machine runs (the model bar guesses without torch until a model has loaded)."""
        self._caps = caps
        self._refresh_modes()

    def mode_problem(self) -> str | None:
        """Why the chosen precision mode cannot run on the chosen device here; None when it can."""
        return precision.mode_problem(self.dtype_combo.currentData(), self.device_combo.currentData(), self._caps)

    def set_model(self, info: ModelInfo | None) -> None:
        self._info = info
        if info is None:
            self.model_label.setText("Loading the model…" if self._loading
                                     else "No model loaded: pick one above and press Load.")
            self.model_label.setToolTip("")
            return
        mode = info.dtype if not precision.is_approximate(info.dtype) else f"{info.dtype} (approximate)"
        spread = placement_summary(info)  # "" on one device
        where = html.escape(spread) if spread else info.device
        self.model_label.setText(
            f"<b>{html.escape(info.label)}</b> · {mode} · {where} · "
            f"{format_count(info.n_params)} parameters · {format_bytes(info.memory_bytes)}")
        norm = "pre-LayerNorm" if info.pre_layer_norm else "post-LayerNorm"
        tip = (f"{html.escape(info.source)}<br>{info.n_layers} layers · {info.n_heads} heads · "
               f"hidden {info.hidden_size} · FFN {info.ffn_dim} · {norm}<br>"
               f"context {info.context_length} tokens · vocabulary {info.vocab_size}")
        tip += f"<br>{html.escape(accuracy_text(info))}"
        if info.random_weights:
            tip += "<br><b>Random weights: the text is noise; use it to try the app.</b>"
        self.model_label.setToolTip(tip)

    # --- internals ------------------------------------------------------------------------------

    def _fill_sources(self) -> None:
        combo = self.source_combo
        current = self._source()
        combo.blockSignals(True)
        combo.clear()
        combo.addItem(DEMO_LABEL, DEMO_SOURCE)
        combo.setItemData(0, "A tiny OPT trained on Python's documentation by this project (not OPT's weights): "
                             "built in, no download.",
                          Qt.ItemDataRole.ToolTipRole)
        for source, size in PRESETS:
            combo.addItem(source, source)
            combo.setItemData(combo.count() - 1, f"Download {size} in float16, twice that in float32.",
                              Qt.ItemDataRole.ToolTipRole)
        known = {DEMO_SOURCE} | {s for s, _ in PRESETS}
        recent = [s for s in self._recent if s not in known]
        if recent:
            combo.insertSeparator(combo.count())
            for source in recent:
                combo.addItem(source, source)
                combo.setItemData(combo.count() - 1, "Recently used", Qt.ItemDataRole.ToolTipRole)
        combo.blockSignals(False)
        self._set_source(current or DEMO_SOURCE)

    def _set_source(self, source: str) -> None:
        index = self.source_combo.findData(source)
        if index >= 0:
            self.source_combo.setCurrentIndex(index)
        else:
            self.source_combo.setEditText(source)
        self.source_combo.lineEdit().setCursorPosition(0)  # show a long label or path from its start

    def _source(self) -> str:
        """The typed text, or the data of the item whose label it is (the demo's label means "demo")."""
        text = self.source_combo.currentText().strip()
        index = self.source_combo.findText(text, Qt.MatchFlag.MatchExactly)
        if index >= 0 and self.source_combo.itemData(index):
            return str(self.source_combo.itemData(index))
        return text

    def _refresh_modes(self) -> None:
        """Grey out the modes this machine cannot run on the chosen device, saying why in their tooltips."""
        device = self.device_combo.currentData()
        model = self.dtype_combo.model()
        for i in range(self.dtype_combo.count()):
            mode = self.dtype_combo.itemData(i)
            problem = precision.mode_problem(mode, device, self._caps)
            model.item(i).setEnabled(problem is None)
            self.dtype_combo.setItemData(i, problem or precision.mode_note(mode, device, self._caps),
                                         Qt.ItemDataRole.ToolTipRole)
        self._show_mode_problem()

    def _show_mode_problem(self) -> None:
        mode, device = self.dtype_combo.currentData(), self.device_combo.currentData()
        problem = self.mode_problem()
        self.dtype_combo.setToolTip(problem or precision.mode_note(mode, device, self._caps))
        if not self._loading:
            self.status_label.setText(problem or "")

    @staticmethod
    def _select(box: QComboBox, value: str) -> None:
        index = box.findData(value)
        if index >= 0:
            box.setCurrentIndex(index)

    def _choose_folder(self) -> None:
        start = self._source()
        start = start if Path(start).is_dir() else str(Path.home())
        folder = QFileDialog.getExistingDirectory(self, "Choose a folder with an OPT model", start)
        if folder:
            self._set_source(folder)

    def _on_load(self) -> None:
        if self._loading:
            return
        try:
            request = self.request()
        except ValueError as exc:  # SettingsError: say why next to the controls, load nothing
            self.status_label.setText(str(exc))
            self.source_combo.setFocus()
            return
        problem = self.mode_problem()
        if problem:  # the engine would refuse it in the same words
            self.status_label.setText(problem)
            self.dtype_combo.setFocus()
            return
        self.status_label.clear()
        self.load_requested.emit(request)


def accuracy_text(info: ModelInfo) -> str:
    """One line on how exact the loaded model's precision mode is."""
    if not precision.is_approximate(info.dtype):
        return f"{info.dtype}: exact (the reference for the other modes)"
    acc = info.accuracy
    if acc is None:
        return f"{info.dtype}: approximate; its distance from float32 was not measured (on a GPU, or no room for a float32 copy)"
    return (f"{info.dtype}: approximate — mean KL {acc.mean_kl:.3g}, top-1 agreement {acc.top1_agreement:.0%} "
            f"vs float32 on a reference text ({acc.n_positions} positions)")
