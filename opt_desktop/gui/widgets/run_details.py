"""What the shown run was made with: model, decoding settings, seed, interventions, how it ended.

"Use these settings" copies the run's generation settings (its seed included) to the settings
panel. Every value is shown as plain text: prompts and stop strings are the person's own text.
"""

from __future__ import annotations

import html

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QFormLayout, QLabel, QPushButton, QVBoxLayout, QWidget

from ...engine.settings import GenerationSettings
from ...session import RunTrace
from ...session.describe import finish_text, fork_text, head_mask_text, model_line, shorten

_ROWS = ("model", "decoding", "max new tokens", "repetition", "stop strings", "seed", "head mask",
         "hidden tokens", "origin", "result")


def _decoding(s: dict) -> str:
    if not s.get("do_sample"):
        return "greedy"
    parts = [f"sampling, temperature {s.get('temperature', 1.0):g}"]
    if s.get("top_k"):
        parts.append(f"top-k {s['top_k']}")
    for name, label in (("top_p", "top-p"), ("typical_p", "typical-p")):
        if s.get(name, 1.0) != 1.0:
            parts.append(f"{label} {s[name]:g}")
    if s.get("min_p"):
        parts.append(f"min-p {s['min_p']:g}")
    return ", ".join(parts)


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
        stops = settings.get("stop_strings") or ()
        mask = head_mask_text(s.head_mask, s.model) if s.head_mask else "none"
        if trace.mask_changes:
            mask += f" (changed {len(trace.mask_changes)}× during the run)"
        texts = {
            "model": model_line(s.model),
            "decoding": _decoding(settings),
            "max new tokens": str(s.max_new_tokens),
            "repetition": (f"penalty {settings.get('repetition_penalty', 1.0):g}, no-repeat n-gram "
                           f"{settings.get('no_repeat_ngram_size', 0)}"),
            "stop strings": ", ".join(repr(x) for x in stops) or "none",
            "seed": str(s.seed),
            "head mask": mask,
            "hidden tokens": ", ".join(map(str, s.hidden_positions)) or "none",
            "origin": fork_text(trace) or (trace.label or "a new run"),
            "result": finish_text(trace.finished) if trace.finished else "generating…",
        }
        for name, text in texts.items():
            self.values[name].setText(shorten(text, 400))
        self.values["model"].setToolTip(html.escape(s.model.source))
        self.use_button.setEnabled(self._settings is not None)
