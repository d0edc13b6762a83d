"""A model autograd can differentiate, for gradient attribution in every precision mode.

A float32 model is used as it is, with its weights frozen while the job runs (gradients flow to
the inputs only, so no weight gradient is computed or kept). The other modes cannot all give
gradients: int8's dynamically quantised layers and the oneDNN-packed bfloat16 layers of a CPU have
no backward at all, and emulated bfloat16 on a CPU is slower than float32 and rounds every
gradient. On a CPU those modes are therefore differentiated through a float32 copy made for the
job, with the mode's own weight values (int8 weights dequantised, packed weights unpacked), so the
copy computes what the mode computes up to its rounding. On a GPU, half-precision layers do have
a backward and a float32 copy could take more memory than the GPU has, so the model is
differentiated in its own precision. Either way the result says how, for the view to tell.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch

from ..running.attention import register as register_attention
from ..messages.errors import EngineError
from ..running.memory import available_memory
from ...formatting import format_bytes


@dataclass(frozen=True)
class GradModel:
    model: object  # an OPTForCausalLM whose forward autograd can go back through
    dtype: str  # the dtype the gradients are computed in ("float32", "bfloat16", "float16")
    note: str | None  # one line for the view when the gradients are not the model's own float32 ones


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _is_quantized(module) -> bool:
    """A dynamically quantised linear layer (int8 mode), or the int8 output head wrapping one."""
    return hasattr(module, "_packed_params") or isinstance(getattr(module, "int8", None), torch.nn.Module)


def _is_packed(module) -> bool:
    """conversion.pack_bf16's PackedLinear: its weight exists only in oneDNN's blocked layout."""
    return isinstance(getattr(module, "packed", None), torch.Tensor)


def has_int8_layers(model) -> bool:
    """Whether some layer is int8: it quantises its input with one scale per call, so a batched forward
    computes each sequence a little differently from the same sequence alone."""
    return any(_is_quantized(m) for m in model.modules())


def needs_copy(model) -> bool:
    """Whether gradients need a float32 copy of this model (see the module's docstring)."""
    modules = list(model.model.decoder.modules()) + [model.lm_head]
    if any(_is_quantized(m) or _is_packed(m) for m in modules):
        return True
    dtype = model.model.decoder.embed_tokens.weight.dtype
    return dtype != torch.float32 and model.model.decoder.embed_tokens.weight.device.type == "cpu"


def _dense(module) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(weight (out, in), bias (out,) or None) of a linear layer of any precision mode, in float32."""
    if isinstance(getattr(module, "int8", None), torch.nn.Module):  # precision's Int8Head
        return _dense(module.int8)
    if hasattr(module, "_packed_params"):  # torch.ao dynamic quantized Linear: the int8 values it computes with
        weight = module.weight().dequantize()
        bias = module.bias()
    elif _is_packed(module):
        weight = _unpack(module)
        bias = module.bias
    else:
        weight, bias = module.weight, module.bias
    return weight.detach().float(), None if bias is None else bias.detach().float()


def _unpack(module) -> torch.Tensor:
    """A packed bfloat16 layer's weight, read back exactly: x @ W.T with x = identity (and no bias) is
    W.T, one product per entry, so no sum rounds it."""
    eye = torch.eye(module.in_features, dtype=torch.bfloat16)
    with torch.inference_mode():
        out = torch.ops.mkldnn._linear_pointwise(eye, module.packed, None, "none", [], "")
    return out.t().clone()


def float32_copy(model):
    """A float32 OPTForCausalLM with `model`'s weight values (dequantised / unpacked), frozen, on its device."""
    from transformers import OPTForCausalLM

    device = model.model.decoder.embed_tokens.weight.device
    config = copy.deepcopy(model.config)
    config.dtype = torch.float32
    with torch.device("meta"):
        twin = OPTForCausalLM(config)
    source = dict(model.named_modules())
    with torch.no_grad():
        for name, module in twin.named_modules():
            if isinstance(module, torch.nn.Linear):
                weight, bias = _dense(source[name])
                module.weight = torch.nn.Parameter(weight.to(device), requires_grad=False)
                if module.bias is not None or bias is not None:
                    module.bias = None if bias is None else torch.nn.Parameter(bias.to(device), requires_grad=False)
            else:
                for pname, _ in list(module.named_parameters(recurse=False)):
                    value = getattr(source[name], pname).detach().to(device=device, dtype=torch.float32)
                    setattr(module, pname, torch.nn.Parameter(value, requires_grad=False))
    # The head keeps its own (possibly int8) values: the copy's head is not tied to its embeddings.
    leftover = [n for n, p in list(twin.named_parameters()) + list(twin.named_buffers()) if p.is_meta]
    if leftover:
        raise RuntimeError(f"float32 copy left tensors unset: {leftover[:3]}")
    twin.eval()
    twin.set_attn_implementation(register_attention())
    return twin


@contextmanager
def grad_model(model, n_params: int) -> Iterator[GradModel]:
    """The model to differentiate for one job: `model` itself with frozen weights, or a float32 copy.

    `n_params` is the model's parameter count as loaded (ModelInfo.n_params: int8 weights are no longer
    parameters), for the memory the copy will take."""
    dtype = model.model.decoder.embed_tokens.weight.dtype
    if needs_copy(model):
        mode = "int8" if has_int8_layers(model) else _dtype_name(dtype)
        config = model.config
        need = 4 * (n_params + config.vocab_size * config.word_embed_proj_dim)  # the copy's head is not tied
        available = available_memory()
        if available is not None and need * 1.1 > available:
            raise EngineError(f"Attribution needs a float32 copy of the {mode} model for its gradients "
                              f"({format_bytes(need)}), and only {format_bytes(available)} of memory is free.")
        try:
            twin = float32_copy(model)
        except (MemoryError, torch.OutOfMemoryError):
            raise EngineError(f"Not enough memory for a float32 copy of the {mode} model, which attribution "
                              "needs for its gradients.") from None
        try:
            yield GradModel(twin, "float32", f"Gradients of the {mode} model were computed in float32, "
                                             f"on a float32 copy of its weights.")
        finally:
            del twin
        return
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        note = None if dtype == torch.float32 else (
            f"Gradients were computed in {_dtype_name(dtype)}, the model's own precision: scores are approximate.")
        yield GradModel(model, _dtype_name(dtype), note)
    finally:
        for p in params:
            p.requires_grad_(True)
