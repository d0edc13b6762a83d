"""PyInstaller's entry script for the bundle; the dispatch lives in opt_desktop/launcher.py."""

import sys

from opt_desktop.launcher import main

if __name__ == "__main__":
    sys.exit(main())
