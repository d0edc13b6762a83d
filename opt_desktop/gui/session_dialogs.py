"""The questions the window asks about files. Kept apart so tests can answer them without a modal dialog.

The questions asked in the middle of a coroutine (a save that finds its file changed on disk) are
awaited: they open window-modal and answer through a future, because a nested exec() loop would
run other coroutines inside this one's step (qasync then fails with "Cannot enter into task").
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QMessageBox, QWidget

from ..session.file import SESSION_SUFFIX

SESSION_FILTER = f"OPT Desktop sessions (*{SESSION_SUFFIX})"
EXPORT_FILTERS = {
    "md": "Markdown transcript (*.md)",
    "csv": "Token table as CSV (*.csv)",
    "json": "JSON (*.json)",
    "html": "HTML report (*.html)",
    "png": "PNG image (*.png)",
}


def ask_unsaved(parent: QWidget, name: str, running: bool = False) -> str:
    """'save', 'discard' or 'cancel' for a session with unsaved runs. `running`: the window is
    closing while a run generates; nothing stops unless the answer is save or discard."""
    box = QMessageBox(QMessageBox.Icon.Warning, "Unsaved runs", f"Save the changes to {name}?",
                      QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                      | QMessageBox.StandardButton.Cancel, parent)
    box.setTextFormat(Qt.TextFormat.PlainText)  # a file name is not markup
    if running:
        box.setInformativeText("A run is still generating. Closing stops it: Save keeps what it has written "
                               "so far, Discard loses it with the other unsaved runs. Cancel lets it go on.")
    else:
        box.setInformativeText("Runs that are not saved are lost when the session closes.")
    box.setDefaultButton(QMessageBox.StandardButton.Save)
    answer = box.exec()
    return {QMessageBox.StandardButton.Save: "save", QMessageBox.StandardButton.Discard: "discard"}.get(
        QMessageBox.StandardButton(answer), "cancel")


def choose_open_path(parent: QWidget, folder: str = "") -> Path | None:
    path, _ = QFileDialog.getOpenFileName(parent, "Open session", folder, f"{SESSION_FILTER};;All files (*)")
    return Path(path) if path else None


def choose_save_path(parent: QWidget, suggested: str) -> Path | None:
    path, _ = QFileDialog.getSaveFileName(parent, "Save session as", suggested, SESSION_FILTER)
    if not path:
        return None
    path = Path(path)
    return path if path.suffix == SESSION_SUFFIX else path.with_name(path.name + SESSION_SUFFIX)


def choose_export_path(parent: QWidget, fmt: str, suggested: str) -> Path | None:
    path, _ = QFileDialog.getSaveFileName(parent, "Export", suggested, EXPORT_FILTERS[fmt])
    if not path:
        return None
    path = Path(path)
    return path if path.suffix == f".{fmt}" else path.with_name(f"{path.name}.{fmt}")


async def _answered(dialog) -> int:
    """Open `dialog` window-modal and wait for it to close, without a nested event loop."""
    future = asyncio.get_running_loop().create_future()

    def done(result: int) -> None:
        if not future.done():
            future.set_result(result)

    dialog.finished.connect(done)
    dialog.open()
    try:
        return await future
    finally:
        dialog.deleteLater()


async def ask_changed_on_disk(parent: QWidget, path: Path) -> str:
    """'reload', 'overwrite', 'save_as' or 'cancel': this window's file was changed on disk since it
    opened or saved it (by another window, another OPT Desktop, another program)."""
    box = QMessageBox(QMessageBox.Icon.Warning, "File changed on disk",
                      f"{path.name} was changed on disk since this window opened or saved it.", parent=parent)
    box.setTextFormat(Qt.TextFormat.PlainText)
    box.setInformativeText("Another window or program saved it, and saving here would replace its work.\n\n"
                           "Reload: show the file as it is now (this window's unsaved runs are lost).\n"
                           "Overwrite: replace it with this window's runs (the other work is lost).\n"
                           "Save As: keep both, this window's runs in another file.")
    buttons = {
        box.addButton("Save As…", QMessageBox.ButtonRole.AcceptRole): "save_as",
        box.addButton("Reload", QMessageBox.ButtonRole.DestructiveRole): "reload",
        box.addButton("Overwrite", QMessageBox.ButtonRole.DestructiveRole): "overwrite",
    }
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(next(iter(buttons)))
    box.setEscapeButton(cancel)
    await _answered(box)
    return buttons.get(box.clickedButton(), "cancel")


async def choose_save_path_later(parent: QWidget, suggested: str) -> Path | None:
    """choose_save_path, awaited (for a question that comes up inside a coroutine)."""
    dialog = QFileDialog(parent, "Save session as", suggested, SESSION_FILTER)
    dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
    dialog.setFileMode(QFileDialog.FileMode.AnyFile)
    if await _answered(dialog) != QFileDialog.DialogCode.Accepted.value or not dialog.selectedFiles():
        return None
    path = Path(dialog.selectedFiles()[0])
    return path if path.suffix == SESSION_SUFFIX else path.with_name(path.name + SESSION_SUFFIX)
