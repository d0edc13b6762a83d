"""Spreading a checkpoint over GPUs, RAM and disk (accelerate's big-model loading), and saying where it went.

No torch at import: the GUI parses max-memory fields and shows placement summaries with it.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..messages.errors import SettingsError
from ..messages.events import ModelInfo

_DECODER = "model.decoder."
_LAYER = re.compile(r"^layers\.(\d+)$")
# Where each non-layer part sits in the forward pass, so the summary reads in order.
_ORDER = {"": -3, "model": -2, "model.decoder": -1, "embed_tokens": 0, "embed_positions": 1, "project_in": 2,
          "layers": 3, "final_layer_norm": 4, "project_out": 5, "lm_head": 6}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KIB|MIB|GIB)?\s*$", re.IGNORECASE)
# accelerate reads a lower-case "gb" as gigabits: spell every unit the one way it reads as bytes.
_UNITS = {"KB": "KB", "MB": "MB", "GB": "GB", "KIB": "KiB", "MIB": "MiB", "GIB": "GiB"}


def device_name(device) -> str:
    """accelerate names GPUs by index: 0 -> 'cuda:0'; 'cpu', 'disk', 'mps' stay as they are."""
    if isinstance(device, int) or (isinstance(device, str) and device.isdigit()):
        return f"cuda:{int(device)}"
    return str(device)


def condense(device_map: dict, n_layers: int) -> tuple[tuple[str, str], ...]:
    """accelerate's `hf_device_map` as (part, device) pairs in forward order, consecutive layers on
    one device merged: (('embed_tokens', 'cuda:0'), ('layers 0-5', 'cuda:0'), ('layers 6-11', 'cpu'), ...)."""
    items: list[tuple[float, str, str]] = []  # (order, part, device)
    for name, device in device_map.items():
        dev = device_name(device)
        short = name[len(_DECODER):] if name.startswith(_DECODER) else name
        m = _LAYER.match(short)
        if m:
            items.append((_ORDER["layers"] + int(m.group(1)) / (n_layers + 1), f"layer {m.group(1)}", dev))
        elif short == "layers":  # accelerate merges a block of modules that all went to one device
            items.append((_ORDER["layers"], f"layers 0-{n_layers - 1}" if n_layers > 1 else "layer 0", dev))
        else:
            label = {"": "whole model", "model": "model (all but lm_head)", "model.decoder": "decoder"}.get(short, short)
            items.append((_ORDER.get(short, 7), label, dev))
    items.sort(key=lambda t: t[0])

    out: list[tuple[str, str]] = []
    run: list[int] = []  # consecutive layer indices on the same device
    run_dev = ""

    def flush():
        if run:
            out.append((f"layer {run[0]}" if len(run) == 1 else f"layers {run[0]}-{run[-1]}", run_dev))
            run.clear()

    for _, part, dev in items:
        if part.startswith("layer ") and part[6:].isdigit():
            i = int(part[6:])
            if run and (dev != run_dev or i != run[-1] + 1):
                flush()
            run.append(i)
            run_dev = dev
            continue
        flush()
        out.append((part, dev))
    flush()
    return tuple(out)


def placement_summary(info: ModelInfo | None) -> str:
    """One line for the UI: 'embed_tokens, embed_positions, layers 0-5: cuda:0 · layers 6-11: cpu · lm_head: disk'.

    Empty when the model sits on one device."""
    if info is None or not info.placement:
        return ""
    groups: list[tuple[list[str], str]] = []
    for part, dev in info.placement:
        if groups and groups[-1][1] == dev:
            groups[-1][0].append(part)
        else:
            groups.append(([part], dev))
    return " · ".join(f"{', '.join(parts)}: {dev}" for parts, dev in groups)


# --- max memory ----------------------------------------------------------------------------------

def _check_size(key: str, value: str) -> str:
    """'20 gib' -> '20GiB'; a bare number (or 'B') is bytes."""
    m = _SIZE.match(value)
    if not m:
        raise SettingsError(f"max memory for {key}: {value!r} is not a size like 20GiB or 500MB")
    number, unit = m.group(1), (m.group(2) or "").upper()
    return number if unit in ("", "B") else number + _UNITS[unit]


def _accelerate_size(value: str) -> int | str:
    return int(float(value)) if re.fullmatch(r"\d+(\.\d+)?", value) else value


def _check_key(key: str) -> str:
    key = key.strip().lower()
    if key.startswith("cuda:"):
        key = key[5:]
    if key.isdigit() or key in ("cpu", "mps"):
        return key
    raise SettingsError(f"max memory: {key!r} is not a device (use a GPU number such as 0, cpu or mps)")


def parse_max_memory(text: str) -> dict[str, str] | None:
    """'0=20GiB, cpu=30GiB' -> {'0': '20GiB', 'cpu': '30GiB'}; blank -> None (accelerate decides).

    Raises SettingsError with one line when an entry is not `device=size`."""
    text = text.strip()
    if not text:
        return None
    out: dict[str, str] = {}
    for entry in re.split(r"[,;]", text):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=") if "=" in entry else entry.partition(":")
        if not sep or not value.strip():
            raise SettingsError(f"max memory: {entry.strip()!r} should be device=size, e.g. 0=20GiB or cpu=30GiB")
        out[_check_key(key)] = _check_size(key.strip(), value)
    return out


def format_max_memory(max_memory: dict[str, str] | None) -> str:
    return ", ".join(f"{k}={v}" for k, v in (max_memory or {}).items())


def accelerate_max_memory(max_memory: dict[str, str] | None, device: str) -> dict | None:
    """LoadRequest.max_memory in accelerate's form (GPU keys as ints), keeping only the devices the
    chosen device allows: 'cpu' spreads over RAM and disk only."""
    if max_memory is None:
        if device == "cpu":
            from accelerate.utils import get_max_memory

            return {"cpu": get_max_memory()["cpu"]}
        return None
    out: dict = {}
    for key, value in max_memory.items():
        key = _check_key(key)
        if key.isdigit():
            if device in ("cpu", "mps"):
                continue
            out[int(key)] = _accelerate_size(_check_size(key, value))
        elif key == "mps" and device not in ("mps", "auto"):
            continue
        else:
            out[key] = _accelerate_size(_check_size(key, value))
    if "cpu" not in out:
        # accelerate needs a RAM budget to fall back on before the disk.
        from accelerate.utils import get_max_memory

        out["cpu"] = get_max_memory()["cpu"]
    return out


def default_offload_folder(source: str) -> Path:
    """Where weights that fit nowhere else go: the app's cache folder, one subfolder per model."""
    from ... import folders

    safe = re.sub(r"[^\w.-]+", "--", source.strip("/\\")) or "model"
    return folders.cache_dir() / "offload" / safe


def spread_kwargs(source: str, device: str, max_memory: dict[str, str] | None,
                  offload_folder: str | None) -> dict:
    """from_pretrained keywords for accelerate's big-model loading: device_map='auto' fills the
    GPUs in order, then RAM, then the offload folder on disk."""
    folder = Path(offload_folder).expanduser() if offload_folder else default_offload_folder(source)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SettingsError(f"Cannot use {folder} as the offload folder: {exc.strerror or exc}") from None
    kwargs = dict(device_map="auto", offload_folder=str(folder))
    mm = accelerate_max_memory(max_memory, device)
    if mm is not None:
        kwargs["max_memory"] = mm
    return kwargs
