"""Status-bar read-outs of the current run: speed, time to first token, tokens, finish reason, memory."""

from __future__ import annotations

from PySide6.QtWidgets import QHBoxLayout, QLabel, QWidget

from ...engine.messages.events import Finished
from ...engine.running.memory import process_rss
from ...formatting import format_bytes
from ...session import RunTrace

_REASONS = {"length": "max tokens reached", "eos": "end of text", "stop_string": "stop string",
            "cancelled": "stopped", "error": "failed"}


class RunStatus(QWidget):
    def __init__(self, parent: QWidget | None = None):
        super().__init__(parent)
        layout = QHBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(16)
        self.speed = QLabel()
        self.ttft = QLabel()
        self.tokens = QLabel()
        self.reason = QLabel()
        self.memory = QLabel()
        for label, tip in ((self.speed, "Decode speed after the first token"),
                           (self.ttft, "Time to first token (includes reading the prompt)"),
                           (self.tokens, "Tokens generated in this run"),
                           (self.reason, "Why the run ended"),
                           (self.memory, "Memory in use by the app (GPU memory on CUDA)")):
            label.setToolTip(tip)
            layout.addWidget(label)
        self.clear()

    def clear(self) -> None:
        self.speed.setText("– tok/s")
        self.ttft.setText("first token –")
        self.tokens.setText("0 tokens")
        self.reason.setText("")
        if not self.memory.text():
            self.memory.setText(f"memory {format_bytes(process_rss())}")

    def show_model(self, info) -> None:
        """A model was loaded (or the engine lost it): what its weights take, until a run says more."""
        if info is None:
            self.memory.setText("no model")
            return
        self.memory.setText(f"model {format_bytes(info.memory_bytes)}")
        self.memory.setToolTip("Memory the loaded model's weights take; after a run, what the engine has in use")

    def show_progress(self, trace: RunTrace) -> None:
        n = trace.n_generated
        self.tokens.setText(f"{n} tokens")
        if n >= 2 and trace.elapsed[-1] > trace.elapsed[0]:
            self.speed.setText(f"{(n - 1) / (trace.elapsed[-1] - trace.elapsed[0]):.1f} tok/s")
        if n:
            self.ttft.setText(f"first token {trace.elapsed[0] * 1000:.0f} ms")
        self.reason.setText("generating…")

    def show_finished(self, finished: Finished) -> None:
        self.tokens.setText(f"{finished.n_tokens} tokens")
        if finished.tokens_per_s:
            self.speed.setText(f"{finished.tokens_per_s:.1f} tok/s")
        if finished.time_to_first_token_s is not None:
            self.ttft.setText(f"first token {finished.time_to_first_token_s * 1000:.0f} ms")
        self.reason.setText(f"finished: {_REASONS.get(finished.reason, finished.reason)}")
        self.memory.setText(f"memory {format_bytes(finished.memory_bytes)}")
