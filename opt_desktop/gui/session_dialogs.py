"""The questions the window asks about files. Kept apart so tests can answer them without a modal dialog."""

from __future__ import annotations

from pathlib import Path

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


def ask_unsaved(parent: QWidget, name: str) -> str:
    """'save', 'discard' or 'cancel' for a session with unsaved runs."""
    box = QMessageBox(QMessageBox.Icon.Warning, "Unsaved runs", f"Save the changes to {name}?",
                      QMessageBox.StandardButton.Save | QMessageBox.StandardButton.Discard
                      | QMessageBox.StandardButton.Cancel, parent)
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
