"""Whether a folder holds an OPT checkpoint this app can load, from its files alone.

No torch and no transformers: the window checks a folder the person picked with these (the model
manager), and the loader runs the same checks before it lets go of the model it already has.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..messages.errors import ModelLoadError

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def looks_like_path(source: str) -> bool:
    """A source that cannot be a Hub id ('org/name') is taken as a folder path."""
    return source.startswith((".", "/", "~", "\\")) or "\\" in source or not _HUB_ID.match(source)


def has_tokenizer(folder: Path) -> bool:
    return (folder / "tokenizer.json").is_file() or (
        (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file())


def has_weights(folder: Path) -> bool:
    return any(folder.glob("*.safetensors")) or any(folder.glob("pytorch_model*.bin"))


def missing_parts(folder: Path) -> list[str]:
    """What an OPT checkpoint folder lacks to be loaded, in words; empty when it is complete."""
    missing = []
    if not (folder / "config.json").is_file():
        missing.append("config.json")
    index = next(iter(folder.glob("*.index.json")), None)
    if index is not None:
        try:
            shards = set(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}).values())
        except (OSError, ValueError, AttributeError):
            shards = set()
        if not shards or any(not (folder / s).is_file() for s in shards):
            missing.append(f"weight shards listed in {index.name}")
    elif not has_weights(folder):
        missing.append("weights (*.safetensors or pytorch_model.bin)")
    if not has_tokenizer(folder):
        missing.append("tokenizer files (tokenizer.json, or vocab.json and merges.txt)")
    return missing


def check_opt_config(source: str, folder: Path) -> dict:
    """The folder's config.json, when it describes an OPT model with weights beside it; else ModelLoadError."""
    cfg_path = folder / "config.json"
    if not cfg_path.is_file():
        raise ModelLoadError(f"{source} is not an OPT checkpoint: it has no config.json.")
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        raise ModelLoadError(f"{source} is not an OPT checkpoint: its config.json is not valid JSON.") from None
    model_type = cfg.get("model_type") if isinstance(cfg, dict) else None
    if model_type != "opt":
        raise ModelLoadError(f"{source} is not an OPT checkpoint (its model_type is {model_type!r}, not 'opt').")
    if not has_weights(folder):
        raise ModelLoadError(f"{source} has no weights (no *.safetensors or pytorch_model.bin).")
    return cfg


def check_tokenizer_files(source: str, folder: Path) -> None:
    """Fail before the current model is let go, rather than after the weights have loaded."""
    if not has_tokenizer(folder):
        raise ModelLoadError(f"{source} has no tokenizer files (tokenizer.json, or vocab.json and merges.txt).")


def local_folder(source: str) -> Path | None:
    """The folder `source` names, None when it is a Hub id; ModelLoadError for a path that is no folder."""
    path = Path(source).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise ModelLoadError(f"{source} is a file, not a model folder: choose the folder that holds config.json.")
    if looks_like_path(source):
        raise ModelLoadError(f"No such folder: {source}")
    return None


def check_folder(path: str | Path) -> dict:
    """The config.json of the OPT checkpoint in `path`; ModelLoadError (one line saying what is wrong)
    when it is not one this app can load. The same checks as a load, without torch."""
    source = str(path)
    folder = local_folder(source)
    if folder is None:  # a bare name that could be a Hub id, and no such folder here
        raise ModelLoadError(f"No such folder: {source}")
    cfg = check_opt_config(source, folder)
    check_tokenizer_files(source, folder)
    return cfg
