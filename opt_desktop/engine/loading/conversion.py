"""How a loaded float32 model becomes a precision mode (precision.py says what each one is), in
place, and how much memory its weights then take. On a CPU with bfloat16 instructions, bfloat16
weights are also laid out once for oneDNN's kernels.

No torch at import (torch is imported when a conversion runs).
"""

from __future__ import annotations

import functools

from ..messages.errors import ModelLoadError
from . import precision
from .precision import NO_INT8, cpu_has_bf16, qconfig, quiet_quantization


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

    engine = precision.int8_engine()  # through the module: a test may stand in for it
    if engine is None:
        raise ModelLoadError(NO_INT8)
    torch.backends.quantized.engine = engine
    config = qconfig(engine)
    with quiet_quantization():
        from torch.ao.quantization import quantize_dynamic

        quantize_dynamic(model.model.decoder, {torch.nn.Linear: config}, dtype=torch.qint8, inplace=True)
        head = model.lm_head
        holder = torch.nn.Sequential(head)  # quantised in place: `head` itself keeps its float weight
        quantize_dynamic(holder, {torch.nn.Linear: config}, dtype=torch.qint8, inplace=True)
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
