"""opt-desktop: start the window on a qasync event loop; torch loads later, on the engine's worker."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from ..engine.settings import DEFAULT_SOURCE, LoadRequest


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="opt-desktop", description="Run OPT models and watch their internals.")
    p.add_argument("--model", help="Hub id, local folder or 'demo' (default: the last model used)")
    p.add_argument("--dtype", choices=["float32", "bfloat16", "float16"])
    p.add_argument("--device", choices=["auto", "cpu", "cuda", "mps"])
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication
    import qasync

    from .app_state import AppState
    from .main_window import MainWindow
    from .resources import icon_path

    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("OPT Desktop")
    app.setOrganizationName("opt-desktop")
    app.setWindowIcon(QIcon(str(icon_path())))
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    closed = asyncio.Event()

    state = AppState.load()
    window = MainWindow(state=state)
    window.closed.connect(closed.set)
    window.show()
    request, auto = initial_request(args, state)
    window.load_model(request, auto=auto)  # the window is up before torch is imported
    with loop:
        loop.run_until_complete(closed.wait())
    if not window.controller.engine.join(0.5):
        os._exit(0)  # a load that can't be interrupted (reading weights) must not hold the exit
    return 0


if __name__ == "__main__":
    sys.exit(main())
