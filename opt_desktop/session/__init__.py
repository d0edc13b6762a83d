"""Runs as plain data: accumulated from engine events, read by views and files. Qt-free.

Importing this package imports neither torch nor Pillow (the HTML export loads Pillow when used).
"""

from .autosave import Autosave, RecoveredSession
from .compare import RunComparison, compare_runs
from .export import EXPORT_FORMATS, ExportError, export_csv, export_html, export_json, export_markdown, write_export
from .analyses import Analysis
from .file import SCHEMA_VERSION, SESSION_SUFFIX, SessionFileError, check_save_path, load_session, save_session
from .requests import fork_request, rerun_requests
from .session import Session
from .trace import RunTrace

__all__ = [
    "EXPORT_FORMATS", "SCHEMA_VERSION", "SESSION_SUFFIX", "Analysis", "Autosave", "ExportError", "RecoveredSession",
    "RunComparison", "RunTrace", "Session", "SessionFileError", "check_save_path", "compare_runs", "export_csv",
    "export_html", "export_json", "export_markdown", "fork_request", "load_session", "rerun_requests",
    "save_session", "write_export",
]
