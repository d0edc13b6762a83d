"""Eager attention, computed in query chunks, that hands each chunk's weights to a capture sink.

transformers' eager attention materialises a layer's whole H x T x T score matrix (three copies:
scores, masked scores, softmax) and SDPA returns no weights at all. This function does eager's
arithmetic a block of queries at a time, so a 2,048-token prefill holds a few megabytes of
weights per layer instead of hundreds, and the capture reduces each block as it is made.
It is registered with transformers' AttentionInterface under ATTN_IMPLEMENTATION.
"""

from __future__ import annotations

import torch

ATTN_IMPLEMENTATION = "opt_desktop_capture"
SINK_ATTRIBUTE = "_opt_desktop_attention_sink"
_CHUNK_ELEMENTS = 1 << 22  # scores per block: 16 MiB in float32


def chunked_eager_attention(module, query, key, value, attention_mask, scaling: float, dropout: float = 0.0,
                            **kwargs):
    """Same inputs and outputs as transformers' eager_attention_forward, but weights are not returned:
    they go, block by block, to `module._opt_desktop_attention_sink(weights, first_query_position)`."""
    sink = getattr(module, SINK_ATTRIBUTE, None)
    batch, heads, q_len, _ = query.shape
    k_len = key.shape[-2]
    step = max(1, _CHUNK_ELEMENTS // max(1, batch * heads * k_len))
    key_t = key.transpose(-1, -2)
    out = query.new_empty(batch, heads, q_len, value.shape[-1])
    for start in range(0, q_len, step):
        stop = min(q_len, start + step)
        scores = torch.matmul(query[:, :, start:stop], key_t) * scaling
        if attention_mask is not None:
            scores = scores + attention_mask[:, :, start:stop, :k_len]
        weights = torch.nn.functional.softmax(scores, dim=-1, dtype=torch.float32).to(query.dtype)
        del scores
        if sink is not None:
            sink(weights, k_len - q_len + start)  # queries are the last q_len of the k_len positions
        out[:, :, start:stop] = torch.matmul(weights, value)
    return out.transpose(1, 2).contiguous(), None


def register() -> str:
    """Make the implementation known to transformers (attention and the eager-style 4-D mask)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(ATTN_IMPLEMENTATION, chunked_eager_attention)
    AttentionMaskInterface.register(ATTN_IMPLEMENTATION, eager_mask)
    return ATTN_IMPLEMENTATION
