"""opt-desktop: start the window on a qasync event loop; torch loads later, on the engine's worker."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path
from typing import get_args

from ..assets import APP_ID
from ..engine.messages.settings import DEFAULT_SOURCE, Device, DType, LoadRequest
from .heap import freeze_long_lived

APP_NAME = "OPT Desktop"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opt-desktop", description="Run OPT models and watch their internals.")
    p.add_argument("file", nargs="?", help="a session file (.optsession) to open")
    p.add_argument("--model", help="Hub id, local folder or 'demo' (default: the last model used)")
    p.add_argument("--dtype", choices=get_args(DType))
    p.add_argument("--device", choices=get_args(Device))
    p.add_argument("-v", "--verbose", action="count", default=0, help="also log to the terminal (-vv: debug)")
    p.add_argument("--engine", choices=("process", "thread"), default="process",
                   help="run the model in its own process (default: the window never waits for it) "
                        "or on a thread of the window's process")
    entry = p.add_mutually_exclusive_group()
    entry.add_argument("--install-desktop-entry", action="store_true",
                       help="add OPT Desktop to this user's applications menu and open .optsession files with it")
    entry.add_argument("--uninstall-desktop-entry", action="store_true",
                       help="remove what --install-desktop-entry added")
    return p


def initial_request(args, state) -> tuple[LoadRequest, bool]:
    """The model to load at start, and whether it may fall back to the demo if it fails."""
    last = state.last_model
    if args.model:
        base = LoadRequest(source=args.model)
        auto = False
    elif last is not None:
        base, auto = last, True
    else:
        base, auto = LoadRequest(source=DEFAULT_SOURCE), True
    changes = {k: v for k, v in (("dtype", args.dtype), ("device", args.device)) if v}
    return (base.replace(**changes) if changes else base), auto


def desktop_entry(args) -> int:
    """--install-desktop-entry / --uninstall-desktop-entry: print what was done and exit."""
    from ..desktop_entry import DesktopEntryError, install, uninstall

    try:
        report = install() if args.install_desktop_entry else uninstall()
    except DesktopEntryError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(report)
    return 0


def app_icon():
    """The icon at every rendered size (crisp in a taskbar and in a dock), the SVG as a fallback."""
    from PySide6.QtGui import QIcon

    from ..assets import ICON_SIZES, icon_path, icon_png

    icon = QIcon()
    for size in ICON_SIZES:
        if icon_png(size).is_file():
            icon.addFile(str(icon_png(size)))
    if icon.isNull() and icon_path().is_file():
        icon.addFile(str(icon_path()))
    return icon


def configure_application(app) -> None:
    """Name, icon and desktop file: the taskbar and the dock then show OPT Desktop, not 'python'."""
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setOrganizationName(APP_ID)
    # Wayland compositors and X11 taskbars match the window to opt-desktop.desktop (its Icon= and Name=).
    app.setDesktopFileName(APP_ID)
    app.setWindowIcon(app_icon())


def start(window, args, state) -> None:
    """Show the window, start the model load, then open the session file given on the command line."""
    window.show()
    freeze_long_lived()  # the window's widgets and the modules they imported
    request, auto = initial_request(args, state)
    window.models.load(request, fallback_to_demo=auto)  # the window is up before torch is imported
    if args.file:
        window.sessions.open_file(Path(args.file).expanduser())
    else:
        window.sessions.check_recovery()  # offer what a crashed session left unsaved


def report_uncaught(window):
    """An exception escaping a slot: logged with its traceback, one line in the window, and the app
    goes on (Qt would otherwise only print it)."""
    import logging

    from ..engine.messages.errors import describe_error

    log = logging.getLogger("opt_desktop.gui")

    def hook(exc_type, exc, tb):
        if issubclass(exc_type, KeyboardInterrupt):
            sys.__excepthook__(exc_type, exc, tb)
            return
        message, details = describe_error(exc.with_traceback(tb), "An action")
        log.error("Uncaught exception in the window\n%s", details)
        try:
            window.banner.show_error(message, details)
        except Exception:  # noqa: BLE001 - the window itself may be what broke
            pass

    return hook


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--engine-worker"]:  # a frozen bundle starts its engine process through its own executable
        from ..engine.process.worker import main as engine_main

        return engine_main()
    args = build_parser().parse_args(argv)
    if args.install_desktop_entry or args.uninstall_desktop_entry:
        return desktop_entry(args)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from ..engine.running.threads import prepare_environment
    from ..logs import setup_logging

    prepare_environment()  # for an engine on a thread here (--engine thread): before torch loads
    setup_logging(args.verbose)
    from PySide6.QtWidgets import QApplication
    import qasync

    from .main_window import MainWindow

    # argv[0] names the X11 window class, which StartupWMClass in the .desktop file matches.
    app = QApplication.instance() or QApplication([APP_ID])
    configure_application(app)
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    closed = asyncio.Event()

    from .startup import startup_checks

    report = startup_checks()  # never raises: what it cannot read is moved aside and named
    state = report.state
    controller = None
    if args.engine == "process":
        from ..engine.process.engine_process import EngineProcess
        from .controller import Controller

        controller = Controller(EngineProcess())
    window = MainWindow(controller=controller, state=state, presets=report.presets)
    for line in report.messages:
        window.banner.show_message(line, "warning")
    window.closed.connect(closed.set)
    sys.excepthook = report_uncaught(window)
    start(window, args, state)
    with loop:
        loop.run_until_complete(closed.wait())
    window.keeper.wait_for_files(60)  # the window is gone: its last file jobs (the autosave's removal) end first
    if not window.controller.engine.join(0.5):
        os._exit(0)  # a load that can't be interrupted (reading weights) must not hold the exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
