"""One head's whole attention matrix for a finished run, computed where the model is: what the
attention view shows for a run whose full rows stayed on a server (`rows_on_demand`).

One teacher-forced pass over the run's tokens, as lens_table.py makes it (chunks through a KV cache,
the run's hidden positions and its head masks, a mask changed mid-run included), with a sink on the
one layer's attention that reads that head's weights: eager attention's float32 arithmetic, as the
weights a run keeps are. Only a (T, T) matrix crosses the link, never the L x H x T x T of them.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from ..messages.errors import SettingsError
from ..messages.interventions_spec import check_hidden_positions
from ..messages.job_context import JobContext
from ..running.attention import SINK_ATTRIBUTE, new_cache, weight_blocks
from ..running.interventions import HeadMask
from ..running.loaded import LoadedModel
from ..running.scoring import _token_tensor
from .lens_table import CHUNK, MaskSchedule, _schedule, _segments


class _HeadSink:
    """Receives one layer's attention (attention.capture_attention) and keeps one head's rows."""

    def __init__(self, head: int, T: int, job: JobContext):
        self.head, self.job = head, job
        self.position = 0  # the first query of the chunk being fed
        self.rows = np.full((T, T), np.nan, np.float32)

    def prompt(self, query, key, mask, first_query: int, scaling: float) -> None:
        for weights, _scores, q0 in weight_blocks(query, key, mask, first_query, scaling, self.job, causal_keys=False):
            block = weights[self.head]  # (q, k)
            self.rows[q0:q0 + block.shape[0], :block.shape[1]] = block.cpu().numpy()

    def step(self, weights) -> None:  # one query: (1, H, 1, k)
        row = weights[0, self.head, 0]
        self.rows[self.position, :row.shape[0]] = row.float().cpu().numpy()


def head_rows(loaded: LoadedModel, token_ids: Sequence[int], layer: int, head: int, *,
              hidden_positions: Sequence[int] = (), mask_schedule: MaskSchedule = ((0, ()),),
              chunk: int = CHUNK, job: JobContext | None = None) -> np.ndarray:
    """(T, T) float32 attention weights of head `head` of decoder layer `layer` over `token_ids`:
    row t is query t over keys 0..t, NaN above the diagonal."""
    job = job if job is not None else JobContext()
    model, info = loaded.model, loaded.info
    if not (0 <= layer < info.n_layers and 0 <= head < info.n_heads):
        raise SettingsError(f"{info.label} has no head L{layer}H{head}: its layers count 0 to {info.n_layers - 1} "
                            f"and its heads 0 to {info.n_heads - 1}.")
    ids = _token_tensor(loaded, token_ids)
    T = ids.shape[1]
    hidden = check_hidden_positions(hidden_positions, T, "sequence")
    schedule = _schedule(mask_schedule, info.n_layers, info.n_heads, info.label)
    attention_mask = torch.ones(1, T, dtype=torch.long, device=ids.device)
    if hidden:
        attention_mask[0, list(hidden)] = 0
    cache = new_cache(model.config)
    sink = _HeadSink(head, T, job)
    module = model.model.decoder.layers[layer].self_attn
    setattr(module, SINK_ATTRIBUTE, sink)
    try:
        with torch.inference_mode(), HeadMask(model, schedule[0][1]) as head_mask:
            for a, b, mask in _segments(T, schedule, max(1, int(chunk))):
                job.check()
                if mask != head_mask.mask:
                    head_mask.set(mask)
                sink.position = a  # a chunk of one query goes through step()
                model.model.decoder(input_ids=ids[:, a:b], attention_mask=attention_mask[:, :b], cache=cache,
                                    use_cache=True, position_ids=torch.arange(a, b, device=ids.device).unsqueeze(0))
                job.progress(b, T)
    finally:
        delattr(module, SINK_ATTRIBUTE)
    rows = sink.rows
    rows[np.triu_indices(T, 1)] = np.nan  # keys after the query were never visible
    return rows
