"""Memory in use, for status bars and run summaries."""

from __future__ import annotations

import os


def process_rss() -> int | None:
    """Resident memory of this process in bytes (Linux /proc; None elsewhere)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return None


def memory_in_use(device=None) -> int | None:
    """GPU memory allocated by torch on a CUDA device, otherwise the process's resident memory."""
    if device is not None and getattr(device, "type", str(device)) == "cuda":
        import torch

        return int(torch.cuda.memory_allocated(device))
    return process_rss()
