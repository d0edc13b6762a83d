"""Reusable work buffers for the many same-sized temporaries of the prompt's statistics.

The engine serves every allocation above 1 MiB with a fresh mmap (memory.return_freed_memory_promptly),
so each large temporary costs page faults and zeroed pages when first written: for a block of
128 x 50k logits that was about 15 ms per temporary, more than the arithmetic on it. The prompt's
statistics make thousands of such temporaries of a few shapes; they are written into these
buffers instead, each allocated once per prompt (and freed with it).
"""

from __future__ import annotations

import torch


class Scratch:
    """`get(name, shape, dtype, device)` -> a contiguous tensor of that shape, its storage reused
    by the next `get` of the same name (whose previous contents it may overwrite). `reserve`
    (elements) sizes a new buffer for the largest shape to come, so a growing one is made once."""

    def __init__(self) -> None:
        self._flat: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape, dtype: torch.dtype, device, reserve: int = 0) -> torch.Tensor:
        n = 1
        for s in shape:
            n *= int(s)
        flat = self._flat.get(name)
        if flat is None or flat.numel() < n or flat.dtype != dtype or flat.device != torch.device(device):
            flat = self._flat[name] = torch.empty(max(n, reserve), dtype=dtype, device=device)
        return flat[:n].view(shape)

    def clear(self) -> None:
        self._flat.clear()
