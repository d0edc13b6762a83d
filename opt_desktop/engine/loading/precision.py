"""Precision modes: what each one is, whether this machine can run it, how a float32 model becomes it,
and how far it drifts from float32.

float32 is exact: the reference. bfloat16 and float16 store every weight in 2 bytes. int8 (CPU only)
stores the weights of the linear layers, the output head included, in int8 and quantises their
inputs on the fly (PyTorch's dynamic quantisation); embeddings, LayerNorms and the attention
arithmetic stay float32, so hooks, statistics and head masks see float32 tensors.

No torch at import: the model bar asks which modes this machine runs before torch has loaded.
"""

from __future__ import annotations

import functools
import os
import platform
import subprocess
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..messages.errors import ModelLoadError
from ..messages.events import ModeAccuracy

MODES = ("float32", "bfloat16", "float16", "int8")
EXACT = "float32"
# PyTorch's quantized CPU engines, best first: x86/fbgemm/onednn on Intel and AMD, qnnpack on Arm.
_INT8_ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")
NO_INT8 = ("int8 mode needs PyTorch's quantized CPU kernels (torch.ao.quantization), which this PyTorch build "
           "lacks: choose bfloat16 or float32.")

# Read by both float32 and the approximate mode when a model loads; its next-token distributions
# are compared position by position (teacher-forced: both see the same tokens).
REFERENCE_TEXT = (
    "The village lay at the foot of the mountains, where the river slowed and widened before it reached "
    "the sea. Every spring the fishermen mended their nets on the shore, and the children watched the "
    "boats come back in the evening light, counting them one by one until the last had returned."
)


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
                quantize_dynamic(layer, {torch.nn.Linear: _qconfig(engine)}, dtype=torch.qint8, inplace=True)
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


# --- turning a float32 model into a mode ----------------------------------------------------------


def _qconfig(engine: str):
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig

    # One scale per output row keeps rows of very different size (the output head's) accurate.
    return default_dynamic_qconfig if engine == "qnnpack" else per_channel_dynamic_qconfig


@functools.cache
def _int8_head_class():
    import torch

    class Int8Head(torch.nn.Module):
        """The output head in int8 for decoding, keeping the float `weight` and `bias` it had.

        The logit lens and prompt scoring call `F.linear(x, lm_head.weight, lm_head.bias)`; OPT ties
        that weight to the token embeddings, so keeping it costs no memory.
        """

        def __init__(self, head: torch.nn.Linear, int8: torch.nn.Module):
            super().__init__()
            self.int8 = int8
            self.weight = head.weight
            self.register_parameter("bias", head.bias)
            self.in_features, self.out_features = head.in_features, head.out_features

        def forward(self, x):
            return self.int8(x)

    return Int8Head


def quantize_int8(model) -> None:
    """Turn the linear layers of a float32 OPT (decoder and output head) into dynamic int8 ones, in place."""
    import torch

    engine = int8_engine()
    if engine is None:
        raise ModelLoadError(NO_INT8)
    torch.backends.quantized.engine = engine
    qconfig = _qconfig(engine)
    with quiet_quantization():
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(model.model.decoder, {torch.nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
        head = model.lm_head
        holder = torch.nn.Sequential(head)  # quantised in place: `head` itself keeps its float weight
        quantize_dynamic(holder, {torch.nn.Linear: qconfig}, dtype=torch.qint8, inplace=True)
        model.lm_head = _int8_head_class()(head, holder[0])


@functools.cache
def onednn_bf16() -> bool:
    """Whether bfloat16 linear layers can run from weights laid out once for oneDNN, the CPU's
    bfloat16 matrix kernels (twice as fast in decoding as plain bfloat16 matmuls, measured).

    These are the private ops torch.compile's freezing uses; checked against F.linear on a small layer.
    """
    import torch

    if not (cpu_has_bf16() and torch.backends.mkldnn.is_available()):
        return False
    try:
        with torch.inference_mode():
            w = torch.linspace(-1, 1, 24 * 16).reshape(24, 16).bfloat16()
            b = torch.linspace(0, 1, 24).bfloat16()
            x = torch.linspace(-2, 2, 3 * 16).reshape(1, 3, 16).bfloat16()
            packed = torch.ops.mkldnn._reorder_linear_weight(w, 1)
            y = torch.ops.mkldnn._linear_pointwise(x, packed, b, "none", [], "")
            return bool(torch.allclose(y.float(), torch.nn.functional.linear(x, w, b).float(), atol=0.05))
    except (AttributeError, RuntimeError):
        return False


@functools.cache
def _packed_linear_class():
    import torch

    class PackedLinear(torch.nn.Module):
        """A bfloat16 linear layer whose weight is laid out for oneDNN once, at load time.

        `keep_weight` keeps the plain weight too (the output head: the lens reads it, and it is tied
        to the token embeddings, so it is there anyway).
        """

        def __init__(self, linear: torch.nn.Linear, keep_weight: bool = False):
            super().__init__()
            self.packed = torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), 1)  # not a parameter
            if keep_weight:
                self.weight = linear.weight
            self.register_parameter("bias", linear.bias)
            self.in_features, self.out_features = linear.in_features, linear.out_features

        def forward(self, x):
            return torch.ops.mkldnn._linear_pointwise(x.contiguous(), self.packed, self.bias, "none", [], "")

    return PackedLinear


def pack_bf16(model) -> None:
    """Lay out every linear layer of a bfloat16 OPT, the output head included, for oneDNN; in place."""
    import torch

    cls = _packed_linear_class()
    with torch.inference_mode():
        for parent in list(model.model.decoder.modules()):
            for name, child in list(parent.named_children()):
                if type(child) is torch.nn.Linear:
                    setattr(parent, name, cls(child))
        model.lm_head = cls(model.lm_head, keep_weight=True)


def convert(model, dtype: str, device: str = "cpu"):
    """Put a loaded model (float32, or already in `dtype`) into precision mode `dtype` on `device`,
    in place; on a CPU this also lays bfloat16 weights out for its fast kernels. Returns the model."""
    import torch

    if dtype == "int8":
        quantize_int8(model)
    elif dtype in ("bfloat16", "float16"):
        model.to(getattr(torch, dtype))
        if dtype == "bfloat16" and device == "cpu" and onednn_bf16():
            pack_bf16(model)
    return model


def footprint(model) -> int:
    """Bytes of weights and buffers, counting int8 and oneDNN-packed weights (neither parameters nor buffers)."""
    import torch

    seen: set[int] = set()
    total = 0
    for t in list(model.parameters()) + list(model.buffers()):
        if t.data_ptr() not in seen:
            seen.add(t.data_ptr())
            total += t.numel() * t.element_size()
    for module in model.modules():
        packed = getattr(module, "packed", None)
        if isinstance(packed, torch.Tensor):
            total += packed.numel() * packed.element_size()
        if getattr(module, "_packed_params", None) is None or not callable(getattr(module, "weight", None)):
            continue
        w = module.weight()  # int8 values with one float scale (and zero point) per row
        total += w.numel() * w.element_size()
        if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            total += w.q_per_channel_scales().numel() * 8 + w.q_per_channel_zero_points().numel() * 8
        b = module.bias()
        total += 0 if b is None else b.numel() * b.element_size()
    return total


# --- accuracy against float32 ---------------------------------------------------------------------


def reference_ids(tokenizer, bos_token_id: int):
    """REFERENCE_TEXT as the engine would feed it (</s> first), as a (1, T) tensor."""
    import torch

    ids = tokenizer(REFERENCE_TEXT)["input_ids"]
    if not ids or ids[0] != bos_token_id:
        ids = [bos_token_id] + ids
    return torch.tensor([ids])


def next_token_logprobs(model, input_ids):
    """(T, V) float64 log-probabilities of the next token at every position, from one forward pass.

    float64 because the KL of a close approximation (~1e-4) sums 50k tiny differences of log-probs:
    float32 rounding alone moved it by half a percent."""
    import torch

    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(input_ids=input_ids.to(device), use_cache=False).logits[0]
        return torch.log_softmax(logits.double(), dim=-1).cpu()


def compare(reference, approx) -> ModeAccuracy:
    """Mean KL(reference || approx) over positions, and how often both pick the same top token."""
    import torch

    kl = torch.nn.functional.kl_div(approx, reference, reduction="none", log_target=True).sum(-1)
    agree = (reference.argmax(-1) == approx.argmax(-1)).float().mean()
    # Rounding can leave a KL a hair below 0 where the distributions all but coincide.
    return ModeAccuracy(mean_kl=max(0.0, float(kl.mean())), top1_agreement=float(agree),
                        n_positions=int(reference.shape[0]))


def float32_copy_fits(folder: Path | None) -> bool:
    """Whether a float32 copy of the checkpoint in `folder` fits in the memory available now, with
    room to spare, so the loader may hold one to measure a half-precision mode against."""
    if folder is None:
        return True  # demo-random, made in code: a few megabytes
    stored = sum(p.stat().st_size for pattern in ("*.safetensors", "pytorch_model*.bin") for p in folder.glob(pattern))
    f32_bytes = stored * 2  # OPT checkpoints are stored in float16; a float32 one is counted twice, safely
    available = available_memory()
    return available is not None and f32_bytes * 1.25 < available


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
