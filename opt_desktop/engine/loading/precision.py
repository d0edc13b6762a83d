"""Precision modes: what each one is, and whether this machine can run it.

How a float32 model becomes a mode is conversion.py's; how far it then drifts from float32 is
accuracy.py's.

float32 is exact: the reference. bfloat16 and float16 store every weight in 2 bytes. int8 (CPU only)
stores the weights of the linear layers, the output head included, in int8 and quantises their
inputs on the fly (PyTorch's dynamic quantisation); embeddings, LayerNorms and the attention
arithmetic stay float32, so hooks, statistics and head masks see float32 tensors.

No torch at import: the model bar asks which modes this machine runs before torch has loaded.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass

from ..messages.errors import ModelLoadError

MODES = ("float32", "bfloat16", "float16", "int8")
EXACT = "float32"
# PyTorch's quantized CPU engines, best first: x86/fbgemm/onednn on Intel and AMD, qnnpack on Arm.
_INT8_ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")
NO_INT8 = ("int8 mode needs PyTorch's quantized CPU kernels (torch.ao.quantization), which this PyTorch build "
           "lacks: choose bfloat16 or float32.")


def is_approximate(dtype: str) -> bool:
    return dtype != EXACT


# --- what this machine can run ------------------------------------------------------------------


@dataclass(frozen=True)
class Capabilities:
    """What the precision modes depend on. None where it is not known without importing torch."""

    cpu_bf16: bool  # the CPU has bfloat16 instructions (AVX512-BF16 or AMX on x86, BF16 on Arm)
    int8_engine: str | None  # PyTorch's quantized CPU engine for int8 mode; None when there is none
    cuda: bool | None = None
    mps: bool | None = None
    probed: bool = False  # True when torch itself was asked; False for a guess made without it


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (x86 'flags', Arm 'Features'); empty elsewhere."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether the CPU computes in bfloat16 natively (otherwise PyTorch emulates it, slowly)."""
    if "torch" in sys.modules:
        import torch

        try:
            if torch.ops.mkldnn._is_mkldnn_bf16_supported():  # what PyTorch's own kernels check
                return True
        except (AttributeError, RuntimeError):
            pass
    flags = cpu_flags()
    if flags & {"avx512_bf16", "amx_bf16", "bf16"}:
        return True
    if sys.platform == "darwin" and platform.machine() == "arm64":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=2)
            return out.stdout.strip() == "1"
        except (OSError, subprocess.SubprocessError):
            return False
    return False


@contextmanager
def quiet_quantization():
    """torch.ao.quantization warns that it is deprecated; the engine uses it on purpose, behind
    `int8_engine()`, so people are not shown that warning at every load."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        yield


@functools.cache
def _probe_int8_engine() -> str | None:
    """Quantise and run a tiny linear layer on the first engine that can; None when none can."""
    import torch

    try:
        with quiet_quantization():
            from torch.ao.quantization import quantize_dynamic
    except ImportError:
        return None
    supported = set(torch.backends.quantized.supported_engines)
    current = torch.backends.quantized.engine
    for engine in sorted(supported & set(_INT8_ENGINES), key=_INT8_ENGINES.index):
        try:
            torch.backends.quantized.engine = engine
            with quiet_quantization(), torch.inference_mode():
                layer = torch.nn.Sequential(torch.nn.Linear(8, 4))
                quantize_dynamic(layer, {torch.nn.Linear: qconfig(engine)}, dtype=torch.qint8, inplace=True)
                layer(torch.ones(2, 8))
            return engine
        except Exception:  # a build without this engine's kernels fails here, in many ways
            continue
        finally:
            torch.backends.quantized.engine = current
    return None


def int8_engine() -> str | None:
    """PyTorch's quantized CPU engine that int8 mode runs on, or None when this build has none."""
    return _probe_int8_engine()


def capabilities(probe: bool | None = None) -> Capabilities:
    """This machine's capabilities. `probe=None` asks torch only if it is already imported (the GUI
    must not import it on its thread); without torch, int8 is assumed on x86-64 and 64-bit Arm."""
    if probe is None:
        probe = "torch" in sys.modules
    if not probe:
        machine = platform.machine().lower()
        guess = "x86" if machine in ("x86_64", "amd64") else "qnnpack" if machine in ("arm64", "aarch64") else None
        return Capabilities(cpu_bf16=cpu_has_bf16(), int8_engine=guess)
    import torch

    mps = getattr(torch.backends, "mps", None)
    return Capabilities(cpu_bf16=cpu_has_bf16(), int8_engine=int8_engine(), cuda=torch.cuda.is_available(),
                        mps=bool(mps is not None and mps.is_available()), probed=True)


def resolve(device: str, caps: Capabilities) -> str | None:
    """'auto' as the loader resolves it (CUDA, then MPS, then the CPU); None while that is unknown."""
    if device != "auto":
        return device
    if caps.cuda or caps.mps:
        return "cuda" if caps.cuda else "mps"
    return None if caps.cuda is None or caps.mps is None else "cpu"


def mode_problem(dtype: str, device: str, caps: Capabilities, placement: str = "one-device") -> str | None:
    """Why `dtype` cannot run on `device` here, as one line; None when it can (or cannot be known yet)."""
    where = resolve(device, caps)
    if dtype == "int8":
        if where not in (None, "cpu"):
            return "int8 mode runs on the CPU only: on a GPU choose float16 or bfloat16."
        if placement == "spread":
            return "int8 mode keeps the whole model in the CPU's memory: choose one-device placement."
        if caps.int8_engine is None:
            return NO_INT8
    if dtype == "float16" and where == "cpu":
        # Measured: a 512-token prefill in float16 takes 4x as long as in float32 and 10x as long as
        # in bfloat16 (PyTorch has no fast float16 matrix kernels for CPUs), and decoding is no faster.
        return ("float16 is for GPUs: on a CPU it is several times slower than float32; "
                "choose bfloat16 (the same memory) or int8.")
    return None


def mode_note(dtype: str, device: str, caps: Capabilities) -> str:
    """What the mode is and how it does on this machine, for tooltips."""
    where = resolve(device, caps)
    if dtype == "float32":
        return "Exact: the reference the other modes are measured against. 4 bytes a weight."
    if dtype == "bfloat16":
        if where not in (None, "cpu"):
            return "Approximate: 2 bytes a weight; fast on recent GPUs."
        if caps.cpu_bf16:
            return "Approximate: 2 bytes a weight; this CPU has bfloat16 instructions, so it is fast here."
        return ("Approximate: 2 bytes a weight; this CPU has no bfloat16 instructions, so it may run slower "
                "than float32 here.")
    if dtype == "float16":
        return "Approximate: 2 bytes a weight; the fast format of GPUs."
    return ("Approximate: the linear layers in int8 (weights, and their inputs quantised on the fly), "
            "about 1 byte a weight; the fastest mode on a CPU.")


def check_mode(dtype: str, device: str, placement: str = "one-device") -> None:
    """Raise ModelLoadError (one line) when `dtype` cannot run on the resolved `device`."""
    problem = mode_problem(dtype, device, capabilities(probe=True), placement)
    if problem:
        raise ModelLoadError(problem)


def qconfig(engine: str):
    """The quantisation settings of int8 mode on `engine`."""
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    # One scale per output row keeps rows of very different size (the output head's) accurate.
    return default_dynamic_qconfig if engine == "qnnpack" else per_channel_dynamic_qconfig
