"""What the bundle holds besides the code PyInstaller's analysis finds: the data files and the metadata
of every package the app needs, and what is left out on purpose. packaging/opt-desktop.spec collects
by these rules and tests/test_bundle.py checks a built bundle against them.

A package's data file is any file it installs beside its code: not Python source or bytecode, not a
compiled library or program (PyInstaller's binary analysis and the packages' hooks collect those), not
a file only a developer or a compiler reads (headers, C sources, type stubs), and not in DROP. Libraries
find their own data files by path (kernels' `_internals/python_depends.json`, which transformers 5.25
needs to load any model) and their own and their dependencies' versions through importlib.metadata,
so a bundle that lacks either fails only when the code path that reads it runs.
"""

from __future__ import annotations

import importlib.metadata
import sys
from collections.abc import Iterator
from fnmatch import fnmatch
from pathlib import Path, PurePosixPath

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))

import lock  # noqa: E402

# Python packages nothing in the app imports, which hooks would pull in (torch's hook collects every
# torch submodule): notebook/plotting/UI stacks, test runners and build tools. torch's own modules
# all stay, even its test helpers: some torch modules import them when torch is imported.
# Without setuptools, torch.utils.cpp_extension (compiling C++ extensions) cannot work; the app
# never compiles anything.
EXCLUDES = [
    "tkinter", "_tkinter", "matplotlib", "IPython", "jupyter_client", "ipykernel", "notebook",
    "pytest", "_pytest", "pytestqt", "PyInstaller", "pip", "setuptools", "distutils", "pkg_resources",
    "_distutils_hack", "torch.utils.tensorboard", "tensorboard", "torchvision", "torchaudio",
    "pyqtgraph.examples", "pyqtgraph.opengl", "pyqtgraph.jupyter", "pyqtgraph.canvas",
    "PySide6.QtQml", "PySide6.QtQuick", "PySide6.QtNetwork", "PySide6.QtPdf", "PySide6.QtWebEngineCore",
]

# Files the hooks or the rules above would collect that no run needs: torch's C++ headers and build
# files, static libraries, test programs and test plugins, CUDA libraries (a CPU build has none; a
# CUDA build must not slip in), QML (the app has no QML), the packages' own test suites, and what
# PySide6 carries for building and deploying Qt programs (binding generator input, moc's type data,
# docs, its deployment tool's files).
DROP = [
    "*/tests/*", "*/test-examples/*",
    "PySide6/typesystems/*", "PySide6/glue/*", "PySide6/Qt/metatypes/*", "PySide6/doc/*", "PySide6/scripts/*",
    "numpy/_core/lib/npy-pkg-config/*",
    "torch/include/*", "torch/share/*", "torch/test/*", "torch/lib/*.a", "torch/bin/test_*", "torch/bin/*Test",
    "torch/bin/protoc*", "torch/bin/*.pt", "torch/bin/*.ptl",  # torch/bin/torch_shm_manager stays: torch needs it
    "torch/lib/*_test.so", "torch/lib/libbackend_with_compiler.so", "torch/lib/libaoti_custom_ops.so",
    "*/nvidia/*", "*libcudnn*", "*libcublas*", "*libnccl*", "*libcusparse*",
    "*libcufft*", "*libcurand*", "*libcusolver*", "*libnvrtc*", "*libcudart*", "*libtriton*",
    "PySide6/Qt/qml/*", "PySide6/Qt/translations/qtwebengine*", "*/__pycache__/*",
]

# Read by developers and compilers, never at run time (matched against the file's name).
DEVELOPMENT = [
    "*.h", "*.hpp", "*.hxx", "*.cuh", "*.c", "*.cc", "*.cpp", "*.f", "*.f90", "*.pyx", "*.pxd", "*.pyi",
    "py.typed", "*.cmake", "*.a", "*.lib", "*.prl", "*.pc",
]

_CODE = {".py", ".pyc", ".pyo"}
_LIBRARY = {".so", ".pyd", ".dll", ".dylib", ".exe"}
_EXECUTABLE_MAGIC = (b"\x7fELF", b"MZ", b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe")


def dropped(dest: str) -> bool:
    """Whether a file at `dest` (a path inside the bundle's _internal/, with / or \\) is left out."""
    dest = dest.replace("\\", "/")
    name = dest.rsplit("/", 1)[-1]
    return any(fnmatch(dest, p) for p in DROP) or any(fnmatch(name, p) for p in DEVELOPMENT)


def excluded_module(parts: tuple[str, ...]) -> bool:
    """Whether the module (or package folder) at `parts` of a site-packages path is excluded, or lies in one."""
    dotted = ".".join(parts)
    return any(dotted == m or dotted.startswith(m + ".") for m in EXCLUDES)


def is_compiled(path: Path) -> bool:
    """A library or a program: left to PyInstaller's binary analysis and the packages' hooks."""
    if path.suffix in _LIBRARY or ".so." in path.name:
        return True
    try:
        with path.open("rb") as f:
            return f.read(4).startswith(_EXECUTABLE_MAGIC)
    except OSError:
        return False


def bundled_distributions() -> dict[str, importlib.metadata.Distribution]:
    """The distributions the app needs here (opt-desktop's requirements, followed), less those whose
    every module is excluded (setuptools), by canonical name."""
    out = {}
    for name in lock.closure():
        dist = importlib.metadata.distribution(name)
        tops = {PurePosixPath(f).parts[0] for f in dist.files or [] if not _outside(f)}
        modules = {t.removesuffix(".py") for t in tops if not t.endswith((".dist-info", ".pth", ".data"))}
        if modules and not all(excluded_module((m,)) for m in modules):
            out[name] = dist
    return out


def _outside(f: PurePosixPath) -> bool:
    """Installed outside site-packages (scripts in bin/, files in share/) or the metadata itself."""
    parts = PurePosixPath(f).parts
    return parts[0] == ".." or parts[0].endswith((".dist-info", ".egg-info"))


def data_files(dist: importlib.metadata.Distribution) -> Iterator[tuple[Path, str]]:
    """(installed file, its path inside _internal/) for each data file of `dist`."""
    for f in dist.files or []:
        relative = PurePosixPath(f)
        if _outside(relative) or relative.suffix in _CODE or excluded_module(relative.parent.parts):
            continue
        dest = relative.as_posix()
        if dropped(dest):
            continue
        path = Path(dist.locate_file(f))
        if path.is_file() and not is_compiled(path):
            yield path, dest


def metadata_dir(dist: importlib.metadata.Distribution) -> Path:
    """The installed .dist-info folder, which importlib.metadata reads in the bundle as here."""
    for f in dist.files or []:
        parts = PurePosixPath(f).parts
        if parts[0].endswith(".dist-info"):
            return Path(dist.locate_file(parts[0]))
    raise FileNotFoundError(f"{dist.name} has no .dist-info folder")


def pyinstaller_datas() -> list[tuple[str, str]]:
    """Analysis(datas=...): every bundled distribution's data files and its metadata folder."""
    datas = []
    for dist in bundled_distributions().values():
        datas += [(str(path), str(PurePosixPath(dest).parent)) for path, dest in data_files(dist)]
        folder = metadata_dir(dist)
        datas.append((str(folder), folder.name))
    return datas
