"""Where the app's files (icons, launcher, file type) live: the repository's top-level resources/ folder.

No Qt here: the desktop-entry installer reads these paths before any window exists.
"""

from __future__ import annotations

from pathlib import Path

# The README's install is editable, so the checkout's resources/ is beside the package. A missing
# icon only means Qt's default one.
RESOURCES = Path(__file__).resolve().parents[2] / "resources"
ICONS = RESOURCES / "icons"
ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)  # what resources/make_icons.py renders

APP_ID = "opt-desktop"  # the .desktop file's name, the icon's theme name, the Wayland app id
SESSION_MIME_TYPE = "application/x-opt-desktop-session"


def icon_path() -> Path:
    return RESOURCES / "opt-desktop.svg"


def icon_png(size: int) -> Path:
    return ICONS / f"opt-desktop-{size}.png"


def icon_ico() -> Path:
    return ICONS / "opt-desktop.ico"


def icon_icns() -> Path:
    return ICONS / "opt-desktop.icns"


def desktop_file() -> Path:
    return RESOURCES / "opt-desktop.desktop"


def mime_xml() -> Path:
    return RESOURCES / "opt-desktop-mime.xml"
