"""Render resources/opt-desktop.svg to the PNG sizes desktops ask for, plus .ico (Windows) and .icns (macOS).

Run once after editing the SVG:  python packaging/make_icons.py
The outputs are committed, so installing the launcher never needs Qt or a renderer. This script lives
outside resources/ because everything there is shipped inside the package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

RESOURCES = Path(__file__).resolve().parents[1] / "resources"
SVG = RESOURCES / "opt-desktop.svg"
ICONS = RESOURCES / "icons"
SIZES = (16, 32, 48, 64, 128, 256, 512)  # opt_desktop.assets.ICON_SIZES: what the launcher installs


def png_path(size: int) -> Path:
    return ICONS / f"opt-desktop-{size}.png"


def main() -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6.QtCore import QRectF, Qt
    from PySide6.QtGui import QGuiApplication, QIcon, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 - image plugins need it
    renderer = QSvgRenderer(str(SVG))
    if not renderer.isValid():
        print(f"cannot read {SVG}", file=sys.stderr)
        return 1
    ICONS.mkdir(exist_ok=True)
    icon = QIcon()
    for size in SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter, QRectF(0, 0, size, size))
        painter.end()
        image.save(str(png_path(size)), "PNG")
        icon.addFile(str(png_path(size)))
    # Windows shortcuts want .ico (up to 256 px), macOS bundles .icns.
    icon.pixmap(256, 256).toImage().save(str(ICONS / "opt-desktop.ico"), "ICO")
    icon.pixmap(512, 512).toImage().save(str(ICONS / "opt-desktop.icns"), "ICNS")
    for path in sorted(ICONS.iterdir()):
        print(path.relative_to(RESOURCES.parent))
    return 0


if __name__ == "__main__":
    sys.exit(main())
