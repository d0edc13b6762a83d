"""opt-desktop-cli: the engine without a window, for scripts and quick checks.

One module per part: parser.py (the arguments), terminal.py (what goes to stdout and stderr),
jobs.py (loading and running jobs with progress and Ctrl+C), and one per command family:
generate.py, analyses.py (attribute, patch, routes), files.py (show, export); main.py ties them together.
"""

from .main import main
from .parser import build_parser, settings_from_args
from .terminal import event_to_json

__all__ = ["build_parser", "event_to_json", "main", "settings_from_args"]
