"""Eager attention, computed in query chunks, that hands each chunk's weights to a capture sink.

transformers' eager attention materialises a layer's whole H x T x T score matrix (three copies:
scores, masked scores, softmax) and SDPA returns no weights at all. This function does eager's
arithmetic a block of queries at a time, so a 2,048-token prefill holds a few megabytes of
weights per layer instead of hundreds, and the capture reduces each block as it is made.
It is registered with transformers' AttentionInterface under ATTN_IMPLEMENTATION. `new_cache` is the
KV cache for it: it grows in place instead of copying itself at every decode step.
"""

from __future__ import annotations

import functools

import torch

from .stopping import STOP_ATTRIBUTE, raise_if_stopped

ATTN_IMPLEMENTATION = "opt_desktop_capture"
SINK_ATTRIBUTE = "_opt_desktop_attention_sink"
_CHUNK_ELEMENTS = 1 << 22  # scores per block: 16 MiB in float32
_CACHE_BLOCK = 256  # positions the KV cache grows by at a time


def chunked_eager_attention(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0,
                            **kwargs):
    """Same inputs and outputs as transformers' eager_attention_forward, but weights are not returned:
    they go, block by block, to `module._opt_desktop_attention_sink(weights, first_query_position)`."""
    sink = getattr(module, SINK_ATTRIBUTE, None)
    stop = getattr(module, STOP_ATTRIBUTE, None)
    batch, heads, q_len, _ = query.shape
    k_len = key.shape[-2]
    step = max(1, _CHUNK_ELEMENTS // max(1, batch * heads * k_len))
    if key.dtype != query.dtype and q_len > 1:
        # A bfloat16 model's float32 cache (see GrowingLayer): float32 arithmetic is the faster at one
        # query, bfloat16's at a prefill's many (measured: the prompt's matmuls took twice as long).
        key, value = key.to(query.dtype), value.to(query.dtype)
    key_t = key.transpose(-1, -2)
    if q_len <= step:  # one block (every decode step): no output buffer to fill
        out = _block(query, key_t, value, attention_mask, scaling, sink, k_len - q_len)
        return out.transpose(1, 2).contiguous(), None
    out = query.new_empty(batch, heads, q_len, value.shape[-1])
    for start in range(0, q_len, step):
        raise_if_stopped(stop)  # a long prefill's layer is seconds of blocks: Stop must not wait for all
        end = min(q_len, start + step)
        mask = None if attention_mask is None else attention_mask[:, :, start:end]
        out[:, :, start:end] = _block(query[:, :, start:end], key_t, value, mask, scaling, sink,
                                      k_len - q_len + start)  # queries are the last q_len of the k_len positions
    return out.transpose(1, 2).contiguous(), None


def _block(query, key_t, value, attention_mask, scaling, sink, first_query: int):
    """Eager attention for one block of queries; the float32 weights go to the sink before they are
    rounded to the model's dtype, so statistics of a bfloat16 or float16 model are not rounded twice.
    Keys and values may be float32 for a bfloat16 query (GrowingLayer's CPU cache): the arithmetic is
    then float32 and only the output is rounded to the query's dtype."""
    k_len = key_t.shape[-1]
    out_dtype = query.dtype
    query = query.to(key_t.dtype)
    scores = torch.matmul(query, key_t) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask[..., :k_len]
    weights = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32)
    del scores
    if sink is not None:
        sink(weights, first_query)
    return torch.matmul(weights.to(value.dtype), value).to(out_dtype)


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
                capacity = -(-end // _CACHE_BLOCK) * _CACHE_BLOCK + _CACHE_BLOCK
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
    """Make the implementation known to transformers (attention and the eager-style 4-D mask)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, chunked_eager_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)
    return ATTN_IMPLEMENTATION
