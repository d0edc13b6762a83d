"""Interventions on a loaded OPT model: scaled attention heads and prompt positions hidden from attention.

Head h of layer l is scaled where its output enters `self_attn.out_proj`: a forward pre-hook
multiplies the slice [..., h*d:(h+1)*d] of out_proj's input (d = hidden / heads). That is the
head's attention output, so the hook works with every attention implementation (eager, SDPA, the
engine's chunked eager), with the KV cache, with int8 (dynamic quantized) out_proj modules and on
whichever device accelerate put the layer. Scaling a head's output by s equals scaling its
attention probabilities by s, which is what transformers' removed `head_mask` did.

Hidden positions are zeros in the 2-D attention mask. OPT derives its position ids from the
cumulative sum of that mask, which would shift every later token; explicit position ids keep
each token where it is.
"""

from __future__ import annotations

from typing import Iterable

import torch

from ..messages.interventions_spec import normalize_head_mask


class HeadMask:
    """Head-scaling hooks on one model, as a context manager; `set` swaps the mask between forward steps.

    Layers whose heads are all left at scale 1 get no hook, so an empty mask installs nothing.
    """

    def __init__(self, model, mask: Iterable = ()):
        self.layers = list(model.model.decoder.layers)
        config = model.config
        self.n_heads = config.num_attention_heads
        self.head_dim = config.hidden_size // config.num_attention_heads
        self.hidden_size = config.hidden_size
        self._hooks: dict[int, object] = {}  # layer -> hook handle
        self._scales: dict[int, torch.Tensor] = {}  # layer -> (hidden,) float32 on the CPU
        self._placed: dict[tuple[int, torch.device, torch.dtype], torch.Tensor] = {}
        self._entered = False
        self.mask = normalize_head_mask(mask)

    def __enter__(self) -> "HeadMask":
        self._entered = True
        self.set(self.mask)
        return self

    def __exit__(self, *exc) -> None:
        self._entered = False
        for handle in self._hooks.values():
            handle.remove()
        self._hooks.clear()

    def set(self, mask: Iterable) -> None:
        """Use `mask` from the next forward step on (call between steps, on the thread that runs the model)."""
        self.mask = normalize_head_mask(mask)
        scales: dict[int, torch.Tensor] = {}
        d = self.head_dim
        for item in self.mask:
            if item.scale == 1.0:
                continue
            vec = scales.setdefault(item.layer, torch.ones(self.hidden_size))
            vec[item.head * d:(item.head + 1) * d] = item.scale
        self._scales = scales
        self._placed.clear()
        if not self._entered:
            return
        for layer in list(self._hooks):
            if layer not in scales:
                self._hooks.pop(layer).remove()
        for layer in scales:
            if layer not in self._hooks:
                out_proj = self.layers[layer].self_attn.out_proj
                self._hooks[layer] = out_proj.register_forward_pre_hook(self._make_hook(layer))

    def _scale_like(self, layer: int, x: torch.Tensor) -> torch.Tensor:
        # Placed on the input's own device and dtype: with a spread model each layer may live elsewhere.
        key = (layer, x.device, x.dtype)
        vec = self._placed.get(key)
        if vec is None:
            vec = self._placed[key] = self._scales[layer].to(device=x.device, dtype=x.dtype)
        return vec

    def _make_hook(self, layer: int):
        def hook(module, args):
            x = args[0]
            return (x * self._scale_like(layer, x),) + tuple(args[1:])

        return hook


def attention_inputs(n_tokens: int, hidden_positions: Iterable[int], device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(attention_mask (1, n), position_ids (1, n) or None) for a sequence with some positions hidden.

    Without hidden positions the mask is all ones and no position ids are passed, exactly as before
    interventions existed; with them, explicit positions 0..n-1 keep every token where it was.
    """
    mask = torch.ones(1, n_tokens, dtype=torch.long, device=device)
    hidden = list(hidden_positions)
    if not hidden:
        return mask, None
    mask[0, hidden] = 0
    return mask, torch.arange(n_tokens, device=device).unsqueeze(0)
