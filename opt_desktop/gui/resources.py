"""Where the app's files (icon) live: the repository's resources/ or the installed copy."""

from __future__ import annotations

from pathlib import Path

_CANDIDATES = (
    Path(__file__).resolve().parents[2] / "resources",  # a checkout / editable install
    Path(__file__).resolve().parents[1] / "resources",  # a wheel (resources packaged inside)
)


def resource_dir() -> Path:
    for folder in _CANDIDATES:
        if folder.is_dir():
            return folder
    return _CANDIDATES[0]


def icon_path() -> Path:
    return resource_dir() / "opt-desktop.svg"
