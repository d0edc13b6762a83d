"""Files the app ships beside its code: icons, the launcher template, the MIME XML, the demo model.

Qt-free: the desktop-entry installer and the engine read them before any window exists.
The repository keeps them in the top-level resources/ folder.
"""

from __future__ import annotations

from pathlib import Path

# The editable install runs from a checkout, whose resources/ is beside the package.
_RESOURCES = Path(__file__).resolve().parents[1] / "resources"


def resource(*parts: str) -> Path:
    """The path of a shipped file or folder, e.g. resource("icons", "opt-desktop-16.png")."""
    return _RESOURCES.joinpath(*parts)
