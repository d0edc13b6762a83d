"""The engine's attention: transformers' SDPA for a prompt, eager arithmetic for one new token, and the
attention weights a capture asks for, a block of queries at a time.

A prompt (many queries) runs through `scaled_dot_product_attention`, exactly as a plain model's
forward does, so the first token comes as fast as bare `model.generate` and its numbers are the
plain model's. SDPA returns no weights: a capture that wants the prompt's attention statistics is
handed the keys (and mask) of each layer and recomputes the weights afterwards, a block of queries
at a time (`weight_blocks`), so nothing of size H x T x T is ever held. One new token (a decode
step) uses eager arithmetic, whose weights come with the output at no extra cost; they go to the
capture's sink. It is registered with transformers' AttentionInterface under ATTN_IMPLEMENTATION,
with the SDPA mask (None for a plain causal prompt, else boolean). `new_cache` is the KV cache for
it: it grows in place instead of copying itself at every decode step.
"""

from __future__ import annotations

import functools

import torch

from .scratch import Scratch
from ..messages.job_context import JobContext

ATTN_IMPLEMENTATION = "opt_desktop_capture"
SINK_ATTRIBUTE = "_opt_desktop_attention_sink"
_CHUNK_ELEMENTS = 1 << 20  # attention scores per block of recomputed weights: 4 MiB in float32
_CACHE_BLOCK = 256  # positions the KV cache grows by at a time


def capture_attention(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0, **kwargs):
    """Same inputs and outputs as transformers' sdpa_attention_forward (weights are never returned).

    With a capture sink on `module` (see capture.py), a prompt's keys and mask go to
    `sink.prompt(query, key, mask, first_query, scaling)` and a decode step's float32 weights to
    `sink.step(weights)`."""
    sink = getattr(module, SINK_ATTRIBUTE, None)
    q_len, k_len = query.shape[-2], key.shape[-2]
    if q_len > 1:
        cached_key = key
        if key.dtype != query.dtype:  # a bfloat16 model's float32 cache on a CPU (GrowingLayer): exact
            key, value = key.to(query.dtype), value.to(query.dtype)
        out = _sdpa(module, query, key, value, attention_mask, scaling)
        if sink is not None:
            sink.prompt(query, cached_key, attention_mask, k_len - q_len, scaling)
        return out, None
    # One query: eager arithmetic, in float32 when the cache is (GrowingLayer), with the weights kept
    # in float32 for the statistics; the output is rounded to the query's dtype.
    out_dtype = query.dtype
    scores = torch.matmul(query.to(key.dtype), key.transpose(-1, -2)) * scaling
    if attention_mask is not None:
        scores = scores + additive_mask(attention_mask[..., :k_len], scores.dtype)
    weights = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32)
    del scores
    if sink is not None:
        sink.step(weights)
    out = torch.matmul(weights.to(value.dtype), value).to(out_dtype)
    return out.transpose(1, 2).contiguous(), None


def _sdpa(module, query, key, value, attention_mask, scaling):
    """transformers' sdpa_attention_forward for OPT (no GQA), so a prompt's outputs are the plain model's."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    return sdpa_attention_forward(module, query, key, value, attention_mask, scaling=scaling, is_causal=True)[0]


def additive_mask(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True = may attend) as eager attention adds it: 0 or the dtype's lowest value."""
    if mask.dtype != torch.bool:
        return mask
    return torch.where(mask, torch.zeros((), dtype=dtype, device=mask.device), torch.finfo(dtype).min)


def weight_blocks(query, key, mask, first_query: int, scaling: float = 1.0, job: JobContext | None = None,
                  causal_keys: bool = True,
                  scratch: Scratch | None = None):
    """A prompt's attention weights, recomputed a block of queries at a time.

    query (1, H, q, d) (OPT scales it itself: `scaling` is then 1), key (1, H, k, d), the queries being
    the last q of the k positions; mask as the attention saw it (None: causal, else boolean or additive).
    Yields (weights, scores, first_query): float32 scores and their float32 softmax (H, q_block,
    k_block), the arithmetic of eager attention and of SDPA's CPU kernels, which also score in
    float32 whatever the model's dtype. Both live in `scratch` buffers that the next block reuses:
    use them before asking for it. With `causal_keys`, a block of a causal prompt spans only the
    keys up to its last query (the others would get weight 0); otherwise every block spans all k
    keys. `job` (if any) is checked between blocks."""
    q_len, k_len = query.shape[-2], key.shape[-2]
    heads, device = query.shape[1], query.device
    scratch = scratch if scratch is not None else Scratch()
    key_t = key[0].float().transpose(-1, -2)  # (H, d, k)
    step = min(q_len, max(1, _CHUNK_ELEMENTS // max(1, heads * k_len)))
    largest = heads * step * k_len
    # Within its own columns a block's queries see the keys at or before them: the strict upper triangle is hidden.
    future = torch.ones(step, step, dtype=torch.bool, device=device).triu(1) if mask is None else None
    lowest = torch.finfo(torch.float32).min
    for start in range(0, q_len, step):
        if job is not None:
            job.check()
        end = min(q_len, start + step)
        q0, q1 = first_query + start, first_query + end  # positions of the block's queries
        keys = q1 if causal_keys and mask is None else k_len
        shape = (heads, end - start, keys)
        scores = scratch.get("scores", shape, torch.float32, device, largest)
        torch.matmul(query[0, :, start:end].float(), key_t[..., :keys], out=scores)
        if scaling != 1.0:
            scores *= scaling
        if mask is None:  # causal: key j is hidden from query i when j > i
            scores[..., q0:q1].masked_fill_(future[:end - start, :end - start], lowest)
            scores[..., q1:keys] = lowest  # (no columns there unless every key is asked for)
        else:
            scores += additive_mask(mask[0, :, start:end, :keys], scores.dtype)
        weights = scratch.get("weights", shape, torch.float32, device, largest)
        torch.ops.aten._softmax.out(scores, -1, False, out=weights)
        yield weights, scores, q0


def layer_queries(layer, hidden: torch.Tensor) -> torch.Tensor:
    """The scaled queries (1, H, T, d) that OPT decoder `layer` computed from its input `hidden`
    (1, T, D): the same modules on the same input, so the same numbers as in its forward pass."""
    attn = layer.self_attn
    x = layer.self_attn_layer_norm(hidden) if layer.do_layer_norm_before else hidden
    q = attn.q_proj(x) * attn.scaling
    return q.view(hidden.shape[0], -1, attn.num_heads, attn.head_dim).transpose(1, 2)


def new_cache(config):
    """A transformers DynamicCache whose layers grow in place (GrowingLayer), for `generate(cache=...)`."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    cache = DynamicCache(config=config)
    cache.layers = [_growing_layer_class()() if type(layer) is DynamicLayer else layer for layer in cache.layers]
    return cache


@functools.cache
def _growing_layer_class():
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A DynamicLayer that keeps float32 keys and values in buffers grown a block of positions at a time.

        DynamicLayer concatenates the whole cache with every new token: at a 512-token context that
        copy took 44% of an int8 decode step of opt-350m (measured). Here a decode step writes one
        position, and `keys`/`values` are views of the filled part of the buffers; the attention
        results are bit for bit the same. A bfloat16 model on the CPU keeps its keys and values here in
        float32 too (twice the cache memory): PyTorch's CPU bfloat16 batched matmul is slow at one query
        and copies a strided view to a contiguous one, so a bfloat16 cache had to be concatenated, and
        the float32 one made a 512-token decode step of opt-350m ~6% faster on 2 threads (measured).
        float16 caches, and bfloat16 ones on a GPU, grow as DynamicLayer's do.
        """

        def update(self, key_states, value_states, *args, **kwargs):
            if key_states.dtype == torch.bfloat16 and key_states.device.type == "cpu":
                key_states, value_states = key_states.float(), value_states.float()
            elif key_states.dtype != torch.float32:
                return super().update(key_states, value_states, *args, **kwargs)
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            n = 0 if self.keys.numel() == 0 else self.keys.shape[-2]
            end = n + key_states.shape[-2]
            buf_k = getattr(self, "_buf_k", None)
            if (buf_k is None or end > buf_k.shape[-2] or buf_k.shape[:-2] != key_states.shape[:-2]
                    or (n and self.keys.data_ptr() != buf_k.data_ptr())):  # replaced from outside (crop, select)
                # Room for at least one more position, rounded up to a block: a 2,047-token prompt
                # gets 2,048, not 2,304 (the prefill's peak memory), and decoding grows it per block.
                capacity = (end // _CACHE_BLOCK + 1) * _CACHE_BLOCK
                buf_k = key_states.new_empty(*key_states.shape[:-2], capacity, key_states.shape[-1])
                buf_v = value_states.new_empty(*value_states.shape[:-2], capacity, value_states.shape[-1])
                if n:
                    buf_k[..., :n, :] = self.keys
                    buf_v[..., :n, :] = self.values
                self._buf_k, self._buf_v = buf_k, buf_v
            self._buf_k[..., n:end, :] = key_states
            self._buf_v[..., n:end, :] = value_states
            self.keys, self.values = self._buf_k[..., :end, :], self._buf_v[..., :end, :]
            return self.keys, self.values

        def reset(self) -> None:
            self._buf_k = self._buf_v = None
            super().reset()

    return GrowingLayer


def register() -> str:
    """Make the implementation known to transformers (the attention, and SDPA's masks for it)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, capture_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, sdpa_mask)
    return ATTN_IMPLEMENTATION
