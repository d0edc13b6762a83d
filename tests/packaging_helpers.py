"""The repository's packaging/ scripts, loaded by path (the folder is not a package: its name is
taken by the `packaging` library)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGING = ROOT / "packaging"


def load(name: str):
    """packaging/<name>.py as a module (its siblings importable by their plain names)."""
    if str(PACKAGING) not in sys.path:
        sys.path.append(str(PACKAGING))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, PACKAGING / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
