"""How to load the chosen model: precision, device, and placement (one device, or spread over the
GPUs, RAM and an offload folder on disk, with optional memory limits)."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QComboBox, QFileDialog, QFormLayout, QGroupBox, QHBoxLayout, QLineEdit, QPushButton, QWidget

from ...engine.loading import precision as modes
from ...engine.loading.placement import format_max_memory, parse_max_memory
from ...engine.messages.settings import Device, LoadRequest

DEVICES: tuple[str, ...] = get_args(Device)
PLACEMENTS = (("one-device", "One device"), ("spread", "Spread over GPUs, RAM and disk"))


class LoadOptions(QGroupBox):
    """`changed` when the precision, device or placement changes (what fits depends on them)."""

    changed = Signal()

    def __init__(self, parent: QWidget | None = None):
        super().__init__("Load with", parent)
        self.precision_combo = QComboBox(self)
        caps = modes.capabilities()  # asks torch only when it is already loaded
        for p in modes.MODES:
            self.precision_combo.addItem(f"{p} (approx.)" if modes.is_approximate(p) else p, p)
            self.precision_combo.setItemData(self.precision_combo.count() - 1, modes.mode_note(p, "auto", caps),
                                             Qt.ItemDataRole.ToolTipRole)
        self.device_combo = QComboBox(self)
        for d in DEVICES:
            self.device_combo.addItem(d, d)
        self.placement_combo = QComboBox(self)
        for value, text in PLACEMENTS:
            self.placement_combo.addItem(text, value)
        self.placement_combo.setToolTip("Spread: accelerate fills the GPUs in order, then RAM, then the offload "
                                        "folder on disk, so a model bigger than one device still runs (slowly).")
        self.max_memory_edit = QLineEdit(self)
        self.max_memory_edit.setPlaceholderText("e.g. 0=20GiB, cpu=30GiB (blank: all there is)")
        self.offload_edit = QLineEdit(self)
        self.offload_edit.setPlaceholderText("blank: the app's cache folder")
        self.offload_button = QPushButton("Browse…", self)
        self.offload_button.clicked.connect(self._choose_offload_folder)
        offload_row = QHBoxLayout()
        offload_row.addWidget(self.offload_edit, 1)
        offload_row.addWidget(self.offload_button)
        for combo in (self.precision_combo, self.device_combo, self.placement_combo):
            combo.currentIndexChanged.connect(self.changed)
        self.placement_combo.currentIndexChanged.connect(self._update_placement_fields)

        form = QFormLayout(self)
        form.addRow("Precision", self.precision_combo)
        form.addRow("Device", self.device_combo)
        form.addRow("Placement", self.placement_combo)
        form.addRow("Max memory", self.max_memory_edit)
        form.addRow("Offload folder", offload_row)
        self._update_placement_fields()

    @property
    def device(self) -> str:
        return self.device_combo.currentData()

    @property
    def placement(self) -> str:
        return self.placement_combo.currentData()

    def set_request(self, request: LoadRequest) -> None:
        for combo, value in ((self.precision_combo, request.dtype), (self.device_combo, request.device),
                             (self.placement_combo, request.placement)):
            index = combo.findData(value)
            if index >= 0:
                combo.setCurrentIndex(index)
        self.max_memory_edit.setText(format_max_memory(request.max_memory))
        self.offload_edit.setText(request.offload_folder or "")

    def request(self, source: str) -> LoadRequest:
        """A request to load `source` this way; SettingsError (one line) when it is impossible."""
        spread = self.placement == "spread"
        return LoadRequest.parse(
            source=source, dtype=self.precision_combo.currentData(), device=self.device, placement=self.placement,
            max_memory=parse_max_memory(self.max_memory_edit.text()) if spread else None,
            offload_folder=(self.offload_edit.text().strip() or None) if spread else None)

    def _update_placement_fields(self) -> None:
        spread = self.placement == "spread"
        for w in (self.max_memory_edit, self.offload_edit, self.offload_button):
            w.setEnabled(spread)

    def _choose_offload_folder(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for weights that fit nowhere else",
                                                  self.offload_edit.text() or str(Path.home()))
        if folder:
            self.offload_edit.setText(folder)
