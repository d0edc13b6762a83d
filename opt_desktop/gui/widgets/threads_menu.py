"""The Run menu's "CPU threads" choice: automatic (follows the machine's load) or a fixed number."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QAction, QActionGroup
from PySide6.QtWidgets import QMenu, QWidget

from ...engine.messages.threads import AUTO, ThreadSetting

AUTO_TIP = ("Use as many threads as the machine has cores to spare, and keep adjusting while the model "
            "runs: fewer when other programs get busy, more when they stop.")
FIXED_TIP = "Always compute with {n}, however busy the computer is."


def thread_counts(cores: int) -> list[int]:
    """The fixed counts offered: every count up to 16 cores; on a bigger machine, powers of two and all."""
    if cores <= 16:
        return list(range(1, cores + 1))
    return sorted({*(2 ** i for i in range(cores.bit_length()) if 2 ** i < cores), cores})


class ThreadsMenu(QMenu):
    chosen = Signal(object)  # "auto" or a number of threads

    def __init__(self, cores: int, parent: QWidget | None = None) -> None:
        super().__init__("CPU &threads", parent)
        self.setToolTipsVisible(True)
        self._group = QActionGroup(self)
        self._group.setExclusive(True)
        self._actions: dict[ThreadSetting, QAction] = {}
        self._add(AUTO, "&Automatic (follows the computer's load)", AUTO_TIP)
        self.addSeparator()
        for n in thread_counts(max(1, cores)):
            self._add(n, f"{n} thread{'s' if n > 1 else ''}", FIXED_TIP.format(n=f"{n} thread{'s' if n > 1 else ''}"))
        self._actions[AUTO].setChecked(True)

    def _add(self, setting: ThreadSetting, text: str, tip: str) -> QAction:
        action = QAction(text, self)
        action.setCheckable(True)
        action.setToolTip(tip)
        action.setStatusTip(tip)
        action.triggered.connect(lambda _=False, s=setting: self.chosen.emit(s))
        self._group.addAction(action)
        self.addAction(action)
        self._actions[setting] = action
        return action

    @property
    def setting(self) -> ThreadSetting:
        return next(s for s, a in self._actions.items() if a.isChecked())

    def set_setting(self, setting: ThreadSetting) -> None:
        """Show `setting` as chosen (a count this machine's list lacks, from the settings file, is added)."""
        if setting not in self._actions:
            self._add(setting, f"{setting} thread{'s' if setting != 1 else ''}",
                      FIXED_TIP.format(n=f"{setting} threads"))
        self._actions[setting].setChecked(True)
