"""Files the app ships beside its code (icons, the launcher template, the MIME XML, the demo model),
and the names the desktop knows the app by.

Qt-free: the desktop-entry installer and the engine read them before any window exists. The
repository keeps the files in the top-level resources/ folder; the build installs that folder as
the package opt_desktop.resources (setup.py), so importlib.resources finds it the same way in an
editable install, a wheel and a PyInstaller bundle.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

APP_ID = "opt-desktop"  # the .desktop file's name, the icon's theme name, the Wayland app id
SESSION_MIME_TYPE = "application/x-opt-desktop-session"
ICON_SIZES = (16, 32, 48, 64, 128, 256, 512)  # what packaging/make_icons.py renders

_PACKAGE = f"{__package__}.resources"


def resource(*parts: str) -> Path:
    """The path of a shipped file or folder, e.g. resource("icons", "opt-desktop-16.png")."""
    try:
        root = files(_PACKAGE)
    except ModuleNotFoundError:  # an editable install made before resources/ became a package
        raise RuntimeError(f"{_PACKAGE} is not installed: reinstall OPT Desktop (from a checkout: "
                           "pip install -e .)") from None
    # Always installed as plain files (wheels unpack, bundles are folders), never imported from a
    # zip: callers hand these paths to Qt, shutil and transformers, which need real files.
    if not isinstance(root, Path):
        raise RuntimeError(f"{_PACKAGE} is not a folder on disk ({root!r}); install OPT Desktop unzipped")
    return root.joinpath(*parts)


def icon_path() -> Path:
    """The scalable icon (SVG)."""
    return resource(f"{APP_ID}.svg")


def icon_png(size: int) -> Path:
    return resource("icons", f"{APP_ID}-{size}.png")


def icon_ico() -> Path:
    return resource("icons", f"{APP_ID}.ico")


def icon_icns() -> Path:
    return resource("icons", f"{APP_ID}.icns")


def desktop_file() -> Path:
    return resource(f"{APP_ID}.desktop")


def mime_xml() -> Path:
    return resource(f"{APP_ID}-mime.xml")
