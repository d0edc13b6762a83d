"""Logit lens: each row of the residual stream read through the model's own output head.

For both OPT families: final_layer_norm when the model has one (pre-LN, like 125m), then
project_out when it has one (word_embed_proj_dim != hidden_size, like 350m), then lm_head.
The last row's lens is therefore the model's own next-token distribution.
"""

from __future__ import annotations

import numpy as np
import torch

from ..messages.events import LensResult
from .loaded import LoadedModel
from .text import token_piece


def head_device(model) -> torch.device:
    """Where the output head computes: its accelerate execution device when offloaded, else the
    embeddings' (the head is tied to them; an int8 head has no `weight` tensor to ask)."""
    hook = getattr(model.lm_head, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    return torch.device(device) if device is not None else model.model.decoder.embed_tokens.weight.device


def read_through_head(model, rows: torch.Tensor) -> torch.Tensor:
    """(..., hidden_size) residual rows -> (..., vocab) logits."""
    decoder = model.model.decoder
    x = rows
    if decoder.final_layer_norm is not None:
        x = decoder.final_layer_norm(x)
    if decoder.project_out is not None:
        x = decoder.project_out(x)
    # lm_head.forward, not lm_head(...): the lens may run between decode steps, and hooks on lm_head
    # (the capture's among them) must not take it for a generation step. forward still runs the
    # precision mode's own head and accelerate's wrapper, which brings offloaded weights in.
    return model.lm_head.forward(x)


def logit_lens(loaded: LoadedModel, residual_rows, target_id: int | None, position: int = -1,
               top_k: int = 5) -> LensResult:
    model = loaded.model
    rows = torch.as_tensor(np.asarray(residual_rows)).to(
        device=head_device(model), dtype=model.model.decoder.embed_tokens.weight.dtype)  # the compute dtype
    with torch.inference_mode():
        logp = torch.log_softmax(read_through_head(model, rows).float(), dim=-1)
        top_lp, top_ids = logp.topk(top_k, dim=-1)
        if target_id is None:
            target = np.full(rows.shape[0], np.nan, np.float32)
        else:
            target = logp[:, int(target_id)].cpu().numpy()
    ids = top_ids.cpu().numpy()
    tok = loaded.tokenizer
    pieces = tuple(tuple(token_piece(tok, int(i)) for i in row) for row in ids)
    return LensResult(position=position, top_ids=ids, top_probs=top_lp.exp().cpu().numpy(), top_pieces=pieces,
                      target_id=target_id, target_logprob=target)
