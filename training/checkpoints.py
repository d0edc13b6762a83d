"""A run's checkpoints and sittings: what lets one run be spread over many processes and still be the
run it would have been in one."""

from __future__ import annotations

import json
import os
import random
import re
import socket
import time
from pathlib import Path

import torch


class Checkpoints:
    """ckpt-<step>.pt files in one folder (written whole, then renamed, so a kill mid-write leaves
    the previous one intact), and sittings.json: one entry per sitting, rewritten as it goes, so a
    sitting that was killed still shows the time it spent."""

    def __init__(self, folder: Path, keep_every: int = 0):
        self.folder, self.keep_every = Path(folder), keep_every

    def latest(self) -> Path | None:
        found = sorted(self.folder.glob("ckpt-*.pt"))
        return found[-1] if found else None

    def save(self, state: dict) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / f"ckpt-{state['step']:06d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        for old in sorted(self.folder.glob("ckpt-*.pt"))[:-2]:  # the last two, and the milestones
            step = int(re.findall(r"\d+", old.stem)[0])
            if not (self.keep_every and step % self.keep_every == 0):
                old.unlink()
        return path

    def load(self, path: Path) -> dict:
        return torch.load(path, weights_only=True)

    def sittings(self) -> list[dict]:
        f = self.folder / "sittings.json"
        return json.loads(f.read_text(encoding="utf-8")) if f.exists() else []

    def write_sittings(self, sittings: list[dict]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        tmp = self.folder / "sittings.json.tmp"
        tmp.write_text(json.dumps(sittings, indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, self.folder / "sittings.json")


class Sitting:
    """This process's share of the run: steps, wall and CPU seconds (all of it: corpus, tokenizer,
    measuring), threads and host, kept up to date in sittings.json."""

    def __init__(self, ckpt: Checkpoints, start_step: int, threads: int, started: tuple[float, float] | None = None):
        self.ckpt = ckpt
        self.wall0, self.cpu0 = started or (time.time(), time.process_time())
        self.earlier = ckpt.sittings()
        self.entry = {"start_step": start_step, "end_step": start_step, "checkpointed_step": start_step,
                      "wall_seconds": 0, "cpu_seconds": 0, "threads": threads, "host": socket.gethostname(),
                      "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "ended": "running"}

    def update(self, step: int, checkpointed: bool = False, ended: str | None = None) -> None:
        self.entry["end_step"] = step
        if checkpointed:
            self.entry["checkpointed_step"] = step
        self.entry["wall_seconds"] = round(time.time() - self.wall0, 1)
        self.entry["cpu_seconds"] = round(time.process_time() - self.cpu0, 1)
        if ended:
            self.entry["ended"] = ended
        self.ckpt.write_sittings(self.all())

    def all(self) -> list[dict]:
        return self.earlier + [self.entry]


def rng_states(g: torch.Generator) -> dict:
    # numpy's generator is never used by training; python's random neither, but costs nothing to keep.
    return {"torch": torch.get_rng_state(), "batches": g.get_state(), "python": random.getstate()}


def set_rng_states(states: dict, g: torch.Generator) -> None:
    torch.set_rng_state(states["torch"])
    g.set_state(states["batches"])
    random.setstate(_as_tuple(states["python"]))


def _as_tuple(x):
    return tuple(_as_tuple(v) for v in x) if isinstance(x, (list, tuple)) else x
