"""Where the app's files (icon, screenshot) live: the repository's top-level resources/ folder."""

from __future__ import annotations

from pathlib import Path

# The README's install is editable, so the checkout's resources/ is beside the package. A missing
# icon only means Qt's default one.
RESOURCES = Path(__file__).resolve().parents[2] / "resources"


def icon_path() -> Path:
    return RESOURCES / "opt-desktop.svg"
