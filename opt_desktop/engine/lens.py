"""Logit lens: each row of the residual stream read through the model's own output head.

For both OPT families: final_layer_norm when the model has one (pre-LN, like 125m), then
project_out when it has one (word_embed_proj_dim != hidden_size, like 350m), then lm_head.
The last row's lens is therefore the model's own next-token distribution.
"""

from __future__ import annotations

import numpy as np
import torch

from .events import LensResult
from .loader import LoadedModel
from .text import token_piece


def read_through_head(model, rows: torch.Tensor) -> torch.Tensor:
    """(..., hidden_size) residual rows -> (..., vocab) logits."""
    decoder = model.model.decoder
    x = rows
    if decoder.final_layer_norm is not None:
        x = decoder.final_layer_norm(x)
    if decoder.project_out is not None:
        x = decoder.project_out(x)
    # F.linear, not lm_head(...): the lens may run between decode steps, and hooks on lm_head
    # (the capture's among them) must not take it for a generation step.
    return torch.nn.functional.linear(x, model.lm_head.weight, model.lm_head.bias)


def logit_lens(loaded: LoadedModel, residual_rows, target_id: int | None, position: int = -1,
               top_k: int = 5) -> LensResult:
    model = loaded.model
    param = model.lm_head.weight
    rows = torch.as_tensor(np.asarray(residual_rows)).to(device=param.device, dtype=param.dtype)
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
