"""Guards against a broken Qt binding: PySide6 6.12.0 under Python 3.11 leaked references to None
on every call of a void Qt method, and the app aborted (none_dealloc) after a few thousand calls."""

import sys

from PySide6.QtWidgets import QLabel


def test_void_qt_calls_keep_none_alive(qtbot):
    label = QLabel()
    qtbot.addWidget(label)
    before = sys.getrefcount(None)
    for _ in range(2000):
        label.setText("x")
    assert sys.getrefcount(None) >= before - 50
