"""The demo model's training text: the documentation that ships with CPython.

Two sources, both present on every machine with Python and free to redistribute (PSF licence):

- `pydoc_data.topics`: the language reference topics `help()` shows (about 0.5 MB);
- the docstrings of the standard library's modules, classes and functions.

Python-source modules are read with `ast`, never imported, so nothing in the standard library runs
(`antigravity` opens a browser, `this` prints, tkinter/turtle/idlelib want a display). Only
C-implemented modules are imported (they have no Python source to parse); those with side effects
or that exist for CPython's own tests are skipped.

The result is deterministic for one Python version: modules in sorted order, docstrings in source
order, hard-wrapped prose paragraphs joined into single lines, exact duplicates dropped. Each document is one module (or one pydoc topic); a fixed share
of documents, chosen by a hash of their name, is held out for measuring perplexity.
"""

from __future__ import annotations

import ast
import hashlib
import importlib
import inspect
import json
import re
import subprocess
import sys
import sysconfig
import warnings
from dataclasses import dataclass
from pathlib import Path

# Folders of the standard library that are not library documentation (tests, demos, the IDLE app,
# vendored wheels) or that CPython's own test suite uses.
_SKIP_DIRS = {"test", "tests", "idle_test", "idlelib", "turtledemo", "site-packages", "dist-packages",
              "__pycache__", "_bundled", "__phello__"}
_SKIP_MODULES = {"antigravity", "this", "__hello__"}
# C modules: import side effects (readline takes over the terminal), a display (_tkinter), or test-only.
_SKIP_C = re.compile(r"^(_test.*|_xx.*|xx.*|_ctypes_test|readline|_tkinter|_curses.*)$")

HELD_OUT_PER_MILLE = 40  # documents whose name hashes below this (of 1000) are held out

WORD = re.compile(r"[A-Za-z]+")


@dataclass(frozen=True)
class Document:
    name: str  # "topic:<name>" or the dotted module name
    text: str

    @property
    def held_out(self) -> bool:
        digest = hashlib.sha256(self.name.encode("utf-8")).digest()
        return int.from_bytes(digest[:4], "big") % 1000 < HELD_OUT_PER_MILLE


def words(text: str) -> list[str]:
    """The words of a text as the corpus checks count them: runs of ASCII letters, case kept."""
    return WORD.findall(text)


# A line that starts a new item rather than continuing a sentence: a list bullet, a numbered item, a
# doctest prompt, an rst directive, field or underline.
_STARTS_ITEM = re.compile(r"^(>>>|\.\.\.|\.\. |[-*+•|=~^#:]|\d+[.)]\s|\(\w\)\s)")


def reflow(doc: str) -> str:
    """Join the hard-wrapped lines of each prose paragraph into one line.

    Docstrings wrap at ~72 columns; left wrapped, one token in twelve is a line break whose place
    depends on line length, not language. Indented lines (code, continuations) and lines that
    start an item are left as they are.
    """
    out: list[str] = []
    for line in doc.split("\n"):
        prev = out[-1] if out else ""
        if (prev and line and not prev[0].isspace() and not line[0].isspace() and not prev.endswith("::")
                and not _STARTS_ITEM.match(line) and not _STARTS_ITEM.match(prev)):
            out[-1] = prev.rstrip() + " " + line.strip()
        else:
            out.append(line.rstrip())
    return "\n".join(out)


def _clean(doc: str | None) -> str | None:
    if not doc or not isinstance(doc, str):
        return None
    doc = reflow(inspect.cleandoc(doc)).strip()
    return doc if len(doc) >= 20 else None  # one-word docstrings add nothing


def _stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def _source_modules(root: Path) -> list[tuple[str, Path]]:
    found = []
    for path in root.rglob("*.py"):
        rel = path.relative_to(root)
        if any(part in _SKIP_DIRS for part in rel.parts[:-1]):
            continue
        parts = list(rel.with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        if not parts or parts[0] in _SKIP_MODULES or "-" in parts[0] or parts[0].startswith("_sysconfigdata"):
            continue
        found.append((".".join(parts), path))
    return sorted(found)


def _ast_docstrings(path: Path) -> list[str]:
    """The module's docstring, then every class's and function's, in source order."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return []
    docs = [ast.get_docstring(tree, clean=False)]

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                docs.append(ast.get_docstring(child, clean=False))
                visit(child)

    visit(tree)
    return [d for d in map(_clean, docs) if d]


def _c_module_names(root: Path) -> list[str]:
    dynload = root / "lib-dynload"
    names = set(sys.builtin_module_names)
    if dynload.is_dir():
        names |= {p.name.split(".")[0] for p in dynload.iterdir() if p.suffix in (".so", ".pyd")}
    return sorted(n for n in names if not _SKIP_C.match(n))


def _object_docstrings(module) -> list[str]:
    """A C module's docstring, then its classes' (with their methods') and functions', by name."""
    docs = [module.__doc__]
    for name, obj in sorted(vars(module).items()):
        if name.startswith("__"):
            continue
        if inspect.isclass(obj) and obj.__module__ == module.__name__:
            docs.append(obj.__doc__)
            for _, member in sorted(vars(obj).items()):
                if callable(member) or isinstance(member, (property, classmethod, staticmethod)):
                    docs.append(getattr(member, "__doc__", None))
        elif inspect.isroutine(obj) and getattr(obj, "__module__", None) == module.__name__:
            # Only the module's own functions: a hook such as sys.excepthook may have been replaced
            # by whatever imported it, and the corpus must not depend on that.
            docs.append(obj.__doc__)
    return [d for d in map(_clean, docs) if d]


def _c_docstrings(name: str) -> list[str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = importlib.import_module(name)
    except Exception:  # a platform's module missing elsewhere, or one that refuses to load
        return []
    if getattr(module, "__file__", "").endswith(".py"):
        return []  # read from source instead
    return _object_docstrings(module)


def _fresh_c_docstrings() -> dict[str, list[str]]:
    """Every C module's docstrings, read in a fresh, isolated interpreter: the calling process may
    have replaced some of them (pytest installs its own sys.excepthook, for one)."""
    out = subprocess.run([sys.executable, "-I", "-S", str(Path(__file__).resolve()), "--c-docstrings"],
                         capture_output=True, text=True, check=True, timeout=300)
    return json.loads(out.stdout)


def documents() -> list[Document]:
    """Every document of the corpus, in a fixed order, exact duplicate docstrings removed."""
    from pydoc_data.topics import topics

    root = _stdlib_dir()
    seen: set[str] = set()
    out: list[Document] = []

    def add(name: str, pieces: list[str]) -> None:
        kept = []
        for piece in pieces:
            if piece not in seen:
                seen.add(piece)
                kept.append(piece)
        if kept:
            out.append(Document(name, "\n\n".join(kept)))

    for topic in sorted(topics):
        add(f"topic:{topic}", [t for t in [_clean(topics[topic])] if t])
    for name, path in _source_modules(root):
        add(name, _ast_docstrings(path))
    for name, pieces in sorted(_fresh_c_docstrings().items()):
        add(name, pieces)
    return out


def describe(docs: list[Document]) -> dict:
    """What the training record says about the corpus: Python version, sizes and a hash."""
    text = "\n\n".join(d.text for d in docs)
    train = [d for d in docs if not d.held_out]
    held = [d for d in docs if d.held_out]
    return {
        "python": sys.version.split()[0],
        "implementation": sys.implementation.name,
        "documents": len(docs),
        "characters": len(text),
        "bytes": len(text.encode("utf-8")),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "train_documents": len(train),
        "held_out_documents": len(held),
        "held_out_characters": sum(len(d.text) for d in held),
        "held_out_rule": f"sha256(document name)[:4] % 1000 < {HELD_OUT_PER_MILLE}",
    }


if __name__ == "__main__" and sys.argv[1:] == ["--c-docstrings"]:
    json.dump({name: _c_docstrings(name) for name in _c_module_names(_stdlib_dir())}, sys.stdout)
