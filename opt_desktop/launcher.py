"""The bundle's one executable (packaging/build_bundle.py): the window, or the command line.

`opt-desktop --cli ARGS`, or the executable started under the name `opt-desktop-cli` (the bundle
has a link by that name), runs `opt-desktop-cli ARGS`; anything else goes to the window's own
options. Hidden modes for the bundle (a child process for the engine, say) dispatch here the same
way, by a first argument, before anything heavy is imported. No Qt at import.
"""

from __future__ import annotations

import multiprocessing
import sys
from pathlib import Path

CLI_FLAG = "--cli"
WORKER_FLAG = "--engine-worker"  # engine_process.WORKER_FLAG; not imported: nothing heavy before dispatch
CLI_NAME = "opt-desktop-cli"


def wants_cli(argv0: str, args: list[str]) -> bool:
    return Path(argv0).name.removesuffix(".exe") == CLI_NAME or args[:1] == [CLI_FLAG]


def main(argv: list[str] | None = None) -> int:
    multiprocessing.freeze_support()  # a frozen child process started by multiprocessing stops here
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == [WORKER_FLAG]:  # the window's engine process (engine/process/engine_process.py)
        from .engine.process.worker import main as engine_main

        return engine_main()
    if wants_cli(sys.argv[0], args):
        from .cli import main as cli_main

        return cli_main(args[1:] if args[:1] == [CLI_FLAG] else args)
    from .gui.app import main as gui_main

    return gui_main(args)


if __name__ == "__main__":
    sys.exit(main())
