"""What the shown run was made with: model, decoding settings, seed, interventions, how it ended
(the rows of `session.describe.run_summary`, the one place runs are described).

"Use these settings" copies the run's generation settings (its seed included) to the settings
panel. Every value is shown as plain text: prompts and stop strings are the person's own text.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFormLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ...engine.messages.settings import GenerationSettings
from ...session import RunTrace
from ...session.describe import run_summary, shorten
from ..rich_text import plain_tip

_ROWS = ("model", "decoding", "max new tokens", "repetition", "stop strings", "seed", "head mask",
         "hidden tokens", "origin", "result")  # the keys of session.describe.run_summary, in order


class RunDetails(QWidget):
    use_settings = Signal(object)  # GenerationSettings of the shown run, its seed included

    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        self._settings: GenerationSettings | None = None
        form = QFormLayout()
        form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        form.setContentsMargins(4, 4, 4, 4)
        self.values: dict[str, QLabel] = {}
        for name in _ROWS:
            label = QLabel()
            label.setTextFormat(Qt.TextFormat.PlainText)
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.values[name] = label
            form.addRow(name, label)
        self.use_button = QPushButton("Use these settings")
        self.use_button.setToolTip("Copy this run's generation settings, its seed included, to the settings panel")
        self.use_button.clicked.connect(lambda: self._settings is not None and self.use_settings.emit(self._settings))
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(form)
        layout.addWidget(self.use_button)
        layout.addStretch(1)
        self.set_trace(None)

    def set_trace(self, trace: RunTrace | None) -> None:
        if trace is None:
            self._settings = None
            for label in self.values.values():
                label.setText("")
            self.values["model"].setText("No run selected.")
            self.use_button.setEnabled(False)
            return
        s = trace.started
        settings = dict(s.settings)
        try:
            self._settings = GenerationSettings.parse(**{**settings, "seed": s.seed})
        except Exception:  # noqa: BLE001 - a file from elsewhere: show it, but it cannot be reused
            self._settings = None
        texts = run_summary(trace)
        for name, text in texts.items():
            self.values[name].setText(shorten(text, 400))
        # The source and precision fit the panel; the full line (the model's label, its revision) is
        # the tooltip: a built-in model's label alone would take half the panel's height.
        host = f" of {s.model.host}" if s.model.host else ""  # where it ran: this computer or a server
        self.values["model"].setText(shorten(f"{s.model.source} ({s.model.dtype} on {s.model.device}{host})", 400))
        self.values["model"].setToolTip(plain_tip(texts["model"]))
        self.use_button.setEnabled(self._settings is not None)
