"""A virtual X server (Xvfb) and a wait for a program's window, for the bundle's start-up time and its
smoke test. Needs Debian's xvfb and xdotool (imagemagick for screenshots)."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator

TOOLS = ("Xvfb", "xdotool")


def missing_tools() -> list[str]:
    return [t for t in TOOLS if shutil.which(t) is None]


@contextlib.contextmanager
def virtual_display(size: str = "1280x800x24") -> Iterator[str]:
    """Start Xvfb on a free display number; yields its DISPLAY value (":N")."""
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", size, "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    try:
        with os.fdopen(read) as pipe:
            number = pipe.readline().strip()  # Xvfb writes it once it accepts connections
        if not number:
            raise RuntimeError("Xvfb did not start")
        yield f":{number}"
    finally:
        server.terminate()
        server.wait(10)


def visible_windows(display: str, pid: int) -> list[str]:
    """Ids of the mapped windows that process `pid` owns (Qt sets _NET_WM_PID)."""
    out = subprocess.run(["xdotool", "search", "--onlyvisible", "--pid", str(pid)],
                         env={**os.environ, "DISPLAY": display}, capture_output=True, text=True)
    return out.stdout.split()


def window_name(display: str, window: str) -> str:
    out = subprocess.run(["xdotool", "getwindowname", window], env={**os.environ, "DISPLAY": display},
                         capture_output=True, text=True)
    return out.stdout.strip()


def wait_for_window(display: str, process: subprocess.Popen, timeout: float = 120.0,
                    title_has: str = "", started: float | None = None) -> tuple[str, float]:
    """Wait until `process` shows a window (whose title contains `title_has`); (window id, seconds
    since `started`, a time.monotonic() value, by default now). Raises if the process exits or the
    time runs out first."""
    start = time.monotonic() if started is None else started
    while time.monotonic() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"the program exited with status {process.returncode} before showing a window")
        for window in visible_windows(display, process.pid):
            if title_has in window_name(display, window):
                return window, time.monotonic() - start
        time.sleep(0.05)
    raise TimeoutError(f"no window within {timeout:.0f} s")


def screenshot(display: str, path: str) -> bool:
    """The whole screen as a PNG (ImageMagick's import); False where it is not installed."""
    if shutil.which("import") is None:
        return False
    out = subprocess.run(["import", "-window", "root", path], env={**os.environ, "DISPLAY": display},
                         capture_output=True)
    return out.returncode == 0


def stop(process: subprocess.Popen) -> None:
    """End a program started for a measurement (it has no unsaved work)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
