"""`python -m opt_desktop [FILE.optsession]`: the desktop app, as the opt-desktop launcher starts it."""

import sys

from .gui.app import main

if __name__ == "__main__":
    sys.exit(main())
