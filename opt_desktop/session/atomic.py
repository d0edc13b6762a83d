"""Atomic writes live in opt_desktop/atomic.py (every layer writes files); this name stays for imports."""

from ..atomic import (  # noqa: F401
    TEMP_SUFFIX,
    is_temp_name,
    remove_stale_temps,
    remove_stale_temps_in,
    temp_name,
    write_atomic,
    write_text_atomic,
)
