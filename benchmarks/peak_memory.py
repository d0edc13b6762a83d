"""Peak anonymous memory of a block of code, sampled every millisecond (shared by the benchmarks)."""

from __future__ import annotations

import ctypes
import gc
import threading
import time


def status_bytes(field: str) -> int | None:
    """A memory figure of this process from /proc/self/status (Linux), e.g. "VmHWM", in bytes; or None."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def anon_rss() -> int:
    """Anonymous resident memory (heap, tensors): unlike total RSS, not moved by code pages of
    torch's shared libraries being faulted in the first time a kernel runs."""
    anon = status_bytes("RssAnon")
    if anon is not None:
        return anon
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class PeakRSS:
    """`with PeakRSS() as p:` ... `p.peak` is the largest rise of anonymous memory above the start.

    trim=True first gives freed heap back to the system (glibc), so the baseline is honest."""

    def __init__(self, trim: bool = False):
        self.trim = trim

    def __enter__(self):
        gc.collect()
        if self.trim:
            try:
                ctypes.CDLL("libc.so.6").malloc_trim(0)
            except OSError:
                pass
        self.start = anon_rss()
        self.peak = 0
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def _poll(self):
        while not self._done.is_set():
            self.peak = max(self.peak, anon_rss() - self.start)
            time.sleep(0.001)

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, anon_rss() - self.start)
