"""Memory in use, for status bars and run summaries, and memory still free."""

from __future__ import annotations

import os
import sys


def process_rss() -> int | None:
    """Resident memory of this process in bytes (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def available_memory() -> int | None:
    """Memory the system can give this process now, in bytes (Linux MemAvailable; sysconf elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def memory_in_use(device=None) -> int | None:
    """GPU memory allocated by torch on a CUDA device, otherwise the process's resident memory."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        return int(torch.cuda.memory_allocated(device))
    return process_rss()


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter


def return_freed_memory_promptly(threshold: int = 1 << 20) -> bool:
    """Serve allocations above `threshold` with mmap, so freed tensors go back to the system.

    glibc raises its mmap threshold (up to 32 MiB) after each large free; blocks below it then come
    from the heap, where a long prefill's temporaries fragment it and resident memory only grows.
    A fixed threshold keeps resident memory close to live memory. Linux/glibc only; a no-op elsewhere.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        return bool(ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, int(threshold)))
    except (OSError, AttributeError):
        return False
